"""The legacy contract (issue 25; docs/clients.md#contracts): the answers the older FastAPI
services gave, made from the current contract's answers by one adapter, the same for every route.

chalicelib/api/auth.py decides which contract a request speaks and, for `legacy`, calls
`check_request` before the route and `adapt` on whatever came back. Handlers know nothing of it.
What differs per route is data in chalicelib/api/routes.py (LEGACY_BODIES, LEGACY_FIELDS):

- 202 becomes 200 (FastAPI's default status: both older services answered a submit with 200);
- `invalid_parameter` / `invalid_body` (400) become FastAPI's 422
  `{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`;
- every other error is FastAPI's `HTTPException` body, `{"detail": "..."}`, with its status;
- a success body gets the fields the older service had and the current one lacks (close's `message`);
- a body the older services required more of (`description`) is checked first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalice import Response
from chalice.app import Request

from chalicelib.api import routes
from chalicelib.api.models import LegacyError, LegacyValidationError
from chalicelib.api.requests import parse_body
from chalicelib.api.responses import JSON, shape
from chalicelib.config import get_settings

# FastAPI answers with these where the current contract has its own.
STATUSES = {202: 200}
VALIDATION = 422
VALIDATION_CODES = frozenset({"invalid_parameter", "invalid_body"})
# pydantic's error types, from the current contract's messages (chalicelib/api/requests.py).
_TYPES = (
    ("is required", "missing"),
    ("Field required", "missing"),
    ("must be a positive integer", "greater_than"),
    ("must be an integer", "int_parsing"),
    ("must be at most", "less_than_equal"),
    ("unknown query parameter", "extra_forbidden"),
)


def check_request(request: Request, method: str, path: str) -> None:
    """What the older services refused that the current contract takes: raises InvalidBody."""
    model = routes.LEGACY_BODIES.get(routes.canonical(method, path))
    if model is not None:
        parse_body(request.raw_body, get_settings().max_body_bytes, model, "ad")


def adapt(response: Response, method: str, path: str) -> Response:
    """The current contract's answer to a request, as the older services gave it."""
    body, status = response.body, response.status_code
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
    if status >= 400 and isinstance(body, dict) and "code" in body:
        status, body = _error(body, status, method, path)
    elif isinstance(body, dict):
        body = {**body, **routes.LEGACY_FIELDS.get(routes.canonical(method, path), {})}
        status = STATUSES.get(status, status)
    else:
        return response
    return Response(body=body, status_code=status, headers={"Content-Type": JSON, **headers})


def _error(body: Mapping[str, Any], status: int, method: str, path: str) -> tuple[int, dict[str, Any]]:
    message = str(body.get("message") or body.get("detail") or "")
    if status == 400 and body.get("code") in VALIDATION_CODES:
        if body.get("code") == "invalid_parameter":
            name = str(body.get("parameter") or "")
            items = [_item([_location(method, path, name), name], message)]
        else:
            items = [_item(["body", *str(e.get("field", "")).split(".")], str(e.get("message", "")))
                     for e in body.get("errors") or ()] or [_item(["body"], message)]
        return VALIDATION, shape(LegacyValidationError, {"detail": items})
    return status, shape(LegacyError, {"detail": message})


def _item(loc: list[str], msg: str) -> dict[str, Any]:
    kind = next((t for text, t in _TYPES if text in msg), "value_error")
    return {"loc": [int(p) if p.isdigit() else p for p in loc if p != ""] or ["body"], "msg": msg, "type": kind}


def _location(method: str, path: str, name: str) -> str:
    """Where FastAPI would say the parameter was: the route table's `location` (query, path, header)."""
    try:
        params = routes.OPERATIONS[routes.canonical(method, path)].params
    except KeyError:
        return "query"
    return next((p.location for p in params if p.name == name), "query")

