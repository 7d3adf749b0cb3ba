"""Clients kept apart on the stack deployed to LocalStack (issue 20; docs/clients.md): two keys
made by `make api-key`, the identity API Gateway verified (identity.apiKeyId) the only one the
function sees, scopes registered through the migrate function, the input edge on Lambda."""

from __future__ import annotations

import json

import urllib3

from tests.e2e.deployed_stack import Deployed
from tests.e2e.test_deployed import api_key_command
from tests.helpers import insert_ad


def request(deployed: Deployed, method: str, path: str, key: str | None, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, object]:
    sent = {"Content-Type": "application/json", **({"x-api-key": key} if key else {}), **(headers or {})}
    resp = urllib3.request(method, deployed.d.api_url + path, body=body, headers=sent, timeout=30, retries=False)
    try:
        return resp.status, json.loads(resp.data or b"null")
    except ValueError:
        return resp.status, resp.data.decode(errors="replace")


def test_two_clients_on_the_deployed_stack(deployed: Deployed) -> None:
    made = {}
    for client, scopes in (("dave", "submit"), ("erin", "submit,close")):
        result = api_key_command(deployed, "create", client, "--scope", scopes, "--json")
        assert result.returncode == 0, result.stderr
        made[client] = json.loads(result.stdout)
    try:
        listed = {r["client"]: r for r in map(json.loads, api_key_command(deployed, "list", "--json").stdout.splitlines())}
        assert listed["dave"]["scopes"] == ["submit"] and listed["erin"]["scopes"] == ["submit", "close"]
        assert listed["client"]["scopes"] == ["submit", "close", "moderate", "admin"]  # the stack's own key
        dave, erin, stack = made["dave"]["key"], made["erin"]["key"], deployed.d.api_key
        item_id = insert_ad(deployed.database_url)

        status, body = request(deployed, "POST", f"/moderation/async_predict?item_id={item_id}", dave)
        assert status == 202, body
        task = body["task_id"]  # type: ignore[index]
        for path in (f"/moderation/moderation_result/{task}", f"/moderation_result/{task}",
                     f"/moderation/moderation_result/{task}/events"):
            assert request(deployed, "GET", path, dave)[0] == 200, path
            other = request(deployed, "GET", path, erin)
            missing = request(deployed, "GET", path.replace(str(task), "999999999"), erin)
            assert other[0] == missing[0] == 404 and other[1]["code"] == missing[1]["code"] == "task_not_found"  # type: ignore[index]
            assert request(deployed, "GET", path, stack)[0] == 200  # admin
        # a forged identity header changes nothing
        forged = {"x-api-key-id": made["dave"]["key_id"], "x-client-id": "dave"}
        assert request(deployed, "GET", f"/moderation/moderation_result/{task}", erin, headers=forged)[0] == 404
        tasks = request(deployed, "GET", "/moderation/tasks?limit=100", erin)[1]["tasks"]  # type: ignore[index]
        assert task not in {t["task_id"] for t in tasks}
        # Idempotency-Keys are per client
        ids = {}
        for who, key in (("dave", dave), ("erin", erin)):
            status, body = request(deployed, "POST", f"/moderation/async_predict?item_id={item_id}", key,
                                   headers={"Idempotency-Key": "deployed-shared-key"})
            assert status == 202, body
            ids[who] = body["task_id"]  # type: ignore[index]
        assert ids["dave"] != ids["erin"]
        # scopes: dave may not close; erin may
        status, body = request(deployed, "POST", f"/moderation/close?item_id={item_id}", dave)
        assert status == 403 and body["code"] == "insufficient_scope"  # type: ignore[index]
        assert request(deployed, "POST", f"/moderation/close?item_id={item_id}", erin)[0] == 200
        # the input edge, on Lambda
        deep = ("[" * 3_000 + "]" * 3_000).encode()
        status, body = request(deployed, "POST", "/moderation/predict", dave, deep)
        assert status == 400 and body["code"] == "invalid_body", body  # type: ignore[index]
        assert request(deployed, "POST", "/moderation/async_predict?item_id=abc&item_id=5", dave)[0] == 400
        assert request(deployed, "GET", "/moderation/tasks?limit=20&unknown=42", dave)[0] == 400
        status, body = request(deployed, "GET", "/moderation/moderation_result/" + "9" * 10_000, dave)
        assert status in (400, 414) and len(json.dumps(body)) < 1_000
    finally:
        for client in made:
            api_key_command(deployed, "revoke", client, "--yes")
