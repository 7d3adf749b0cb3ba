"""Webhooks, the pure part (issue 22; docs/webhooks.md): event types, the retry schedule,
what an answer means, which URLs and addresses may be called, and the Standard Webhooks
headers. No I/O: the sender (chalicelib/webhooks/sender.py) does the calling.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from enum import Enum
from urllib.parse import urlsplit

# The event types, Due and task_events live in chalicelib/domain/events.py (the scorer's cold path
# imports only that); re-exported here for everything else.
from chalicelib.domain.events import (  # noqa: F401
    APPEAL_DECIDED,
    COMPLETED,
    ENDPOINT_DISABLED,
    ENDPOINT_ENABLED,
    FAILED,
    MAX_BODY_BYTES,
    REVIEW_REQUIRED,
    REVIEWED,
    SUBSCRIBABLE,
    TASK_EVENTS,
    TEST,
    Due,
    task_events,
)

# The format's prefix, not a secret.
SECRET_PREFIX = "whsec_"  # noqa: S105  # nosec B105
SECRET_BYTES = 24  # Svix's size: 192 bits
ENDPOINT_ID_PATTERN = r"^ep_[A-Za-z0-9]{1,64}$"
MAX_URL = 2048

# Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (seconds before each attempt).
DEFAULT_SCHEDULE: tuple[int, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
DEFAULT_JITTER = 0.1  # each delay moved by up to ±10 %, so a recovered receiver is not hit by a wall
# SQS holds a message back at most 15 min (DelaySeconds); longer waits are held in the database
# and sent by the reconciler when they are nearly due (docs/webhooks.md#retries).
SQS_MAX_DELAY = 900
MAX_RETRY_AFTER = 36000  # a Retry-After beyond the schedule's longest step is not believed


def parse_schedule(text: str) -> tuple[int, ...]:
    """WEBHOOK_SCHEDULE: comma-separated seconds before each attempt, the first usually 0."""
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"a webhook schedule is comma-separated whole seconds, got {text!r}") from exc
    if not steps or any(s < 0 for s in steps):
        raise ValueError(f"a webhook schedule needs at least one step, none negative, got {text!r}")
    return steps


def next_delay(schedule: Sequence[int], attempts_made: int, *, jitter: float = DEFAULT_JITTER,
               retry_after: int | None = None, rng: random.Random | None = None) -> int | None:
    """Seconds to wait before the next attempt after `attempts_made` attempts; None when the
    schedule is used up. A Retry-After (429/503) replaces the step when it is longer."""
    if attempts_made >= len(schedule):
        return None
    step = schedule[attempts_made]
    spread = (rng or random).uniform(-jitter, jitter) if step else 0.0
    delay = round(step * (1 + spread))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


class Verdict(Enum):
    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # anything else, a timeout, a refused connection
    GONE = "gone"  # 410: the receiver says stop; the endpoint is disabled


def judge(status_code: int | None) -> Verdict:
    """Only 2xx is success (a 3xx is not followed: that would be a way round the address check)."""
    if status_code is not None and 200 <= status_code < 300:
        return Verdict.DELIVERED
    if status_code == 410:
        return Verdict.GONE
    return Verdict.RETRY


def retry_after_seconds(status_code: int | None, header: str | None) -> int | None:
    """Retry-After in seconds on a 429 or 503 (an HTTP date is not honoured: the schedule applies)."""
    if status_code not in (429, 503) or not header:
        return None
    text = header.strip()
    return int(text) if text.isdigit() else None


class UrlRefused(ValueError):
    """An endpoint URL this stack does not call."""


def check_url(url: str, *, allow_http: bool, allow_private: bool) -> str:
    """The URL, if this stack may call it: https (http only where allowed: `make run`), a host,
    no credentials in it; a literal address must pass `check_address` too. Names are resolved and
    checked at send time (chalicelib/outbound.py), when a rebinding DNS answer would matter."""
    if len(url) > MAX_URL:
        raise UrlRefused(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"not a URL: {exc}") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise UrlRefused("the URL must be https" + (" or http" if allow_http else ""))
    if not parts.hostname:
        raise UrlRefused("the URL has no host")
    if parts.username or parts.password:
        raise UrlRefused("the URL must not hold credentials")
    if port == 0:
        raise UrlRefused("the URL's port must be 1-65535")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        if not allow_private and parts.hostname.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
            raise UrlRefused("the URL names this machine") from None
        return url
    if not allow_private:
        check_address(address)
    return url


# Cloud metadata services that are not in a private range (AWS's IPv6 one, Alibaba's).
_METADATA = (ipaddress.ip_network("fd00:ec2::254/128"), ipaddress.ip_network("100.100.100.200/32"))


def check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """Refuse private, loopback, link-local (169.254.169.254, the metadata service, is one),
    multicast, reserved, unspecified and shared (CGNAT) addresses, and v4 in v6 clothing."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if (address.is_private or address.is_loopback or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global
            or any(address in net for net in _METADATA)):
        raise UrlRefused(f"the endpoint resolves to a non-public address ({address})")


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_endpoint_id() -> str:
    return "ep_" + secrets.token_hex(12)


def sign(event_id: str, body: str, signing_secrets: Iterable[str], at: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers: one `v1,<base64>` per secret, space-separated (the current
    secret and, during a rotation's overlap, the previous one), over `{id}.{timestamp}.{body}`."""
    from standardwebhooks.webhooks import Webhook  # here: the scorer imports this module, and never signs

    when = at or datetime.now(UTC)
    signatures = " ".join(Webhook(s).sign(event_id, when, body) for s in signing_secrets)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }

