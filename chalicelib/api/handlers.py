"""The HTTP side of the API function: parse the request, call the use case,
shape the response through its contract model (chalicelib/api/models.py).
app.py's routes are one line each into here.

Only the API function imports this module (and pydantic with it); the scorer
and the reconciler never do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chalice import Response
from chalice.app import Request

from chalicelib import deps
from chalicelib.api import auth
from chalicelib.api.models import (
    REPLAYED_HEADER,
    Accepted,
    BatchAccepted,
    Closed,
    Health,
    Prediction,
    TaskEvents,
    TaskPage,
    TaskResult,
)
from chalicelib.api.requests import (
    encode_cursor,
    idempotency_key,
    item_id,
    parse_ad,
    parse_batch,
    parse_id,
    require_json,
    task_query,
)
from chalicelib.api.responses import RETRY_AFTER_SECONDS, handle_errors, json_response, reply, static_file
from chalicelib.config import get_settings

STATIC = Path(__file__).resolve().parent / "static"
# Vendored files served under /docs/ (chalicelib/api/static/README.md), and their types.
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}


@handle_errors
def predict(request: Request) -> Response:
    require_json(request.headers)
    ad = parse_ad(request.raw_body, get_settings().max_body_bytes)
    return reply(Prediction, deps.service().predict(ad.features()))


@handle_errors
def simple_predict(request: Request) -> Response:
    return reply(Prediction, deps.service().simple_predict(_item_id(request)))


@handle_errors
def close(request: Request) -> Response:
    return reply(Closed, deps.service().close(_item_id(request)))


def _item_id(request: Request) -> int:
    """`?item_id=N`, or a JSON body `{"item_id": N}` as seed 000's clients send it."""
    return item_id(request.query_params, request.raw_body, get_settings().max_body_bytes)


def request_id(request: Request, lambda_context: Any) -> str | None:
    """API Gateway's request id (what clients see as x-amzn-RequestId), else
    the Lambda invocation's (chalice local has no API Gateway context)."""
    return (request.context or {}).get("requestId") or getattr(lambda_context, "aws_request_id", None)


@handle_errors
def submit(request: Request, lambda_context: Any = None) -> Response:
    ad = _item_id(request)
    key = idempotency_key(request.headers)
    rid = request_id(request, lambda_context)
    client = auth.client(request)
    if key is None:
        return reply(Accepted, deps.service().submit(ad, client=client, request_id=rid), 202)
    body, replayed = deps.service().submit_once(ad, key, client=client, request_id=rid)
    return reply(Accepted, body, 202, {REPLAYED_HEADER: "true"} if replayed else None)


@handle_errors
def submit_batch(request: Request, lambda_context: Any = None) -> Response:
    require_json(request.headers)
    batch = parse_batch(request.raw_body, get_settings().max_body_bytes)
    service = deps.service()
    accepted = service.submit_batch(batch.item_ids, client=auth.client(request), request_id=request_id(request, lambda_context))
    return reply(BatchAccepted, accepted, 202)


@handle_errors
def result(request: Request, task_id: str) -> Response:
    return reply(TaskResult, deps.service().result(parse_id(task_id, "task_id"), owner=auth.owner(request)))


@handle_errors
def tasks(request: Request) -> Response:
    query = task_query(request.query_params)
    views, below = deps.service().tasks(item_id=query.item_id, status=query.status, before_id=query.before_id,
                                        limit=query.limit, owner=auth.owner(request))
    return reply(TaskPage, {"tasks": views, "next_cursor": None if below is None else encode_cursor(below)})


@handle_errors
def events(request: Request, task_id: str) -> Response:
    return reply(TaskEvents, deps.service().events(parse_id(task_id, "task_id"), owner=auth.owner(request)))


@handle_errors
def health(request: Request) -> Response:
    """For load balancers: 503 only when the API cannot work. A stalled
    pipeline is 200 with status `degraded`: restarting or removing a healthy
    API instance would not make the scorer run."""
    body = deps.service().health()
    return _health_reply(body, body["status"] == "unavailable")


@handle_errors
def pipeline_health(request: Request) -> Response:
    """For uptime probes and alerting: 503 unless tasks are being completed."""
    body = deps.service().health()
    from chalicelib.api.reviews import backlog  # the review backlog: reported, never failing (docs/reviews.md)

    body["reviews"] = backlog()
    return _health_reply(body, body["status"] != "ok")


def _health_reply(body: dict[str, Any], failing: bool) -> Response:
    return reply(Health, body, 503, {"Retry-After": RETRY_AFTER_SECONDS}) if failing else reply(Health, body)


# --- the contract, for people and tools ------------------------------------------


@handle_errors
def openapi(request: Request, routes: Mapping[str, Any]) -> Response:
    return json_response(_document(routes))


_documents: dict[int, dict[str, Any]] = {}


def _document(routes: Mapping[str, Any]) -> dict[str, Any]:
    """Built on first request, then reused by the warm container. Imported
    here: only this route pays for rendering JSON Schema."""
    from chalicelib.api import openapi as spec

    key = id(routes)
    if key not in _documents:
        _documents[key] = spec.document(routes)
    return _documents[key]


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>ad-moderation API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script>
    // Relative URLs: the page works at any base path (API Gateway stage, LocalStack, chalice local).
    window.ui = SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true});
  </script>
</body>
</html>
"""


@handle_errors
def docs(request: Request) -> Response:
    return Response(body=DOCS_PAGE, status_code=200, headers={"Content-Type": "text/html; charset=utf-8"})


@handle_errors
def docs_asset(name: str) -> Response:
    return static_file(STATIC, DOCS_ASSETS, name, "public, max-age=86400")


# --- Chalice's own answers --------------------------------------------------------


def contract_errors(event: Request, get_response: Callable[[Request], Response]) -> Response:
    """HTTP middleware, before every route: who may call it and with what query string
    (chalicelib/api/auth.py, the one place); then errors Chalice answers by itself (405 for
    an undeclared method, ...) in the contract's Error shape, like every other error."""
    return auth.guard(event, get_response)
