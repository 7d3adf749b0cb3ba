"""Responses, in one place: bodies shaped by their contract model, domain
errors and Chalice's own errors mapped to the contract's Error. Never a stack
trace."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chalice import Response
from pydantic import BaseModel

from chalicelib.api.models import Error
from chalicelib.errors import ModerationError, NotFound
from chalicelib.logs import logger

JSON = "application/json"
RETRY_AFTER_SECONDS = "5"

Headers = dict[str, str | list[str]]


def json_response(body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    all_headers: Headers = {"Content-Type": JSON, **(headers or {})}
    return Response(body=body, status_code=status_code, headers=all_headers)


def shape(model: type[BaseModel], body: Any) -> dict[str, Any]:
    """`body` as the contract model has it: validated, and only its fields.

    exclude_unset drops optional fields the use case did not set (a healthy
    check has no `error`) but keeps explicit nulls (a pending task's verdict).
    """
    return model.model_validate(body).model_dump(mode="json", exclude_unset=True)


def reply(model: type[BaseModel], body: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(shape(model, body), status_code, headers)


def error_response(exc: ModerationError) -> Response:
    headers: dict[str, str] = {}
    if exc.status_code == 503:
        # Tell well-behaved clients when to come back.
        headers["Retry-After"] = RETRY_AFTER_SECONDS
    return reply(Error, exc.to_dict(), exc.status_code, headers)


def internal_error() -> Response:
    message = "internal error"
    return reply(Error, {"code": "internal_error", "message": message, "detail": message}, 500)


def static_file(folder: Path, types: Mapping[str, str], name: str, cache_control: str) -> Response:
    """One of the files the API serves itself (/docs, /console): only the names `types` lists, each
    with its media type; read once per warm container."""
    if name not in types:
        raise NotFound(f"no such file: {name}")
    headers: dict[str, str | list[str]] = {"Content-Type": types[name], "Cache-Control": cache_control}
    return Response(body=_read(folder / name), status_code=200, headers=headers)


@functools.cache
def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def handle_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except ModerationError as exc:
            if exc.status_code >= 500:
                logger.warning("dependency unavailable", extra={"code": exc.code, "error": exc.message})
            return error_response(exc)
        except Exception:  # noqa: BLE001 - a bug: log it, show the client no internals
            logger.exception("unhandled error")
            return internal_error()

    return wrapper


# Chalice answers some requests itself, before any view runs (an undeclared
# method: 405 with Allow; a content type a route does not take: 415), with a
# body of its own: {"Code": "MethodNotAllowedError", "Message": "..."}.
_CHALICE_CODES = {"MethodNotAllowedError": "method_not_allowed", "InternalServerError": "internal_error"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.removesuffix("Error")).lower()


def contract_error(response: Response) -> Response:
    """A Chalice-made error response in the contract's Error shape; any other response unchanged."""
    body = response.body
    if not (isinstance(body, dict) and set(body) == {"Code", "Message"} and response.status_code >= 400):
        return response
    code = _CHALICE_CODES.get(str(body["Code"])) or _snake(str(body["Code"]))
    message = str(body["Message"])
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
    shaped = shape(Error, {"code": code, "message": message, "detail": message})
    return Response(body=shaped, status_code=response.status_code, headers={"Content-Type": JSON, **headers})
