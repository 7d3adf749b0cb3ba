"""Domain errors -> HTTP responses, in one place. Never a stack trace."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from chalice import Response

from chalicelib.errors import ModerationError
from chalicelib.logs import logger


def json_response(body: Any, status_code: int = 200) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    return Response(body=body, status_code=status_code, headers=headers)


def error_response(exc: ModerationError) -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    if exc.status_code == 503:
        # Tell well-behaved clients when to come back.
        headers["Retry-After"] = "5"
    return Response(body=exc.to_dict(), status_code=exc.status_code, headers=headers)


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
            return json_response({"code": "internal_error", "message": "internal error"}, 500)

    return wrapper
