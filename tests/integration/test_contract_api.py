"""Issue 8 through Chalice's test client on real PostgreSQL and moto SQS:
Idempotency-Key, batch submit, the 415/405 error shapes, /openapi.json, /docs."""

from __future__ import annotations

import json
import threading

import pytest

from chalicelib import deps
from tests.helpers import execute, fetch_task, insert_ad, keyed_client

KEY = "Idempotency-Key"


@pytest.fixture()
def client(app_env):
    from app import app

    # tests/conftest.py's `db` empties the other tables (and restarts the task
    # ids); a key left from an earlier test would name another test's task.
    execute(app_env, "TRUNCATE idempotency_keys")
    with keyed_client(app) as c:
        yield c


def body(resp) -> dict:
    return json.loads(resp.body)


def submit(client, item_id: int, key: str | None = None, path: str = "/moderation/async_predict"):
    headers = {KEY: key} if key is not None else {}
    return client.http.post(f"{path}?item_id={item_id}", headers=headers, body=b"")


def batch(client, payload, content_type: str = "application/json"):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.http.post("/moderation/async_predict/batch", headers={"Content-Type": content_type}, body=raw)


def queued(sqs) -> list[dict]:
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    out: list[dict] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60, WaitTimeSeconds=0)
        msgs = msgs.get("Messages", [])
        if not msgs:
            return out
        out.extend(json.loads(m["Body"]) for m in msgs)


def count(url: str, sql: str) -> int:
    return int(execute(url, sql)[0][0])


# --- Idempotency-Key ---------------------------------------------------------------


def test_same_key_same_item_replays_the_first_task_and_sends_nothing_new(client, app_env, sqs):
    item_id = insert_ad(app_env)
    first = submit(client, item_id, "order-42")
    assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
    again = submit(client, item_id, "order-42", path="/async_predict")  # the alias shares the keys
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert body(again) == body(first) == {"task_id": body(first)["task_id"], "status": "pending",
                                          "message": "Moderation request accepted"}
    assert count(app_env, "SELECT count(*) FROM moderation_results") == 1
    assert [m["task_id"] for m in queued(sqs)] == [body(first)["task_id"]]
    # A new key is a new task.
    assert body(submit(client, item_id, "order-43"))["task_id"] != body(first)["task_id"]


def test_same_key_for_another_item_is_409(client, app_env, sqs):
    a, b = insert_ad(app_env), insert_ad(app_env)
    task_id = body(submit(client, a, "k-1"))["task_id"]
    resp = submit(client, b, "k-1")
    assert resp.status_code == 409
    out = body(resp)
    assert out["code"] == "idempotency_key_mismatch" and f"item_id {a}" in out["message"] and out["detail"]
    assert count(app_env, "SELECT count(*) FROM moderation_results") == 1
    # ... even when the other item does not exist: the key decides first.
    assert submit(client, 999_999, "k-1").status_code == 409
    assert [m["task_id"] for m in queued(sqs)] == [task_id]


def test_a_key_used_for_an_unknown_ad_is_not_kept(client, app_env):
    assert submit(client, 424242, "k-2").status_code == 404
    item_id = insert_ad(app_env)
    assert submit(client, item_id, "k-2").status_code == 202
    assert count(app_env, "SELECT count(*) FROM idempotency_keys") == 1


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "ключ", "tab\there", "new\u0085line"])
def test_invalid_keys_are_400(client, app_env, key):
    item_id = insert_ad(app_env)
    resp = submit(client, item_id, key)
    assert resp.status_code == 400, key
    assert body(resp)["code"] == "invalid_parameter" and body(resp)["parameter"] == KEY
    assert count(app_env, "SELECT count(*) FROM moderation_results") == 0


@pytest.mark.parametrize("key", ["a", "x" * 255, "550e8400-e29b-41d4-a716-446655440000", "with inner spaces", "!~"])
def test_valid_keys(client, app_env, key):
    assert submit(client, insert_ad(app_env), key).status_code == 202


def test_32_concurrent_identical_requests_make_one_task_and_one_message(app_env, sqs, monkeypatch):
    monkeypatch.setenv("DB_POOL_SIZE", "32")
    deps.reset()
    item_id = insert_ad(app_env)
    execute(app_env, "TRUNCATE idempotency_keys")
    service = deps.service()
    start = threading.Barrier(32)
    results: list[tuple[dict, bool]] = []
    errors: list[BaseException] = []

    def one() -> None:
        start.wait()
        try:
            results.append(service.submit_once(item_id, "same-key", client="tester"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(results) == 32
    assert len({r[0]["task_id"] for r in results}) == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 31
    assert count(app_env, "SELECT count(*) FROM moderation_results") == 1
    assert count(app_env, "SELECT count(*) FROM task_events WHERE kind = 'accepted'") == 1
    assert len(queued(sqs)) == 1


def test_purge_forgets_only_old_keys(client, app_env):
    a, b = insert_ad(app_env), insert_ad(app_env)
    submit(client, a, "old")
    submit(client, b, "new")
    execute(app_env, "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'")
    assert deps.maintenance_store().purge_idempotency_keys(24 * 3600) == 1
    assert [r[0] for r in execute(app_env, "SELECT key FROM idempotency_keys")] == ["new"]
    # A purged key is a fresh key again.
    again = submit(client, b, "old")
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers


# --- batch -------------------------------------------------------------------------


def test_batch_keeps_request_order_with_per_item_errors(client, app_env, sqs):
    a, b = insert_ad(app_env), insert_ad(app_env)
    deleted = insert_ad(app_env, closed=True)
    resp = batch(client, {"item_ids": [b, 777777, a, deleted, b]})
    assert resp.status_code == 202
    out = body(resp)
    items = out["items"]
    assert [i["item_id"] for i in items] == [b, 777777, a, deleted, b]
    assert out["accepted"] == 3 and out["rejected"] == 2
    for i in (items[1], items[3]):
        assert i["error"] == {"code": "ad_not_found", "message": f"advertisement {i['item_id']} not found"}
        assert "task_id" not in i
    ok = [items[0], items[2], items[4]]
    assert all(i["status"] == "pending" and "error" not in i for i in ok)
    ids = [i["task_id"] for i in ok]
    assert len(set(ids)) == 3 and ids == sorted(ids)  # a repeated item is a task each time
    for i in ok:
        row = fetch_task(app_env, i["task_id"])
        assert row["item_id"] == i["item_id"] and row["status"] == "pending" and row["enqueued_at"] is not None
    assert sorted((m["task_id"], m["item_id"]) for m in queued(sqs)) == sorted((i["task_id"], i["item_id"]) for i in ok)
    events = execute(app_env, "SELECT task_id, kind, message_id IS NOT NULL FROM task_events ORDER BY task_id, id")
    assert events == [row for t in sorted(ids) for row in ((t, "accepted", False), (t, "enqueued", True))]


def test_batch_of_25_is_three_send_message_batch_calls(client, app_env, sqs, monkeypatch):
    item_ids = [insert_ad(app_env) for _ in range(25)]
    queue = deps.queue()
    calls: list[int] = []
    real = queue._sqs.send_message_batch

    def counting(**kwargs):
        calls.append(len(kwargs["Entries"]))
        return real(**kwargs)

    monkeypatch.setattr(queue._sqs, "send_message_batch", counting)
    resp = batch(client, {"item_ids": item_ids})
    assert resp.status_code == 202 and body(resp)["accepted"] == 25
    assert calls == [10, 10, 5]
    assert len(queued(sqs)) == 25


def test_a_failed_chunk_is_left_to_the_reconciler(client, app_env, sqs, monkeypatch):
    from botocore.exceptions import EndpointConnectionError

    item_ids = [insert_ad(app_env) for _ in range(25)]
    queue = deps.queue()
    real = queue._sqs.send_message_batch
    calls = []

    def second_fails(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise EndpointConnectionError(endpoint_url="http://sqs")
        return real(**kwargs)

    monkeypatch.setattr(queue._sqs, "send_message_batch", second_fails)
    resp = batch(client, {"item_ids": item_ids})
    assert resp.status_code == 202
    items = body(resp)["items"]
    assert all(i["status"] == "pending" for i in items)
    unsent = [i["task_id"] for i in items[10:20]]
    for i in items:
        assert (fetch_task(app_env, i["task_id"])["enqueued_at"] is None) == (i["task_id"] in unsent)
    assert len(queued(sqs)) == 15
    monkeypatch.setattr(queue._sqs, "send_message_batch", real)
    from chalicelib.operations.reconcile import Reconciler

    report = Reconciler(deps.task_store(), deps.maintenance_store(), queue,
                        resend_grace_seconds=0, stuck_after_seconds=3600).run()
    assert sorted(report.resent) == sorted(unsent)


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"item_ids": []}, 400, "invalid_body"),
        ({"item_ids": list(range(1, 102))}, 400, "invalid_body"),
        ({"item_ids": 5}, 400, "invalid_body"),
        ({"item_ids": [1, 0]}, 400, "invalid_body"),
        ({"item_ids": [-3]}, 400, "invalid_body"),
        ({"item_ids": ["1"]}, 400, "invalid_body"),
        ({"item_ids": [1.5]}, 400, "invalid_body"),
        ({"item_ids": [True]}, 400, "invalid_body"),
        ({"item_ids": [2**63]}, 400, "invalid_body"),
        ({"item_ids": [1], "extra": 1}, 400, "invalid_body"),
        ({}, 400, "invalid_body"),
        ([1, 2], 400, "invalid_body"),
        (b"{nope", 400, "invalid_body"),
        (b"", 400, "invalid_body"),
    ],
)
def test_batch_limits(client, app_env, payload, status, code):
    resp = batch(client, payload)
    assert resp.status_code == status, body(resp)
    assert body(resp)["code"] == code and body(resp)["message"]
    assert count(app_env, "SELECT count(*) FROM moderation_results") == 0


def test_batch_over_100_names_the_limit(client):
    out = body(batch(client, {"item_ids": list(range(1, 102))}))
    assert out["errors"][0]["field"] == "item_ids" and "100" in out["errors"][0]["message"]


def test_batch_body_over_the_byte_limit_is_413(client, monkeypatch):
    monkeypatch.setenv("MAX_BODY_BYTES", "64")
    deps.reset()
    resp = batch(client, {"item_ids": list(range(1, 40))})
    assert resp.status_code == 413 and body(resp)["code"] == "payload_too_large"


@pytest.mark.parametrize("path", ["/moderation/async_predict/batch", "/moderation/predict"])
def test_json_routes_answer_a_wrong_content_type_with_the_contract_415(client, path):
    resp = client.http.post(path, headers={"Content-Type": "text/plain"}, body=b'{"item_ids": [1]}')
    assert resp.status_code == 415
    out = body(resp)
    assert out["code"] == "unsupported_media_type" and "text/plain" in out["message"] and out["detail"]


def test_an_undeclared_method_is_405_in_the_contract_shape(client):
    resp = client.http.put("/health", body=b"")
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET"
    assert body(resp)["code"] == "method_not_allowed" and body(resp)["detail"]


# --- the document and the docs -------------------------------------------------------


def test_openapi_json_is_served_and_covers_every_route(client):
    from app import app

    resp = client.http.get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    doc = body(resp)
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"][0]["url"] == "."  # relative: wherever the document is served
    for path, methods in app.routes.items():
        for method in methods:
            assert method.lower() in doc["paths"][path], (method, path)


def test_docs_page_uses_the_vendored_assets(client):
    from chalicelib.api.handlers import STATIC

    resp = client.http.get("/docs")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/html")
    html = resp.body.decode()
    assert 'src="docs/swagger-ui-bundle.js"' in html and 'href="docs/swagger-ui.css"' in html
    assert 'url: "openapi.json"' in html and "://" not in html  # nothing from elsewhere: works offline
    for name, media_type in (("swagger-ui-bundle.js", "application/javascript"), ("swagger-ui.css", "text/css")):
        asset = client.http.get(f"/docs/{name}")
        assert asset.status_code == 200 and asset.headers["Content-Type"].startswith(media_type)
        assert asset.body == (STATIC / name).read_bytes()
