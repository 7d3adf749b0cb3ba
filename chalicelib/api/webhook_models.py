"""The webhook routes' bodies (issue 22; docs/webhooks.md), beside chalicelib/api/models.py."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from chalicelib.api.models import Contract, Timestamp
from chalicelib.domain.webhooks import ENDPOINT_ID_PATTERN, SUBSCRIBABLE

EventType = Literal[SUBSCRIBABLE]  # type: ignore[valid-type]
# What the routes accept (the document says the same): http(s), a host name with a dot, `localhost` or an
# IPv4 address, a port, a plain path. Where WEBHOOK_ALLOW_HTTP / WEBHOOK_ALLOW_PRIVATE are off (AWS), http
# and private addresses answer 400 too; a name is checked again, resolved, at every send.
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
URL_PATTERN = (r"^https?://(localhost|[0-9]{1,3}(\.[0-9]{1,3}){3}|[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20})*"
               r"\.[a-z]{2,10})(:" + _PORT + r")?(/[A-Za-z0-9._~/-]{0,200})?$")


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: Any) -> Any:
    """JSON Schema's date-time: a string with a time and an offset (pydantic alone takes numbers too)."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-12-07T10:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(_rfc3339)]


class EndpointRequest(Contract):
    """Body of POST /webhooks/endpoints."""

    url: str = Field(pattern=URL_PATTERN, max_length=300,
                     description="where events are POSTed: https (http only under `make run`)")
    events: list[EventType] = Field(min_length=1, max_length=len(SUBSCRIBABLE), description="event types to receive")


class ReplayRequest(Contract):
    """Body of POST /webhooks/endpoints/{endpoint_id}/replay."""

    since: DateTime = Field(description="replay every event of the endpoint written since then (RFC 3339)")


class Endpoint(Contract):
    id: str = Field(pattern=ENDPOINT_ID_PATTERN)
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = Field(description="why it was disabled (410 Gone, failing for 5 days); null if enabled")
    failing_since: Timestamp | None = Field(description="first failed attempt since the last success")
    created_at: Timestamp
    updated_at: Timestamp


class EndpointCreated(Endpoint):
    secret: str = Field(description="`whsec_...`: shown once, here; verify every delivery with it")


class EndpointRotated(EndpointCreated):
    previous_secret_expires_at: Timestamp = Field(description="until then the old secret signs too (a second `v1,` "
                                                  "signature in `webhook-signature`)")


class EndpointList(Contract):
    endpoints: list[Endpoint]


class Deleted(Contract):
    id: str
    deleted: bool


class Queued(Contract):
    endpoint_id: str
    event_type: str | None = None
    since: Timestamp | None = None
    deliveries: int = Field(ge=0, description="deliveries queued")


class Attempt(Contract):
    attempt_id: int
    event_id: str = Field(description="the `webhook-id`: the same on every attempt of one event")
    event_type: str
    task_id: int | None
    attempt: int = Field(ge=1)
    at: Timestamp
    status_code: int | None = Field(description="the endpoint's answer; null when none came (timeout, refused)")
    latency_ms: int | None
    error: str | None
    outcome: Literal["delivered", "retry", "gone", "exhausted"]


class Attempts(Contract):
    attempts: list[Attempt] = Field(description="the latest 100, newest first")
