"""make run's server (devstack/chalice_local.py) and clients (issue 20; docs/clients.md): the key
it verified is the only identity the app sees, keys are compared exactly, and its input edge
(a malformed Content-Length, nesting of any depth) answers 400 and keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import execute, insert_ad
from tests.integration.test_chalice_local import Server, start_server


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(pg_url, tmp_path_factory) as srv:
        yield srv


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    """Two submit clients, a closer and an admin, made as `make api-key ARGS="--make-run create ..."` does."""
    made = {name: server.keys.create(name, scopes=scopes).value
            for name, scopes in (("a", {"submit"}), ("b", {"submit"}), ("closer", {"close"}), ("ops", {"admin"}))}
    return made


def submit(server: Server, key: str, item_id: int, idem: str | None = None) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"x-api-key": key, **({"Idempotency-Key": idem} if idem else {})}
        conn.request("POST", f"/moderation/async_predict?item_id={item_id}", body=b"", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 202, body
    return int(json.loads(body)["task_id"])


def test_two_clients_under_make_run(server: Server, keys: dict[str, str], pg_url: str) -> None:
    item_id = insert_ad(pg_url)
    mine, theirs = submit(server, keys["a"], item_id), submit(server, keys["b"], item_id)
    for path in ("/moderation/moderation_result/{}", "/moderation_result/{}", "/moderation/moderation_result/{}/events"):
        assert server.request("GET", path.format(mine), key=keys["a"]).status == 200
        other = server.request("GET", path.format(theirs), key=keys["a"])
        assert other.status == 404 and other.json()["code"] == "task_not_found"
        assert server.request("GET", path.format(theirs), key=keys["ops"]).status == 200
    listed = server.request("GET", "/moderation/tasks?limit=100", key=keys["a"]).json()["tasks"]
    assert theirs not in {t["task_id"] for t in listed} and mine in {t["task_id"] for t in listed}
    # scopes: a may not close, the closer may; the closer may not read
    denied = server.request("POST", f"/moderation/close?item_id={item_id}", key=keys["a"])
    assert denied.status == 403 and denied.json()["code"] == "insufficient_scope"
    assert server.request("GET", f"/moderation/moderation_result/{mine}", key=keys["closer"]).status == 403
    assert server.request("POST", f"/moderation/close?item_id={item_id}", key=keys["closer"]).status == 200


def test_a_forged_identity_header_changes_nothing(server: Server, keys: dict[str, str], pg_url: str) -> None:
    item_id = insert_ad(pg_url)
    theirs = submit(server, keys["b"], item_id)
    b_id = server.keys.find(keys["b"]).id
    forged = (f"x-api-key-id: {b_id}\r\nx-amzn-apigateway-api-key-id: {b_id}\r\nx-client-id: b\r\n"
              f"apiKeyId: {b_id}\r\n")
    reply = server.raw(f"GET /moderation/moderation_result/{theirs} HTTP/1.1\r\nHost: x\r\nx-api-key: {keys['a']}\r\n"
                       f"{forged}Connection: close\r\n\r\n".encode())
    assert reply.status == 404
    no_key = server.raw(f"GET /moderation/moderation_result/{theirs} HTTP/1.1\r\nHost: x\r\n{forged}"
                        "Connection: close\r\n\r\n".encode())
    assert no_key.status == 403


@pytest.mark.parametrize(("sent", "status"), [(": {k}", 200), (":{k}", 200), (":  {k}", 403), (": \t{k}", 403),
                                               (": {k} ", 403), (": {k}\r\nx-api-key: {k}", 403)])
def test_keys_are_compared_exactly(server: Server, keys: dict[str, str], sent: str, status: int) -> None:
    header = "x-api-key" + sent.format(k=keys["a"])
    reply = server.raw(f"GET /moderation/tasks HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n".encode())
    assert reply.status == status, (sent, reply.body)


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "12, 13", "0x10"])
def test_a_malformed_content_length_is_400_and_the_server_keeps_serving(server: Server, length: str) -> None:
    for _ in range(3):
        reply = server.raw(f"POST /moderation/predict HTTP/1.1\r\nHost: x\r\nx-api-key: {server.key}\r\n"
                           f"Content-Length: {length}\r\n\r\n{{}}".encode())
        assert reply.status == 400 and json.loads(reply.body)["code"] == "bad_request"
    assert server.request("GET", "/health").status in (200, 503)  # answered: the server still serves
    assert "Traceback" not in server.log.read_text()


@pytest.mark.parametrize("depth", [1_000, 2_700])  # up to MAX_BODY_BYTES (16 KiB): beyond it, 413
def test_any_nesting_depth_is_400_under_make_run(server: Server, depth: int) -> None:
    for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        reply = server.request("POST", "/moderation/predict", body.encode())
        assert reply.status == 400 and reply.json()["code"] == "invalid_body", reply.body[:200]


def test_concurrent_clients_with_the_same_idempotency_keys_never_share_a_task(
        server: Server, keys: dict[str, str], pg_url: str) -> None:
    item_id = insert_ad(pg_url)
    jobs = [(client, f"shared-{n % 5}") for n in range(30) for client in ("a", "b")]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda job: (job[0], job[1], submit(server, keys[job[0]], item_id, job[1])), jobs))
    per: dict[tuple[str, str], set[int]] = {}
    for client, idem, task_id in got:
        per.setdefault((client, idem), set()).add(task_id)
    assert len(per) == 10 and all(len(ids) == 1 for ids in per.values())
    owners = dict(execute(pg_url, "SELECT id, client_id FROM moderation_results WHERE id = ANY(%s)",
                          ([next(iter(ids)) for ids in per.values()],)))
    assert all(owners[next(iter(ids))] == client for (client, _), ids in per.items())
