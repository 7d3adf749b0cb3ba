"""Webhook event types, in one place (issue 22; docs/webhooks.md#events), and what the outbox
needs from them. Small on purpose: the scorer imports it on its cold path; the rest of webhooks'
pure logic is chalicelib/domain/webhooks.py."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Every event type, in one place. The moderation events report a task's state change and are
# written in the transaction that makes it (chalicelib/storage/webhooks.py, record_events).
COMPLETED = "moderation.completed"
FAILED = "moderation.failed"
REVIEW_REQUIRED = "moderation.review_required"  # the model's decision is `review`
REVIEWED = "moderation.reviewed"  # a moderator's verdict (the review queue, issue 21)
APPEAL_DECIDED = "moderation.appeal_decided"  # an appeal decided (issue 21)
# About the endpoint itself.
TEST = "webhook.test"  # POST /webhooks/endpoints/{id}/test; sent whatever the endpoint subscribes to
ENDPOINT_DISABLED = "webhook.endpoint_disabled"  # to the client's other endpoints
ENDPOINT_ENABLED = "webhook.endpoint_enabled"  # the "recovered" notice: sent to the endpoint enabled again
TASK_EVENTS: tuple[str, ...] = (COMPLETED, FAILED, REVIEW_REQUIRED, REVIEWED, APPEAL_DECIDED)
SUBSCRIBABLE: tuple[str, ...] = (*TASK_EVENTS, ENDPOINT_DISABLED, ENDPOINT_ENABLED)
MAX_BODY_BYTES = 20 * 1024  # the thin payload stays far below it; a bigger one is refused at write time

# The format's prefix, not a secret.


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery whose message is to be sent: after `delay` seconds, for attempt `attempts` + 1."""

    delivery_id: int
    attempts: int
    delay: int = 0


def task_events(changes: Iterable[tuple[int, str, str | None]]) -> list[tuple[str, int]]:
    """The events of a batch's state changes `(task_id, status, decision)`: completed (and
    review_required when the model sends the ad to a person), failed; nothing for a retry."""
    events: list[tuple[str, int]] = []
    for task_id, status, decision in changes:
        if status == "completed":
            events.append((COMPLETED, task_id))
            if decision == "review":
                events.append((REVIEW_REQUIRED, task_id))
        elif status == "failed":
            events.append((FAILED, task_id))
    return events
