"""Webhooks' settings, from the environment (docs/webhooks.md#configuration), read once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from chalicelib.config import WEBHOOK_DLQ_NAME, WEBHOOK_QUEUE_NAME, ConfigurationError
from chalicelib.domain.webhooks import DEFAULT_JITTER, DEFAULT_SCHEDULE, parse_schedule

__all__ = ["WEBHOOK_DLQ_NAME", "WEBHOOK_QUEUE_NAME", "WebhookSettings", "webhook_settings"]


def _flag(name: str) -> bool:
    return (os.environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name) or ""
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    queue_name: str
    dlq_name: str
    queue_url: str | None
    dlq_url: str | None
    # Seconds before each attempt (Svix's by default); WEBHOOK_SCHEDULE="0,5,300,...".
    schedule: tuple[int, ...]
    jitter: float
    timeout_seconds: int
    # An endpoint failing continuously this long is disabled (5 days).
    disable_after_seconds: int
    # After a rotation, the old secret signs too for this long (24 h).
    rotation_overlap_seconds: int
    # `make run` only: plain http, and private or loopback addresses (a receiver on this machine).
    allow_http: bool
    allow_private: bool
    # The KMS key that seals endpoint secrets at rest; unset: stored plain (make run).
    kms_key_id: str | None
    # The reconciler re-sends a delivery whose attempt was due this long ago and has not happened.
    stale_seconds: int


@lru_cache(maxsize=1)
def webhook_settings() -> WebhookSettings:
    env = os.environ
    try:
        schedule = parse_schedule(env.get("WEBHOOK_SCHEDULE") or ",".join(map(str, DEFAULT_SCHEDULE)))
    except ValueError as exc:
        raise ConfigurationError(f"WEBHOOK_SCHEDULE: {exc}") from None
    return WebhookSettings(
        queue_name=env.get("WEBHOOK_QUEUE_NAME") or WEBHOOK_QUEUE_NAME,
        dlq_name=env.get("WEBHOOK_DLQ_NAME") or WEBHOOK_DLQ_NAME,
        queue_url=env.get("WEBHOOK_QUEUE_URL") or None,
        dlq_url=env.get("WEBHOOK_DLQ_URL") or None,
        schedule=schedule,
        jitter=float(env.get("WEBHOOK_JITTER") or DEFAULT_JITTER),
        timeout_seconds=_int("WEBHOOK_TIMEOUT_SECONDS", 15),
        disable_after_seconds=_int("WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 24 * 3600),
        rotation_overlap_seconds=_int("WEBHOOK_ROTATION_OVERLAP_SECONDS", 24 * 3600),
        allow_http=_flag("WEBHOOK_ALLOW_HTTP"),
        allow_private=_flag("WEBHOOK_ALLOW_PRIVATE"),
        kms_key_id=env.get("WEBHOOK_KMS_KEY_ID") or None,
        stale_seconds=_int("WEBHOOK_STALE_SECONDS", 300),
    )
