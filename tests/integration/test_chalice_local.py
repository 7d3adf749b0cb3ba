"""devstack.chalice_local: the API server of `make run`, over real HTTP.

Chalice's own `chalice local` answers a method it has no handler for with
http.server's HTML 501 page, an unknown path with API Gateway's 403 "Missing
Authentication Token", and a known path's missing method with its own
`{"Code": "MethodNotAllowedError"}`; and its listen backlog of 5 drops
connections when a few dozen clients arrive at once. Here every one of those
is the project's JSON error, and 32 clients connecting at once all get in.
Unlike `chalice local`, it enforces API keys as API Gateway does: the keys of
its state dir (toolkit/local_keys.py), the deployed API's 403 for any other.

The server runs as `make run` runs it: a process, stage `local`, the test
database; its AWS endpoint is a closed port (none of these routes needs SQS).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from tests.helpers import execute, free_port
from toolkit.local_keys import LocalKeys, forbidden_response

ROOT = Path(__file__).resolve().parents[2]
AD = {"seller_id": 1, "is_verified_seller": True, "item_id": 1, "name": "Велосипед", "description": "Почти новый",
      "category": 2, "images_qty": 4}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    keys: LocalKeys
    key: str  # a valid x-api-key
    log: Path

    def request(self, method: str, path: str, body: bytes | None = None, conn: http.client.HTTPConnection | None = None,
                key: str | None = "") -> Reply:
        """One request, with the server's key unless `key` says otherwise (None: no x-api-key header)."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            if key is not None:
                headers["x-api-key"] = key or self.key
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            if own:
                conn.close()

    def raw(self, data: bytes) -> Reply:
        """Send bytes as they are (requests http.client refuses to build); read until the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        return Reply(int(status_line.split()[1]), headers, body)


@contextmanager
def start_server(pg_url: str, tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[Server]:
    """devstack.chalice_local in a process, as `make run` starts it, with `env` added to its environment."""
    port = free_port()
    state = tmp_path_factory.mktemp("state")
    keys = LocalKeys(state)
    key = keys.create("tests").value
    env = {**os.environ, "DATABASE_URL": pg_url, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "LOCAL_STATE_DIR": str(state), **env}
    log = tmp_path_factory.mktemp("chalice-local") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devstack.chalice_local", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(port, proc, keys, key, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                srv.request("GET", "/")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"devstack.chalice_local did not start:\n{log.read_text()}")
                time.sleep(0.2)
        yield srv
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(10) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(pg_url, tmp_path_factory) as srv:
        yield srv


def assert_json_error(reply: Reply, status: int, code: str) -> dict:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["code"] == code and body["message"] and body["detail"] == body["message"], body
    return body


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "CONNECT", "BREW", "X-FUZZ"])
def test_a_method_without_a_handler_is_json_405_with_allow(server: Server, method: str):
    reply = server.request(method, "/health", body=b"<propfind/>" if method == "PROPFIND" else None)
    body = assert_json_error(reply, 405, "method_not_allowed")
    assert reply.headers["allow"] == "GET, OPTIONS"
    assert method in body["message"] and "/health" in body["message"]
    # The same on a POST route, and on a path no route matches (then Allow lists what the API has).
    assert server.request(method, "/moderation/predict").headers["allow"] == "OPTIONS, POST"
    reply = server.request(method, "/nowhere")
    assert_json_error(reply, 405, "method_not_allowed")
    assert reply.headers["allow"] == "DELETE, GET, OPTIONS, POST"  # DELETE: the webhook endpoints (issue 22)


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_an_unknown_path_is_json_404(server: Server, method: str):
    reply = server.request(method, "/nowhere?x=1", body=b"{}" if method in ("POST", "PUT", "PATCH") else None)
    body = assert_json_error(reply, 404, "not_found")
    assert body["message"] == f"no route for {method} /nowhere?x=1"
    assert_json_error(server.request(method, "/moderation"), 404, "not_found")
    assert_json_error(server.request(method, "/moderation/moderation_result/1/extra"), 404, "not_found")


def test_a_known_path_with_a_method_it_lacks_is_json_405_with_allow(server: Server):
    for method, path, allow in [("DELETE", "/health", "GET, OPTIONS"), ("GET", "/moderation/predict", "OPTIONS, POST"),
                                ("POST", "/moderation/moderation_result/1", "GET, OPTIONS"),
                                ("PUT", "/async_predict", "OPTIONS, POST")]:
        reply = server.request(method, path)
        body = assert_json_error(reply, 405, "method_not_allowed")
        assert reply.headers["allow"] == allow and method in body["message"], (method, path)


def test_errors_keep_a_kept_alive_connection_in_step(server: Server):
    """A HEAD answer has no body and an unrouted request's body is read: the next reply is the right one."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        head = server.request("HEAD", "/health", conn=conn)
        assert head.status == 405 and head.body == b"" and head.headers["allow"] == "GET, OPTIONS"
        assert server.request("POST", "/nowhere", body=b'{"some": "body"}', conn=conn).status == 404
        assert server.request("HEAD", "/nowhere", conn=conn).status == 404
        reply = server.request("POST", "/moderation/predict", body=json.dumps(AD).encode(), conn=conn)
        assert reply.status == 200 and reply.json()["is_violation"] is False
    finally:
        conn.close()


def test_requests_http_server_rejects_are_json_too(server: Server):
    assert_json_error(server.raw(b"GET /health HTTP/2.0\r\n\r\n"), 505, "http_version_not_supported")
    assert_json_error(server.raw(b"GET /health HTTP/1.1 extra\r\n\r\n"), 400, "bad_request")
    # Exactly one byte over http.server's 65,536-byte line limit and nothing after it: unread
    # bytes at close would make the kernel reset the connection before we read the answer.
    assert_json_error(server.raw(b"GET /" + b"a" * (65_537 - 5)), 414, "uri_too_long")


def test_the_routes_behave_as_under_chalice_local(server: Server):
    reply = server.request("POST", "/moderation/predict", body=json.dumps(AD).encode())
    assert reply.status == 200 and set(reply.json()) == {"is_violation", "probability", "model_version", "decision"}
    assert_json_error(server.request("POST", "/moderation/predict", body=b"{"), 400, "invalid_body")
    # The database answers: the app's own 404, not the router's.
    assert_json_error(server.request("GET", "/moderation/moderation_result/999999"), 404, "task_not_found")
    assert_json_error(server.request("GET", "/moderation_result/999999/"), 404, "task_not_found")  # trailing slash
    assert_json_error(server.request("POST", "/moderation/simple_predict?item_id=999999"), 404, "ad_not_found")
    # CORS preflight, answered by Chalice's local gateway itself, with no key (as API Gateway's mock).
    options = server.request("OPTIONS", "/health", key=None)
    assert options.status == 200 and options.headers["access-control-allow-methods"] == "OPTIONS"


DEPLOYED_403 = forbidden_response()


@pytest.mark.parametrize(("method", "path"), [("POST", "/moderation/predict"), ("POST", "/async_predict?item_id=1"),
                                              ("POST", "/moderation/async_predict/batch"),
                                              ("GET", "/moderation/moderation_result/1"),
                                              ("GET", "/moderation/moderation_result/1/events")])
@pytest.mark.parametrize("key", [None, "not-a-key", ""])
def test_a_route_that_needs_the_key_refuses_a_missing_or_wrong_one_as_the_deployed_api(
        server: Server, method: str, path: str, key: str | None):
    body = json.dumps(AD).encode() if method == "POST" else None
    reply = server.request(method, path, body=body, key=key if key != "" else "x" * 40)
    assert (reply.status, reply.body) == DEPLOYED_403, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["code"] == "forbidden"


def test_open_routes_need_no_key_and_a_refused_request_keeps_the_connection_in_step(server: Server):
    # /health is 503 here (no SQS behind the closed endpoint), but answered by the app: no key asked.
    assert server.request("GET", "/health", key=None).json()["checks"]["database"]["ok"]
    for path in ("/openapi.json", "/docs"):
        assert server.request("GET", path, key=None).status == 200, path
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        assert server.request("POST", "/moderation/predict", body=json.dumps(AD).encode(), conn=conn, key=None).status == 403
        assert server.request("POST", "/moderation/predict", body=json.dumps(AD).encode(), conn=conn).status == 200
    finally:
        conn.close()


def test_a_key_works_from_creation_to_revocation_without_a_restart(server: Server):
    path = "/moderation/moderation_result/999999"
    other = server.keys.create("other-client").value
    try:
        assert server.request("GET", path, key=other).status == 404  # in: the app's own answer
        assert server.request("GET", path).status == 404  # the first key still works
    finally:
        server.keys.revoke("other-client")
    assert server.request("GET", path, key=other).status == 403
    assert server.request("GET", path).status == 404


def test_32_clients_connecting_at_once_are_all_served(server: Server):
    """Connect 32 clients while the server cannot accept (stopped), then let it go: every one is answered.

    With socketserver's backlog of 5 only 6 handshakes complete while nobody
    accepts; the kernel drops the other SYNs and those clients time out.
    """
    clients = 32
    payload = json.dumps(AD).encode()
    request = (b"POST /moderation/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"x-api-key: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
               % (server.key.encode(), len(payload), payload))
    socks: list[socket.socket] = []
    server.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(clients):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=3)  # raises if not accepted
            sock.sendall(request)
            socks.append(sock)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    try:
        statuses: list[int] = []

        def read(sock: socket.socket) -> None:
            sock.settimeout(30)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            statuses.append(int(data.split(b" ", 2)[1]))

        threads = [threading.Thread(target=read, args=(s,)) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in socks:
            s.close()
    assert statuses == [200] * clients


def test_a_request_without_a_place_is_refused_with_503_and_retry_after_and_the_probes_never_are(
        pg_url: str, tmp_path_factory: pytest.TempPathFactory):
    """One place (API_MAX_IN_FLIGHT=1) taken by a request the database holds (a lock on the ads):
    the next request waits its API_ADMIT_TIMEOUT_SECONDS and is answered 503 `overloaded` with
    Retry-After, having done nothing; /health is answered by the app meanwhile; once the first
    request is answered the place is free again."""
    with start_server(pg_url, tmp_path_factory, API_MAX_IN_FLIGHT="1", API_ADMIT_TIMEOUT_SECONDS="0.2") as srv:
        holder = psycopg2.connect(pg_url)
        held: list[Reply] = []
        try:
            with holder.cursor() as cur:
                cur.execute("LOCK TABLE advertisements IN ACCESS EXCLUSIVE MODE")
            slow = threading.Thread(target=lambda: held.append(srv.request("POST", "/moderation/simple_predict?item_id=1")))
            slow.start()
            wait_for_a_query_waiting_on_a_lock(pg_url)
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            try:
                refused = srv.request("POST", "/moderation/predict", body=json.dumps(AD).encode(), conn=conn)
                body = assert_json_error(refused, 503, "overloaded")
                assert refused.headers["retry-after"] == "1" and "in flight (1)" in body["message"]
                # On the same connection (the refused body was read): the probe goes straight to the app,
                # which answers for itself (503 here only because the SQS endpoint is a closed port).
                health = srv.request("GET", "/health", conn=conn, key=None).json()
                assert health["checks"]["database"]["ok"] and health.get("code") != "overloaded", health
                # A missing key is still the gateway's 403, not a 503: the key is checked first.
                assert srv.request("POST", "/moderation/predict", body=b"{}", conn=conn, key=None).status == 403
            finally:
                conn.close()
        finally:
            holder.rollback()  # the lock goes: the held request is answered
            holder.close()
        slow.join(10)
        assert not slow.is_alive() and held[0].status in (200, 404), held  # the app's answer: the ad exists or not
        reply = srv.request("POST", "/moderation/predict", body=json.dumps(AD).encode())
        assert reply.status == 200 and reply.json()["is_violation"] is False


def wait_for_a_query_waiting_on_a_lock(pg_url: str) -> None:
    """Until the server's query is blocked on the test's lock (pg_stat_activity), 10 s at most."""
    deadline = time.monotonic() + 10
    while not execute(pg_url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                              "AND application_name = 'ad-moderation'"):
        assert time.monotonic() < deadline, "the request never reached the database"
        time.sleep(0.05)


def test_each_answer_leaves_without_waiting_for_the_clients_ack():
    """The server's connections have TCP_NODELAY. http.server writes a response's headers and body in two
    sends; with Nagle's algorithm the body waits for the ACK of the headers, which a client on a kept-alive
    connection delays by up to 40 ms: every request after a connection's first took 44 ms instead of 2
    (CHANGELOG: Fixed). The handler `make run` serves with, set up on a real TCP connection as its server
    sets it up."""
    from devstack.chalice_local import JsonErrorsRequestHandler

    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(listener.getsockname()):
        conn, _ = listener.accept()
        with conn:
            assert not conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)  # the kernel's default
            handler = JsonErrorsRequestHandler.__new__(JsonErrorsRequestHandler)
            handler.request = conn
            handler.setup()  # socketserver.StreamRequestHandler's, as the server calls it per connection
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
