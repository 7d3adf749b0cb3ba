"""Client registrations (api_clients, migrations/V8) written through the `migrate` function:
on a deployed stack the database is private, and this function already reaches it
(docs/clients.md#where-scopes-live-and-why). `make api-key` (ops/api_keys.py) invokes it with

    {"clients": {"action": "put", "key_id": "...", "client": "...", "scopes": ["submit", ...], "contract": "legacy"}}
    {"clients": {"action": "contract", "client": "...", "contract": "legacy"}}
    {"clients": {"action": "delete", "key_id": "..."}}
    {"clients": {"action": "list"}}

`put` without `contract` keeps the client's pin (migrations/V9: clients moved over by `make migrate`
are pinned to legacy), and without `scopes` gives the default of that contract (legacy: submit and
close; docs/clients.md#contracts).

and on every deploy the custom resource registers the stack's own key (ClientApiKey) as
client STACK_CLIENT with every scope: the operator's key, as make run's own is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalicelib.config import get_settings
from chalicelib.domain.clients import ALL_SCOPES, CLIENT_NAME, default_scopes, parse_contract, parse_scopes
from chalicelib.logs import logger
from chalicelib.storage.clients import ClientStore
from chalicelib.storage.db import Database

STACK_CLIENT = "client"  # the stack's own key's client (its key is named <stack>-client)


class BadRequest(ValueError):
    """The event asks for something this function does not do."""


def store(database_url: str) -> ClientStore:
    s = get_settings()
    db = Database(database_url, application_name="ad-moderation clients",
                  ssl_root_cert=s.db_ssl_root_cert if s.db_require_tls else None)
    return ClientStore(db)


def handle(request: Mapping[str, Any], database_url: str) -> dict[str, Any]:
    """One registration request (the event's `clients`); the answer is what ops/api_keys.py prints."""
    action = request.get("action")
    clients = store(database_url)
    if action == "list":
        return {"clients": [{"key_id": k, "client": c.client, "scopes": sorted(c.scopes), "contract": c.contract}
                            for k, c in clients.all().items()]}
    if action == "contract":
        client, contract = _client(request), _contract(request.get("contract"))
        clients.pin(client, contract)
        logger.info("client contract pinned", extra={"client": client, "contract": contract})
        return {"client": client, "contract": contract}
    key_id = str(request.get("key_id") or "")
    if not key_id:
        raise BadRequest("key_id is required")
    if action == "put":
        client = _client(request)
        if request.get("contract") is not None:
            clients.pin(client, _contract(request.get("contract")))
        contract = clients.contract(client)
        given = request.get("scopes")
        scopes = parse_scopes(given) if given else default_scopes(contract)
        clients.put(key_id, client, scopes)
        logger.info("client registered", extra={"client": client, "key_id": key_id, "scopes": sorted(scopes),
                                                "contract": contract})
        return {"key_id": key_id, "client": client, "scopes": sorted(scopes), "contract": contract}
    if action == "delete":
        deleted = clients.delete(key_id)
        logger.info("client registration deleted", extra={"key_id": key_id, "deleted": deleted})
        return {"key_id": key_id, "deleted": deleted}
    raise BadRequest(f"unknown action {str(action)[:40]!r}: put, contract, delete or list")


def _client(request: Mapping[str, Any]) -> str:
    client = str(request.get("client") or "")
    if not CLIENT_NAME.fullmatch(client):
        raise BadRequest(f"client name {client[:70]!r}: 1-63 lower-case letters, digits and '-'")
    return client


def _contract(value: object) -> str:
    try:
        return parse_contract(str(value))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def register_stack_key(database_url: str, key_id: str) -> None:
    store(database_url).put(key_id, STACK_CLIENT, ALL_SCOPES)
