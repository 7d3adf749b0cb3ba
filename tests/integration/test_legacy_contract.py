"""The legacy contract (issue 25; docs/clients.md#contracts) under make run's server: the older
services' clients (tests/legacy_clients.py, from seeds 000 and 002) on a key pinned to `legacy`,
the header asking for the other contract, and the current contract untouched for everyone else.
No SQS here: tasks stay pending (the e2e modules poll them to completed)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.domain.clients import LEGACY
from tests.helpers import insert_ad
from tests.integration.test_chalice_local import Server, start_server
from tests.legacy_clients import CONTRACT_HEADER, Client, current_untouched, seed_000, seed_002


@pytest.fixture(scope="module")
def server(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(pg_url, tmp_path_factory) as srv:
        yield srv


def client(server: Server, key: str, headers: dict[str, str] | None = None) -> Client:
    def call(method: str, path: str, body: bytes | None, more: dict[str, str] | None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            sent = {"x-api-key": key, **({"Content-Type": "application/json"} if body is not None else {}),
                    **(headers or {}), **(more or {})}
            conn.request(method, path, body=body if body is not None else b"", headers=sent)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    return Client(call)


def test_a_legacy_client_gets_the_older_services_answers(server: Server, pg_url: str) -> None:
    key = server.keys.create("older-002", contract=LEGACY)
    assert key.key.scopes == ("submit", "close")  # a legacy key's default scopes
    seed_002(client(server, key.value), insert_ad(pg_url), insert_ad(pg_url), scored=False)


def test_seed_000_clients_with_json_bodies_and_root_paths(server: Server, pg_url: str) -> None:
    key = server.keys.create("older-000", contract=LEGACY)
    seed_000(client(server, key.value), insert_ad(pg_url), insert_ad(pg_url), scored=False)


def test_the_current_contract_is_untouched_and_the_header_switches(server: Server, pg_url: str) -> None:
    current_untouched(client(server, server.key), insert_ad(pg_url))
    legacy_key = server.keys.create("older-asks", contract=LEGACY).value
    current_untouched(client(server, legacy_key, {CONTRACT_HEADER: "current"}), insert_ad(pg_url))
    # a current client asking for legacy gets it
    status, body = client(server, server.key, {CONTRACT_HEADER: "legacy"})("POST", "/async_predict?item_id=abc")
    assert status == 422 and body["detail"][0]["loc"] == ["query", "item_id"]
    status, body = client(server, server.key, {CONTRACT_HEADER: "v2"})("POST", "/async_predict?item_id=1")
    assert status == 400 and body["parameter"] == CONTRACT_HEADER


def test_a_pin_changed_later_takes_effect(server: Server, pg_url: str) -> None:
    key = server.keys.create("switcher").value
    item = insert_ad(pg_url)
    assert client(server, key)("POST", f"/async_predict?item_id={item}")[0] == 202
    server.keys.pin("switcher", LEGACY)
    assert client(server, key)("POST", f"/async_predict?item_id={item}")[0] == 200


def test_legacy_errors_before_the_route_run_are_legacy_too(server: Server) -> None:
    key = server.keys.create("older-scope", scopes={"submit"}, contract=LEGACY).value
    status, body = client(server, key)("POST", "/close?item_id=1")
    assert status == 403 and set(body) == {"detail"} and "close" in body["detail"]
    status, body = client(server, key)("POST", "/moderation/async_predict?item_id=1&bogus=1")
    assert status == 422 and body["detail"][0]["loc"] == ["query", "bogus"]
