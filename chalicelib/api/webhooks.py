"""The webhook routes' handlers (issue 22; docs/webhooks.md): parse, call the endpoints use case
(chalicelib/webhooks/endpoints.py), shape. Every route needs scope `submit` and sees only the
calling client's endpoints."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from chalice import Response
from chalice.app import Request

from chalicelib import deps
from chalicelib.api import auth
from chalicelib.api.requests import parse_body, require_json
from chalicelib.api.responses import handle_errors, reply
from chalicelib.api.webhook_models import (
    Attempts,
    Deleted,
    Endpoint,
    EndpointCreated,
    EndpointList,
    EndpointRequest,
    EndpointRotated,
    Queued,
    ReplayRequest,
)
from chalicelib.config import get_settings
from chalicelib.domain.webhooks import ENDPOINT_ID_PATTERN
from chalicelib.errors import EndpointNotFound

_ID = re.compile(ENDPOINT_ID_PATTERN)


def _endpoint_id(raw: str) -> str:
    if not _ID.fullmatch(raw or ""):
        raise EndpointNotFound("no such webhook endpoint")  # not an id: as unknown as one that is not there
    return raw


def _utc(when: datetime) -> datetime:
    """In UTC: an RFC 3339 offset may be up to ±23:59, PostgreSQL takes ±15:59; a time moved past
    year 1 or 9999 by its offset is clamped (nothing was written before or after either)."""
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    try:
        return when.astimezone(UTC)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC) if when.year < 2000 else datetime.max.replace(tzinfo=UTC)


@handle_errors
def create(request: Request) -> Response:
    require_json(request.headers)
    body = parse_body(request.raw_body, get_settings().max_body_bytes, EndpointRequest, "endpoint")
    created = deps.webhook_endpoints().create(auth.client(request), body.url, list(body.events))
    return reply(EndpointCreated, created, 201)


@handle_errors
def list_endpoints(request: Request) -> Response:
    return reply(EndpointList, {"endpoints": deps.webhook_endpoints().all(auth.client(request))})


@handle_errors
def delete(request: Request, endpoint_id: str) -> Response:
    deps.webhook_endpoints().delete(auth.client(request), _endpoint_id(endpoint_id))
    return reply(Deleted, {"id": endpoint_id, "deleted": True})


@handle_errors
def rotate(request: Request, endpoint_id: str) -> Response:
    return reply(EndpointRotated, deps.webhook_endpoints().rotate(auth.client(request), _endpoint_id(endpoint_id)))


@handle_errors
def enable(request: Request, endpoint_id: str) -> Response:
    return reply(Endpoint, deps.webhook_endpoints().enable(auth.client(request), _endpoint_id(endpoint_id)))


@handle_errors
def test(request: Request, endpoint_id: str) -> Response:
    return reply(Queued, deps.webhook_endpoints().test(auth.client(request), _endpoint_id(endpoint_id)), 202)


@handle_errors
def attempts(request: Request, endpoint_id: str) -> Response:
    found = deps.webhook_endpoints().attempts(auth.client(request), _endpoint_id(endpoint_id))
    return reply(Attempts, {"attempts": found})


@handle_errors
def replay(request: Request, endpoint_id: str) -> Response:
    require_json(request.headers)
    endpoint = _endpoint_id(endpoint_id)
    body = parse_body(request.raw_body, get_settings().max_body_bytes, ReplayRequest, "replay")
    since = _utc(body.since)
    return reply(Queued, deps.webhook_endpoints().replay(auth.client(request), endpoint, since), 202)
