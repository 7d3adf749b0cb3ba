"""Clients kept apart (issue 20; docs/clients.md), through the app on real PostgreSQL and moto
SQS: the Lambda code path, with a stand-in for API Gateway's key check (tests/helpers.py,
keyed_client) that puts the verified key's id in the request context."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.api import routes
from tests.helpers import execute, insert_ad, keyed_client

A, B, CLOSER, OPS, MODERATOR = "key-a", "key-b", "key-closer", "key-ops", "key-moderator"


@pytest.fixture()
def client(app_env):
    from app import app

    with keyed_client(app, default_key=None) as c:
        yield c


def call(client, method: str, path: str, key: str | None, body: bytes = b"", headers: dict | None = None) -> Any:
    sent = {"Content-Type": "application/json", **({"x-api-key": key} if key else {}), **(headers or {})}
    return client.http.request(method, path, headers=sent, body=body)


def out(resp) -> dict:
    return json.loads(resp.body)


def submit(client, key: str, item_id: int, **headers: str) -> int:
    resp = call(client, "POST", f"/moderation/async_predict?item_id={item_id}", key, headers=headers)
    assert resp.status_code == 202, resp.body
    return int(out(resp)["task_id"])


READS = ("/moderation/moderation_result/{id}", "/moderation_result/{id}", "/moderation/moderation_result/{id}/events")


def test_a_client_reads_its_own_tasks_and_never_anothers(client, app_env):
    item_id = insert_ad(app_env)
    mine, theirs = submit(client, A, item_id), submit(client, B, item_id)
    for path in READS:
        assert call(client, "GET", path.format(id=mine), A).status_code == 200
        other, missing = (call(client, "GET", path.format(id=t), A) for t in (theirs, 10**9))
        # The same answer as for a task that does not exist: status, code, message shape.
        assert other.status_code == missing.status_code == 404
        assert out(other)["code"] == out(missing)["code"] == "task_not_found"
        assert out(other)["message"].replace(str(theirs), "N") == out(missing)["message"].replace(str(10**9), "N")
    listed = out(call(client, "GET", "/moderation/tasks", A))["tasks"]
    assert [t["task_id"] for t in listed] == [mine]
    by_ad = out(call(client, "GET", f"/moderation/tasks?item_id={item_id}&status=pending", B))["tasks"]
    assert [t["task_id"] for t in by_ad] == [theirs]
    # admin reads everyone's; the owners are what the database says
    assert {t["task_id"] for t in out(call(client, "GET", "/moderation/tasks", OPS))["tasks"]} == {mine, theirs}
    assert call(client, "GET", f"/moderation/moderation_result/{theirs}/events", OPS).status_code == 200
    assert dict(execute(app_env, "SELECT id, client_id FROM moderation_results")) == {mine: "client-a", theirs: "client-b"}


def test_batch_tasks_belong_to_the_client_that_sent_the_batch(client, app_env):
    item_id = insert_ad(app_env)
    resp = call(client, "POST", "/moderation/async_predict/batch", A, json.dumps({"item_ids": [item_id, item_id]}).encode())
    assert resp.status_code == 202
    ids = [i["task_id"] for i in out(resp)["items"]]
    for task_id in ids:
        assert call(client, "GET", f"/moderation/moderation_result/{task_id}", A).status_code == 200
        assert call(client, "GET", f"/moderation/moderation_result/{task_id}", B).status_code == 404
    assert out(call(client, "GET", "/moderation/tasks", B))["tasks"] == []


def test_idempotency_keys_are_per_client(client, app_env):
    item_id, other_item = insert_ad(app_env), insert_ad(app_env)
    first = submit(client, A, item_id, **{"Idempotency-Key": "k-1"})
    # b's same key is b's own request: a new task, not a's replay and not a 409 naming a's item
    resp = call(client, "POST", f"/moderation/async_predict?item_id={other_item}", B, headers={"Idempotency-Key": "k-1"})
    assert resp.status_code == 202 and "Idempotent-Replayed" not in resp.headers and out(resp)["task_id"] != first
    replay = call(client, "POST", f"/moderation/async_predict?item_id={item_id}", A, headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 202 and out(replay)["task_id"] == first and replay.headers["Idempotent-Replayed"] == "true"
    assert call(client, "POST", f"/moderation/async_predict?item_id={other_item}", A,
                headers={"Idempotency-Key": "k-1"}).status_code == 409


def test_many_clients_submitting_at_once_with_the_same_keys_never_share_a_task(client, app_env):
    """8 threads x 2 clients x the same 10 Idempotency-Keys, through the use case (Chalice's test
    client shares one current_request between threads; tests/e2e/test_make_run_clients.py does
    this over HTTP): each client gets exactly one task per key, never the other's."""
    from chalicelib import deps

    item_id = insert_ad(app_env)
    service = deps.service()
    names = {A: "client-a", B: "client-b"}

    def one(args: tuple[str, int]) -> tuple[str, str, int]:
        key, n = args
        body, _ = service.submit_once(item_id, f"k-{n % 10}", client=names[key])
        return key, f"k-{n % 10}", int(body["task_id"])

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, [(k, n) for n in range(40) for k in (A, B)]))
    per = {}
    for key, idem, task_id in got:
        per.setdefault((key, idem), set()).add(task_id)
    assert all(len(ids) == 1 for ids in per.values()) and len(per) == 20
    a_ids = {next(iter(v)) for (k, _), v in per.items() if k == A}
    b_ids = {next(iter(v)) for (k, _), v in per.items() if k == B}
    assert not a_ids & b_ids
    owners = dict(execute(app_env, "SELECT id, client_id FROM moderation_results"))
    assert {owners[t] for t in a_ids} == {"client-a"} and {owners[t] for t in b_ids} == {"client-b"}


# One request per route that needs a key: (method, path template, body).
KEYED = [
    ("POST", "/moderation/predict", b"{}"),
    ("POST", "/moderation/simple_predict?item_id={item}", b""),
    ("POST", "/moderation/async_predict?item_id={item}", b""),
    ("POST", "/async_predict?item_id={item}", b""),
    ("POST", "/moderation/async_predict/batch", b'{"item_ids": [1]}'),
    ("POST", "/moderation/close?item_id={item}", b""),
    ("GET", "/moderation/moderation_result/{task}", b""),
    ("GET", "/moderation_result/{task}", b""),
    ("GET", "/moderation/tasks", b""),
    ("GET", "/moderation/moderation_result/{task}/events", b""),
]


@pytest.mark.parametrize("key", [A, CLOSER, OPS, MODERATOR])
def test_each_route_answers_403_without_its_scope(client, app_env, key):
    from tests.helpers import TEST_CLIENTS

    scopes = set(TEST_CLIENTS[key][2])
    item_id = insert_ad(app_env)
    task = submit(client, "key-tester", item_id)
    for method, template, body in KEYED:
        path = template.format(item=item_id, task=task)
        needed = routes.scopes_of(method, path.split("?")[0].replace(str(task), "{task_id}"))
        assert needed is not None
        resp = call(client, method, path, key, body)
        if needed & scopes:
            assert resp.status_code != 403, (key, method, path, resp.body)
        else:
            assert resp.status_code == 403, (key, method, path, resp.body)
            assert out(resp)["code"] == "insufficient_scope" and out(resp)["detail"] == out(resp)["message"]


def test_no_verified_key_is_403_and_a_forged_identity_header_changes_nothing(client, app_env):
    item_id = insert_ad(app_env)
    theirs = submit(client, B, item_id)
    forged = {"x-api-key-id": "id-b", "x-client-id": "client-b", "x-amzn-apigateway-api-key-id": "id-ops",
              "x-forwarded-client": "ops", "apiKeyId": "id-ops"}
    # No key the gateway verified: 403 whatever the headers say.
    resp = call(client, "GET", f"/moderation/moderation_result/{theirs}", None, headers=forged)
    assert resp.status_code == 403 and out(resp)["code"] == "forbidden"
    # a's key with b's (and admin's) identity in headers: still a, still 404.
    assert call(client, "GET", f"/moderation/moderation_result/{theirs}", A, headers=forged).status_code == 404
    assert out(call(client, "GET", "/moderation/tasks", A, headers=forged))["tasks"] == []
    mine = submit(client, A, item_id, **forged)
    assert dict(execute(app_env, "SELECT id, client_id FROM moderation_results"))[mine] == "client-a"


def test_a_key_no_client_is_registered_for_is_403(client, app_env):
    execute(app_env, "DELETE FROM api_clients WHERE key_id = 'id-a'")
    resp = call(client, "GET", "/moderation/tasks", A)
    assert resp.status_code == 403 and out(resp)["code"] == "forbidden"


# --- the input edge, on the code Lambda runs ---------------------------------------------------


@pytest.mark.parametrize("depth", [100, 1_000, 5_000, 100_000])
def test_any_nesting_depth_is_400_invalid_body(client, app_env, depth):
    for path in ("/moderation/predict", "/moderation/async_predict/batch"):
        for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth, '{"name": ' + "[" * depth):
            resp = call(client, "POST", path, "key-tester", body.encode())
            # over 16 KiB: 413 before parsing; anything else: 400, never 500
            assert resp.status_code in ((400,) if len(body) <= 16 * 1024 else (413,)), (depth, resp.body[:200])
            if resp.status_code == 400:
                assert out(resp)["code"] == "invalid_body"


def _echoed(body: bytes, sent: str) -> int:
    """How many characters of `sent` `body` repeats, counted in 8-character runs, each time it
    repeats one (message and detail both count)."""
    text, run = body.decode(), 8
    return sum(run * text.count(sent[i:i + run]) for i in range(0, len(sent) - run + 1, run))


@pytest.mark.parametrize("where", ["query", "path", "cursor", "status", "field"])
def test_no_error_echoes_more_than_200_characters_of_the_request(client, app_env, where):
    junk = "".join(uuid.uuid4().hex for _ in range(320))  # 10,240 characters, no two 8-character runs alike
    if where == "query":
        resp = call(client, "POST", f"/moderation/async_predict?item_id={junk}", "key-tester")
    elif where == "path":
        resp = call(client, "GET", f"/moderation/moderation_result/{junk}", "key-tester")
    elif where == "cursor":
        resp = call(client, "GET", f"/moderation/tasks?cursor={junk}", "key-tester")
    elif where == "status":
        resp = call(client, "GET", f"/moderation/tasks?status={junk}", "key-tester")
    else:
        body = {f"{junk[n * 200:(n + 1) * 200]}": 1 for n in range(50)}  # 50 unknown fields of 200 characters
        resp = call(client, "POST", "/moderation/predict", "key-tester", json.dumps(body).encode())
    assert resp.status_code == 400
    assert _echoed(resp.body, junk) <= 200, resp.body[:400]
    assert len(resp.body) < 1_500


@pytest.mark.parametrize("query", ["item_id=abc&item_id=5", "item_id=5&item_id=5"])
def test_a_repeated_query_parameter_is_400(client, app_env, query):
    resp = call(client, "POST", f"/moderation/async_predict?{query}", "key-tester")
    assert resp.status_code == 400 and out(resp)["parameter"] == "item_id"


@pytest.mark.parametrize(("method", "path"), [("GET", "/moderation/tasks?limit=20&unknown=42"),
                                             ("POST", "/moderation/async_predict?item_id=1&x=1"),
                                             ("GET", "/moderation/moderation_result/1?verbose=1"),
                                             ("GET", "/health?probe=1")])
def test_an_unknown_query_parameter_is_400(client, app_env, method, path):
    resp = call(client, method, path, "key-tester")
    assert resp.status_code == 400 and out(resp)["code"] == "invalid_parameter", resp.body


def test_a_broken_client_directory_lets_nothing_through(client, app_env):
    """Whatever the lookup raises, the route does not run: a bug there refuses, it never admits."""
    from chalicelib import deps

    class Broken:
        def lookup(self, key_id: str) -> None:
            raise KeyError(key_id)

    item_id = insert_ad(app_env)
    deps.use_clients(Broken())
    try:
        resp = call(client, "POST", f"/moderation/close?item_id={item_id}", "key-tester")
        assert resp.status_code == 500 and out(resp)["code"] == "internal_error"
        assert execute(app_env, "SELECT is_closed FROM advertisements WHERE id = %s", (item_id,)) == [(False,)]
    finally:
        deps.use_clients(None)
