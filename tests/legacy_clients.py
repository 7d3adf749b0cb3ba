"""The older services' clients, as their documents describe them (../shared/seeds 000 and 002;
docs/moving-over.md): every older path, called the way those clients call it, with the answers
they rely on under the `legacy` contract (issue 25; docs/clients.md#contracts). One script, run
over HTTP against `make run` (tests/e2e/test_legacy_make_run.py), the stack deployed to
LocalStack (tests/e2e/test_legacy_deployed.py) and make run's server
(tests/integration/test_legacy_contract.py).

`call(method, path, body, headers)` sends one request with the client's API key and returns
(status, decoded JSON body). Every exchange is appended to `transcript`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

Call = Callable[[str, str, "bytes | None", "dict[str, str] | None"], tuple[int, Any]]
CONTRACT_HEADER = "Moderation-Contract"

AD = {"seller_id": 1, "is_verified_seller": False, "item_id": 1, "name": "iPhone 13", "description": "Good condition",
      "category": 1, "images_qty": 3}
MISSING = 999_999_999


class Client:
    """One older client: its calls, checked and written down."""

    def __init__(self, call: Call, transcript: list[str] | None = None) -> None:
        self._call, self.transcript = call, transcript if transcript is not None else []

    def __call__(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        raw = None if body is None else json.dumps(body).encode()
        status, answer = self._call(method, path, raw, headers)
        sent = "" if body is None else " " + json.dumps(body, ensure_ascii=False)
        extra = "".join(f" [{k}: {v}]" for k, v in (headers or {}).items())
        self.transcript.append(f"{method} {path}{sent}{extra}\n  -> {status} {json.dumps(answer, ensure_ascii=False)}")
        return status, answer


def is_detail(body: Any) -> bool:
    """FastAPI's HTTPException body: exactly {"detail": "..."}."""
    return isinstance(body, dict) and set(body) == {"detail"} and isinstance(body["detail"], str)


def validation(body: Any, loc: list[Any], kind: str | None = None) -> bool:
    """FastAPI's 422 body with an entry at `loc` (of type `kind`)."""
    if not (isinstance(body, dict) and set(body) == {"detail"} and isinstance(body["detail"], list)):
        return False
    return any(e["loc"] == loc and isinstance(e["msg"], str) and (kind is None or e["type"] == kind)
               for e in body["detail"])


def poll(client: Client, path: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = client("GET", path)
        assert status == 200 and set(body) >= {"task_id", "status", "is_violation", "probability", "error_message"}, body
        if body["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return dict(body)
        time.sleep(0.3)


def seed_002(client: Client, item_id: int, closable: int, scored: bool = True) -> None:
    """Seed 002's clients (the course project): the `/moderation/...` paths, ids in the query."""
    status, body = client("POST", "/moderation/predict", AD)
    assert status == 200 and isinstance(body["is_violation"], bool) and 0 <= body["probability"] <= 1, body
    for ad in ({k: v for k, v in AD.items() if k != "description"}, {**AD, "description": ""}):
        status, body = client("POST", "/moderation/predict", ad)
        assert status == 422 and validation(body, ["body", "description"]), body
    status, body = client("POST", "/moderation/predict", {k: v for k, v in AD.items() if k != "seller_id"})
    assert status == 422 and validation(body, ["body", "seller_id"], "missing"), body

    status, body = client("POST", f"/moderation/simple_predict?item_id={item_id}")
    assert status == 200 and isinstance(body["is_violation"], bool) and 0 <= body["probability"] <= 1, body
    status, body = client("POST", "/moderation/simple_predict?item_id=abc")
    assert status == 422 and validation(body, ["query", "item_id"], "int_parsing"), body
    status, body = client("POST", "/moderation/simple_predict")
    assert status == 422 and validation(body, ["query", "item_id"], "missing"), body
    status, body = client("POST", f"/moderation/simple_predict?item_id={MISSING}")
    assert status == 404 and is_detail(body), body

    status, body = client("POST", f"/moderation/async_predict?item_id={item_id}")
    assert status == 200 and body["status"] == "pending" and body["message"] == "Moderation request accepted", body
    result = poll(client, f"/moderation/moderation_result/{body['task_id']}", 30 if scored else 0)
    assert result["task_id"] == body["task_id"] and (result["status"] == "completed" or not scored), result
    status, body = client("POST", "/moderation/async_predict?item_id=0")
    assert status == 422 and validation(body, ["query", "item_id"], "greater_than"), body
    status, body = client("POST", f"/moderation/async_predict?item_id={MISSING}")
    assert status == 404 and is_detail(body), body
    status, body = client("GET", "/moderation/moderation_result/abc")
    assert status == 422 and validation(body, ["path", "task_id"]), body
    status, body = client("GET", f"/moderation/moderation_result/{MISSING}")
    assert status == 404 and is_detail(body), body

    status, body = client("POST", f"/moderation/close?item_id={closable}")
    assert status == 200 and body["item_id"] == closable and body["status"] == "closed", body
    assert body["message"] == "Ad successfully closed", body
    status, body = client("POST", f"/moderation/close?item_id={closable}")
    assert status == 404 and is_detail(body), body


def seed_000(client: Client, item_id: int, closable: int, scored: bool = True) -> None:
    """Seed 000's clients (FastAPI + Kafka): root paths, `{"item_id": N}` as a JSON body."""
    status, body = client("POST", "/async_predict", {"item_id": item_id})
    assert status == 200 and body["status"] == "pending" and isinstance(body["task_id"], int), body
    result = poll(client, f"/moderation_result/{body['task_id']}", 30 if scored else 0)
    assert result["status"] == "completed" or not scored, result
    assert client("POST", f"/async_predict?item_id={item_id}")[0] == 200
    status, body = client("POST", "/simple_predict", {"item_id": item_id})
    assert status == 200 and isinstance(body["is_violation"], bool), body
    status, body = client("POST", "/predict", AD)
    assert status == 200 and 0 <= body["probability"] <= 1, body
    status, body = client("POST", "/close", {"item_id": closable})
    assert status == 200 and body == {**body, "item_id": closable, "status": "closed",
                                      "message": "Ad successfully closed"}, body
    for bad, kind in (({"item_id": "abc"}, "int_parsing"), ({}, "missing")):
        status, body = client("POST", "/async_predict", bad)
        assert status == 422 and validation(body, ["query", "item_id"], kind), body
    status, body = client("GET", f"/moderation_result/{MISSING}")
    assert status == 404 and is_detail(body), body
    status, body = client("POST", "/simple_predict", {"item_id": MISSING})
    assert status == 404 and is_detail(body), body


def current_untouched(client: Client, item_id: int) -> None:
    """The same routes for a client on the current contract (or asking for it): 202, 400, its Error."""
    status, body = client("POST", f"/moderation/async_predict?item_id={item_id}")
    assert status == 202 and body["status"] == "pending", body
    status, body = client("POST", "/async_predict?item_id=abc")
    assert status == 400 and body["code"] == "invalid_parameter" and body["parameter"] == "item_id", body
    status, body = client("POST", "/moderation/predict", {k: v for k, v in AD.items() if k != "description"})
    assert status == 200 and set(body) >= {"is_violation", "probability", "model_version", "decision"}, body
    status, body = client("GET", f"/moderation/moderation_result/{MISSING}")
    assert status == 404 and body["code"] == "task_not_found" and body["detail"] == body["message"], body
    status, body = client("POST", "/async_predict", {"item_id": item_id})  # the body form works here too
    assert status == 202, body
