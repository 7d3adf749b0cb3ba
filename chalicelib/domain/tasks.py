"""The domain: task states, error kinds, the records the use cases pass
around, and the message contracts. Pure data, no I/O (an import-linter
contract keeps adapters out), so the decisions and the tooling can share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.domain.features import AdFeatures

PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
FAILED = "failed"
TERMINAL = frozenset({COMPLETED, FAILED})

# error_kind of failed tasks (also put in DLQ envelopes).
PERMANENT = "permanent"
TRANSIENT = "transient"
STUCK = "stuck"

# The SQS message attribute carrying the API request id; the scorer reads it back.
REQUEST_ID_ATTRIBUTE = "request_id"


@dataclass(frozen=True, slots=True)
class Ad:
    item_id: int
    seller_id: int
    is_verified_seller: bool
    name: str
    description: str
    category: int
    images_qty: int

    def features(self) -> AdFeatures:
        return AdFeatures.of(self)


@dataclass(frozen=True, slots=True)
class Task:
    task_id: int
    item_id: int
    status: str
    is_violation: bool | None
    probability: float | None
    model_version: str | None
    error_message: str | None
    error_kind: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    processed_at: datetime | None
    request_id: str | None
    decision: str | None = None  # null for tasks scored before migration V7
    # The review loop (migrations/V10; chalicelib/domain/reviews.py): who made the final decision.
    decided_by: str | None = None  # null: the model (or not decided yet)
    model_decision: str | None = None  # the model's own decision, once a person overrode it
    reviewed_by: str | None = None
    review_reason: str | None = None
    reviewed_at: datetime | None = None
    appeal: str | None = None


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One line of a task's trail (table task_events, migrations/V3)."""

    at: datetime
    kind: str
    attempt: int | None
    outcome: str | None
    error: str | None
    message_id: str | None
    request_id: str | None
    actor: str | None = None  # who acted: a moderator's or a client's id (the review loop's events)


@dataclass(frozen=True, slots=True)
class PendingTask:
    """A task to (re)send: what a message needs, and the request it came from."""

    task_id: int
    item_id: int
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Purged:
    """What one retention batch deleted (MaintenanceStore.purge_finished)."""

    tasks: int
    events: int
    last_id: int | None  # the highest task id deleted; None: nothing was


@dataclass(frozen=True, slots=True)
class KeyedTask:
    """What an Idempotency-Key resolved to (TaskStore.create_task_once)."""

    task_id: int | None  # None: no task (the ad does not exist; the key was not kept)
    item_id: int  # the item the key belongs to: not the requested one on a mismatch
    replayed: bool  # the key was already used: task_id is that first request's task


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task row locked by this transaction, with its ad if the ad still exists."""

    task_id: int
    item_id: int
    status: str
    error_kind: str | None
    ad: Ad | None
    request_id: str | None = None
    error_message: str | None = None
    # Failed permanently, but no `dlq_parked` row says its envelope reached the
    # DLQ: the send failed, or the process died between the commit and the send.
    envelope_pending: bool = False

    @property
    def claimable(self) -> bool:
        """May still be scored: unfinished, or failed for a passing reason (so a
        message redriven from the DLQ is scored again). The SQL twin is
        storage._CLAIMABLE."""
        return self.status in (PENDING, PROCESSING) or (self.status == FAILED and self.error_kind in (TRANSIENT, STUCK))


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim found: the tasks it locked, and the ids of tasks that
    exist but a concurrent delivery holds."""

    tasks: dict[int, ClaimedTask] = field(default_factory=dict)
    locked_elsewhere: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """The outcome to write for one claimed task."""

    task_id: int
    status: str  # processing (retry later) | completed | failed
    attempt: int
    is_violation: bool | None = None
    probability: float | None = None
    error_message: str | None = None
    error_kind: str | None = None
    decision: str | None = None  # ALLOW | REVIEW | BLOCK, with a verdict


@dataclass(frozen=True, slots=True)
class EventRow:
    """A task_events row to write (kinds: migrations/V3__task_events.sql)."""

    task_id: int
    kind: str
    attempt: int | None = None
    outcome: str | None = None
    error: str | None = None
    message_id: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ShadowVerdict:
    """How the shadow version judged a task the live one completed (shadow_verdicts)."""

    task_id: int
    shadow_version: str
    live_version: str
    live_probability: float
    shadow_probability: float
    live_decision: str
    shadow_decision: str


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """Every outcome and trail row of a batch, written by one statement."""

    updates: list[TaskUpdate]
    events: list[EventRow]


@dataclass(frozen=True, slots=True)
class QueueBody:
    """A body as the queues carry it: a task message, or a DLQ envelope
    {original_message, error, error_kind, task_id, message_id, timestamp,
    retry_count} around one (the scorer's, possibly redriven by ops)."""

    message: Any  # the task message (an envelope's original_message): decoded JSON, or the text if not JSON
    envelope: dict[str, Any] | None  # the envelope's fields; None for a plain message

    @property
    def task_id(self) -> int | None:
        """The envelope's task id, else the message's, when it is an integer."""
        for source in (self.envelope or {}, self.message if isinstance(self.message, dict) else {}):
            value = source.get("task_id")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None


def read_body(body: str) -> QueueBody:
    """The one reading of a body, for the scorer (which unwraps a redriven
    envelope, so a permanently failed task is recognised and stays failed) and
    for ops (which lists the DLQ)."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return QueueBody(body, None)
    if isinstance(data, dict) and "original_message" in data and "error" in data:
        return QueueBody(data["original_message"], data)
    return QueueBody(data, None)
