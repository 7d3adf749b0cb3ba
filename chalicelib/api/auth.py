"""Who is calling, and whether they may (issue 20; docs/clients.md). The one place.

Identity is what the gateway verified, never a header the client sets: on the
deployed API the request context's `identity.apiKeyId`, which API Gateway fills
after checking `x-api-key`; under `make run` the same field, filled by its server
from its key store (devstack/chalice_local.py). The key id names a client and its
scopes in a `Directory`: the api_clients table (migrations/V8) read through a
per-container cache, or make run's key store.

`guard` runs before every route (app.py's middleware): the route's scopes
(chalicelib/api/routes.py, SCOPES) against the client's, then its query string.

It is also the one place that decides which contract a request speaks (issue 25;
docs/clients.md#contracts): the `Moderation-Contract` header if the request sends one, else
the contract the client is pinned to, else `current`. It records it in the request context
(`contract`) and, for `legacy`, answers through chalicelib/api/legacy.py, for every route alike.
"""

from __future__ import annotations

from collections.abc import Callable

from chalice import Response
from chalice.app import Request

from chalicelib import deps
from chalicelib.api import legacy, routes
from chalicelib.api.requests import check_query
from chalicelib.api.responses import contract_error, error_response, internal_error
from chalicelib.domain.clients import CONTRACT_HEADER, CURRENT, LEGACY, Caller, parse_contract
from chalicelib.errors import Forbidden, InsufficientScope, InvalidParameter, ModerationError
from chalicelib.logs import logger


def key_id(request: Request) -> str | None:
    """The API key id the gateway verified; None when nothing verified one."""
    identity = (request.context or {}).get("identity") or {}
    value = identity.get("apiKeyId") if isinstance(identity, dict) else None
    return value if isinstance(value, str) and value else None


def caller(request: Request) -> Caller:
    """The client behind the request. 403 `forbidden` when no gateway verified a key
    (a route reached around it) or the key is no client's (make api-key registers it)."""
    found = None
    if (kid := key_id(request)) is not None:
        found = deps.clients().lookup(kid)
    if found is None:
        raise Forbidden("this API key is not registered to a client: `make api-key ARGS=\"create <client>\"` "
                        "makes keys that are (docs/clients.md)")
    return found


def authorize(request: Request, needed: frozenset[str] | None) -> Caller | None:
    """The caller, if a route needing any of `needed` lets them in; None for an open route.
    Raises Forbidden."""
    if needed is None:
        return None
    return _allowed(request, caller(request), needed)


def _allowed(request: Request, who: Caller, needed: frozenset[str]) -> Caller:
    if not who.may(needed):
        method, path = request.method, (request.context or {}).get("resourcePath", "")
        raise InsufficientScope(f"client {who.client!r} needs scope {' or '.join(sorted(needed))} for "
                                f"{method} {path} (make api-key ARGS=\"create <client> --scope ...\")")
    return who


def asked_contract(request: Request) -> str | None:
    """The contract the request's header asks for; None without the header. 400 for an unknown one."""
    value = request.headers.get(CONTRACT_HEADER.lower()) if request.headers else None
    if value is None:
        return None
    try:
        return parse_contract(value.strip())
    except ValueError as exc:
        raise InvalidParameter(CONTRACT_HEADER, str(exc)) from None


def guard(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """Before every route: who may call it, which contract it speaks, and the query string it takes."""
    method, path = request.method, (request.context or {}).get("resourcePath", "")
    try:
        needed, takes = routes.scopes_of(method, path), routes.query_names(method, path)
    except KeyError:
        # No such method on the path: Chalice answers 405 itself, shaped as the contract's
        # Error. (Every route of app.py has its row in the table: tests/unit/test_contract.py.)
        return contract_error(get_response(request))
    contract = CURRENT  # open routes (health, docs) speak the current contract only
    try:
        if needed is not None:
            asked = asked_contract(request)
            contract = asked or CURRENT  # a refused key is answered in the contract it asked for
            who = caller(request)
            contract = asked or who.contract
            _allowed(request, who, needed)
        if request.context is not None:
            request.context["contract"] = contract
        check_query(request.query_params, takes)
        if contract == LEGACY:
            legacy.check_request(request, method, path)
        response = contract_error(get_response(request))  # Chalice's own errors too, in either contract
    except ModerationError as exc:
        response = error_response(exc)
    except Exception:  # noqa: BLE001 - a bug: refuse, log it, show the client no internals
        logger.exception("unhandled error in the guard or the route behind it")
        response = internal_error()
    return legacy.adapt(response, method, path) if contract == LEGACY else response


def contract(request: Request) -> str:
    """The contract `guard` decided for this request."""
    return str((request.context or {}).get("contract") or CURRENT)


def owner(request: Request) -> str | None:
    """Whose tasks this request may read: the client's own, or everyone's (`admin`)."""
    return caller(request).owner


def client(request: Request) -> str:
    """The client a new task belongs to."""
    return caller(request).client


__all__ = ["asked_contract", "authorize", "caller", "client", "contract", "guard", "key_id", "owner"]
