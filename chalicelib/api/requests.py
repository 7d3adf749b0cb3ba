"""Validation of what HTTP clients send: ids in the query or path, JSON bodies,
headers. The bodies' shapes are the models of chalicelib/api/models.py.

Pure functions; each failure is a domain error naming the parameter. An error
never echoes more than ECHO_LIMIT characters of what was sent (docs/clients.md,
"The input edge").
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from chalicelib.api.models import (
    CURSOR_PATTERN,
    DEFAULT_PAGE,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_MAX,
    MAX_ID,
    MAX_PAGE,
    TASK_STATUSES,
    AdRequest,
    BatchRequest,
    valid_idempotency_key,
)
from chalicelib.errors import InvalidBody, InvalidParameter, PayloadTooLarge, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)

# How much of one value an error message repeats, and of a body's field names in all: an
# error body says its message twice (`detail`), so it echoes at most 200 characters of the request.
ECHO_LIMIT = 40
FIELDS_ECHO_LIMIT = 60


def echo(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` as an error message may repeat it: its repr, cut to `limit` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def check_query(params: object, allowed: Iterable[str]) -> None:
    """What every route checks of its query string (chalicelib/api/auth.py runs it for all): a
    parameter the route does not take, or one given twice, is a 400 (docs/clients.md).
    `params` is Chalice's MultiDict (None without a query string)."""
    if not params:
        return
    allowed = frozenset(allowed)
    names = list(params)  # type: ignore[call-overload]
    for name in names:
        if name not in allowed:
            known = f"it takes {', '.join(sorted(allowed))}" if allowed else "it takes none"
            raise InvalidParameter(name[:ECHO_LIMIT], f"unknown query parameter {echo(name)}: {known}")
        given = len(params.getlist(name))  # type: ignore[attr-defined]
        if given > 1:
            raise InvalidParameter(name, f"{name} is given {given} times: give it once")


# A number as JSON writes it. The document types ids as JSON Schema integers,
# and for JSON Schema 42.0 and 4.2e1 are the integer 42 (a fuzzer sends them:
# tests/contract); the seeds' FastAPI took "42.0" too.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def parse_id(raw: str | None, name: str, maximum: int = MAX_ID) -> int:
    if raw is None or raw.strip() == "":
        raise InvalidParameter(name, f"{name} is required")
    text = raw.strip()
    if not (text.isascii() and _NUMBER.fullmatch(text)):
        raise InvalidParameter(name, f"{name} must be an integer, got {echo(raw)}")
    try:
        number = Decimal(text)
        integral = number == number.to_integral_value()
    except ArithmeticError:  # an exponent beyond what Decimal handles: no id anyway
        integral = False
    if not integral:
        raise InvalidParameter(name, f"{name} must be an integer, got {echo(raw)}")
    # Bounds on the Decimal: int() of 1e999999999 would build a huge number first.
    if number < 1:
        raise InvalidParameter(name, f"{name} must be a positive integer, got {echo(text)}")
    if number > maximum:
        raise InvalidParameter(name, f"{name} must be at most {maximum}")
    return int(number)


def query_id(params: Mapping[str, str] | None, name: str) -> int:
    return parse_id((params or {}).get(name), name)


def item_id(params: Mapping[str, str] | None, raw_body: bytes | str | None, max_bytes: int) -> int:
    """The ad a route names, the two ways the older services' clients send it (issue 25): the
    query string (`?item_id=N`, which wins when both are given, so a request that worked before
    reads the same ad) or a JSON body `{"item_id": N}`. Neither: 400 "item_id is required"."""
    if params and params.get("item_id") is not None:
        return query_id(params, "item_id")
    body = raw_body.encode() if isinstance(raw_body, str) else (raw_body or b"")
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {max_bytes}")
    try:
        data = json.loads(body) if body.strip() else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None  # not a body naming the ad: as if none was sent
    value = data.get("item_id") if isinstance(data, dict) else None
    if value is None:
        return parse_id(None, "item_id")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidParameter("item_id", f"item_id must be an integer, got {echo(json.dumps(value))}")
    return parse_id(str(value), "item_id")


class TaskQuery(NamedTuple):
    """GET /moderation/tasks's query: the filters and the page."""

    item_id: int | None
    status: str | None
    before_id: int | None  # from the cursor: the page continues below this task id
    limit: int


def task_query(params: Mapping[str, str] | None) -> TaskQuery:
    """Every parameter is optional; one given empty is an error, not left out."""
    item_id, status, limit, cursor = (_optional(params, name) for name in ("item_id", "status", "limit", "cursor"))
    if status is not None and status not in TASK_STATUSES:
        raise InvalidParameter("status", f"status must be one of {', '.join(TASK_STATUSES)}, got {echo(status)}")
    return TaskQuery(
        item_id=None if item_id is None else parse_id(item_id, "item_id"),
        status=status,
        before_id=None if cursor is None else decode_cursor(cursor),
        limit=DEFAULT_PAGE if limit is None else parse_id(limit, "limit", maximum=MAX_PAGE),
    )


def _optional(params: Mapping[str, str] | None, name: str) -> str | None:
    value = (params or {}).get(name)
    if value is not None and not value.strip():
        raise InvalidParameter(name, f"{name} is empty: give a value or leave the parameter out")
    return value


_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(task_id: int) -> str:
    """The opaque cursor of a page that continues below task_id."""
    return base64.urlsafe_b64encode(task_id.to_bytes(8, "big")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> int:
    if not _CURSOR.fullmatch(cursor):
        raise InvalidParameter("cursor", f"cursor must be a next_cursor this route returned, got {echo(cursor)}")
    return int.from_bytes(base64.urlsafe_b64decode(cursor + "="), "big")


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The Idempotency-Key header, or None when the client sent none."""
    key = headers.get(IDEMPOTENCY_KEY_HEADER.lower())
    if key is None:
        return None
    if not valid_idempotency_key(key):
        raise InvalidParameter(
            IDEMPOTENCY_KEY_HEADER,
            f"{IDEMPOTENCY_KEY_HEADER} must be 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters",
        )
    return key


def require_json(headers: Mapping[str, str]) -> None:
    """415 unless the body is declared JSON (or not declared at all, as curl
    and the seeds' clients sometimes do)."""
    content_type = headers.get("content-type")
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"the body must be application/json, got {echo(content_type)}")


def parse_body(raw_body: bytes | str | None, max_bytes: int, model: type[M], what: str) -> M:
    """A JSON object body validated by `model`; `what` names it in messages."""
    body = raw_body.encode() if isinstance(raw_body, str) else (raw_body or b"")
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {max_bytes}")
    if not body.strip():
        raise InvalidBody(f"request body must be a JSON object with the {what}")
    try:
        data = json.loads(body)
    except RecursionError as exc:  # any depth fits in MAX_BODY_BYTES; Python's parser stops near 1,000
        raise InvalidBody("request body is nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBody(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidBody("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except RecursionError as exc:
        raise InvalidBody("request body is nested too deeply") from exc
    except ValidationError as exc:
        raise InvalidBody(*_field_errors(exc, what)) from exc


def _field_errors(exc: ValidationError, what: str) -> tuple[str, list[dict[str, object]]]:
    """The message and one entry per field. Field names can be the client's (an unknown
    key): each is cut to ECHO_LIMIT, and they stop at FIELDS_ECHO_LIMIT characters in all."""
    errors: list[dict[str, object]] = []
    budget = FIELDS_ECHO_LIMIT
    for e in exc.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(body)"
        field = field if len(field) <= ECHO_LIMIT else field[: ECHO_LIMIT - 3] + "..."
        budget -= len(field)
        if budget < 0:
            break
        errors.append({"field": field, "message": e["msg"]})
    fields = ", ".join(dict.fromkeys(str(e["field"]) for e in errors))
    more = exc.error_count() - len(errors)
    return f"invalid {what}: {fields}" + (f" and {more} more" if more > 0 else ""), errors


def parse_ad(raw_body: bytes | str | None, max_bytes: int) -> AdRequest:
    return parse_body(raw_body, max_bytes, AdRequest, "ad")


def parse_batch(raw_body: bytes | str | None, max_bytes: int) -> BatchRequest:
    return parse_body(raw_body, max_bytes, BatchRequest, "batch")
