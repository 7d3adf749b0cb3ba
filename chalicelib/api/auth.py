"""Who is calling, and whether they may (issue 20; docs/clients.md). The one place.

Identity is what the gateway verified, never a header the client sets: on the
deployed API the request context's `identity.apiKeyId`, which API Gateway fills
after checking `x-api-key`; under `make run` the same field, filled by its server
from its key store (devstack/chalice_local.py). The key id names a client and its
scopes in a `Directory`: the api_clients table (migrations/V8) read through a
per-container cache, or make run's key store.

`guard` runs before every route (app.py's middleware): the route's scopes
(chalicelib/api/routes.py, SCOPES) against the client's, then its query string.
"""

from __future__ import annotations

from collections.abc import Callable

from chalice import Response
from chalice.app import Request

from chalicelib import deps
from chalicelib.api import routes
from chalicelib.api.requests import check_query
from chalicelib.api.responses import error_response, internal_error
from chalicelib.domain.clients import Caller
from chalicelib.errors import Forbidden, InsufficientScope, ModerationError
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
    who = caller(request)
    if not who.may(needed):
        method, path = request.method, (request.context or {}).get("resourcePath", "")
        raise InsufficientScope(f"client {who.client!r} needs scope {' or '.join(sorted(needed))} for "
                                f"{method} {path} (make api-key ARGS=\"create <client> --scope ...\")")
    return who


def guard(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """Before every route: who may call it, and the query string it takes."""
    method, path = request.method, (request.context or {}).get("resourcePath", "")
    try:
        needed, takes = routes.scopes_of(method, path), routes.query_names(method, path)
    except KeyError:
        # No such method on the path: Chalice answers 405 itself. (Every route of app.py
        # has its row in the table: tests/unit/test_contract.py.)
        return get_response(request)
    try:
        authorize(request, needed)
        check_query(request.query_params, takes)
    except ModerationError as exc:
        return error_response(exc)
    except Exception:  # noqa: BLE001 - a bug: refuse, log it, show the client no internals
        logger.exception("unhandled error deciding who may call")
        return internal_error()
    return get_response(request)


def owner(request: Request) -> str | None:
    """Whose tasks this request may read: the client's own, or everyone's (`admin`)."""
    return caller(request).owner


def client(request: Request) -> str:
    """The client a new task belongs to."""
    return caller(request).client


__all__ = ["authorize", "caller", "client", "guard", "key_id", "owner"]
