"""The older services' clients against the stack deployed to LocalStack (issue 25): a key made by
`make api-key ARGS="create <client> --contract legacy"` (its pin in client_contracts, written
through the migrate function), every older path called as seeds 000 and 002 call it
(tests/legacy_clients.py) through API Gateway, and the stack's own key still on the current contract."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.deployed_stack import Deployed
from tests.e2e.test_deployed import api_key_command
from tests.e2e.test_deployed_clients import request
from tests.helpers import insert_ad
from tests.legacy_clients import Client, current_untouched, seed_000, seed_002


def client(deployed: Deployed, key: str) -> Client:
    def call(method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> tuple[int, Any]:
        return request(deployed, method, path, key, body, headers)

    return Client(call)


def test_older_clients_on_the_deployed_stack(deployed: Deployed) -> None:
    made = api_key_command(deployed, "create", "older", "--contract", "legacy", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["contract"] == "legacy" and created["scopes"] == ["submit", "close"]
    try:
        listed = {r["client"]: r for r in map(json.loads, api_key_command(deployed, "list", "--json").stdout.splitlines())}
        assert listed["older"]["contract"] == "legacy" and listed["client"]["contract"] == "current"
        url = deployed.database_url
        older = client(deployed, created["key"])
        seed_002(older, insert_ad(url), insert_ad(url), scored=True)
        seed_000(older, insert_ad(url), insert_ad(url), scored=True)
        current_untouched(client(deployed, deployed.d.api_key), insert_ad(url))
    finally:
        api_key_command(deployed, "revoke", "older", "--yes")
