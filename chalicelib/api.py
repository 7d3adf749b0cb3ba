"""The HTTP side of the API function: parse the request, call the use case,
shape the response. app.py's routes are one line each into here.

Only the API function imports this module (and pydantic with it); the scorer
and the reconciler never do.
"""

from __future__ import annotations

from typing import Any

from chalice import Response
from chalice.app import Request

from chalicelib import deps
from chalicelib.config import get_settings
from chalicelib.http import handle_errors, json_response
from chalicelib.requests import parse_ad, parse_id, query_id


@handle_errors
def predict(request: Request) -> Any:
    ad = parse_ad(request.raw_body, get_settings().max_body_bytes)
    return deps.service().predict(ad.features())


@handle_errors
def simple_predict(request: Request) -> Any:
    return deps.service().simple_predict(query_id(request.query_params, "item_id"))


def request_id(request: Request, lambda_context: Any) -> str | None:
    """API Gateway's request id (what clients see as x-amzn-RequestId), else
    the Lambda invocation's (chalice local has no API Gateway context)."""
    return (request.context or {}).get("requestId") or getattr(lambda_context, "aws_request_id", None)


@handle_errors
def submit(request: Request, lambda_context: Any = None) -> Response:
    rid = request_id(request, lambda_context)
    body = deps.service().submit(query_id(request.query_params, "item_id"), request_id=rid)
    return json_response(body, 202)


@handle_errors
def result(request: Request, task_id: str) -> Any:
    return deps.service().result(parse_id(task_id, "task_id"))


@handle_errors
def events(request: Request, task_id: str) -> Any:
    return deps.service().events(parse_id(task_id, "task_id"))


@handle_errors
def health(request: Request) -> Response:
    ok, body = deps.service().health()
    return json_response(body, 200 if ok else 503)
