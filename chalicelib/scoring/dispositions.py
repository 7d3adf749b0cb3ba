"""What happens to each SQS message, its disposition: pure functions, no I/O.

The scorer (chalicelib.scoring.scorer) gathers facts (parsed messages, claimed rows,
model scores) and asks `plan_batch` what to do with every message; it then
does the I/O. Keeping the state machine here makes it testable on its own.
It imports only the domain (an import-linter contract keeps adapters out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib.domain.tasks import (
    COMPLETED,
    FAILED,
    PERMANENT,
    PROCESSING,
    REQUEST_ID_ATTRIBUTE,
    TRANSIENT,
    ClaimedTask,
    EventRow,
    TaskUpdate,
    read_body,
)
from chalicelib.domain.verdicts import BLOCK, Thresholds, decide

# SQS refuses visibility timeouts above 12 hours.
MAX_VISIBILITY_SECONDS = 12 * 60 * 60


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """The body contract: {task_id, item_id, timestamp}. Extra keys are ignored."""

    task_id: int
    item_id: int
    timestamp: str | None = None


class MalformedMessage(ValueError):
    pass


def _positive_int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    # bool is an int subclass; "7" is not a task id either (strict, as before).
    if key not in data:
        raise MalformedMessage(f"{key}: field required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedMessage(f"{key}: must be an integer, got {type(value).__name__}")
    if value <= 0:
        raise MalformedMessage(f"{key}: must be greater than 0")
    return value


def parse_message(data: Any) -> TaskMessage:
    """Validate a decoded body. Hand-written rather than a pydantic model: the
    scorer's cold start must not pay for importing pydantic (issue 9)."""
    if not isinstance(data, dict):
        raise MalformedMessage(f"body: must be a JSON object, got {type(data).__name__}")
    errors: list[str] = []
    ids: dict[str, int] = {}
    for key in ("task_id", "item_id"):
        try:
            ids[key] = _positive_int(data, key)
        except MalformedMessage as exc:
            errors.append(str(exc))
    timestamp = data.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str):
        errors.append("timestamp: must be a string")
    if errors:
        raise MalformedMessage("; ".join(errors))
    return TaskMessage(task_id=ids["task_id"], item_id=ids["item_id"], timestamp=timestamp)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One SQS record as the Lambda event source mapping hands it over."""

    message_id: str
    receipt_handle: str
    body: str
    attempt: int  # ApproximateReceiveCount
    message: TaskMessage | None
    parse_error: str | None
    # The API request that created the task (SQS message attribute), so every
    # scorer log line and trail row for it can be traced back (issue 9).
    request_id: str | None = None

    @property
    def original_message(self) -> Any:
        # Unwrapped, so parking a redriven envelope again does not nest it.
        return read_body(self.body).message


def parse_record(record: Mapping[str, Any]) -> Delivery:
    body = record.get("body") or ""
    attrs = record.get("attributes") or {}
    try:
        attempt = max(1, int(attrs.get("ApproximateReceiveCount", "1")))
    except (TypeError, ValueError):
        attempt = 1
    message: TaskMessage | None = None
    error: str | None = None
    try:
        # A redriven envelope is read as its original message, so a
        # permanently failed task is recognised and stays failed.
        message = parse_message(read_body(body).message)
    except MalformedMessage as exc:
        error = f"malformed message body: {exc}"
    return Delivery(
        message_id=str(record.get("messageId", "")),
        receipt_handle=str(record.get("receiptHandle", "")),
        body=body,
        attempt=attempt,
        message=message,
        parse_error=error,
        request_id=_string_attribute(record, REQUEST_ID_ATTRIBUTE),
    )


def _string_attribute(record: Mapping[str, Any], name: str) -> str | None:
    # Lambda's shape: messageAttributes.{name}.stringValue (lower camel case).
    attr = (record.get("messageAttributes") or {}).get(name) or {}
    value = attr.get("stringValue") if isinstance(attr, dict) else None
    return value if isinstance(value, str) and value else None


def backoff_seconds(attempt: int, base_seconds: int) -> int:
    """base * 2^(attempt-1): 5, 10, 20 s for attempts 1, 2, 3 with the default base."""
    return min(base_seconds * 2 ** max(0, attempt - 1), MAX_VISIBILITY_SECONDS)


class Outcome(StrEnum):
    COMPLETED = "completed"  # result written, message deleted
    FAILED_PERMANENT = "failed_permanent"  # task failed, envelope in DLQ, message deleted
    DUPLICATE = "duplicate"  # task already finished: deleted without work
    RETRY = "retry"  # transient: backoff, reported in batchItemFailures
    EXHAUSTED = "exhausted"  # transient on the last attempt: task failed, redrive moves it to DLQ
    BUSY = "busy"  # a concurrent delivery holds the task: retried later

    @property
    def acknowledged(self) -> bool:
        return self in (Outcome.COMPLETED, Outcome.FAILED_PERMANENT, Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class Disposition:
    delivery: Delivery
    outcome: Outcome
    error: str | None = None
    error_kind: str | None = None
    update: TaskUpdate | None = None
    envelope: dict[str, Any] | None = None

    @property
    def task_id(self) -> int | None:
        return self.delivery.message.task_id if self.delivery.message else None


def dlq_envelope(delivery: Delivery, error: str, kind: str, timestamp: str) -> dict[str, Any]:
    """The DLQ format the Kafka-era tools read, plus task_id and kind."""
    return {
        "original_message": delivery.original_message,
        "error": error,
        "error_kind": kind,
        "task_id": delivery.message.task_id if delivery.message else None,
        "message_id": delivery.message_id,
        "timestamp": timestamp,
        "retry_count": delivery.attempt,
    }


@dataclass(frozen=True, slots=True)
class Score:
    """The model's answer for one task: a probability, or why there is none."""

    probability: float | None = None
    invalid: str | None = None  # features the model must not score: permanent
    crashed: str | None = None  # unexpected exception while scoring: transient


def plan_batch(
    deliveries: Sequence[Delivery],
    claimed: Mapping[int, ClaimedTask],
    locked_elsewhere: set[int],
    scores: Mapping[int, Score],
    *,
    thresholds: Thresholds,
    max_receive_count: int,
    now_iso: str,
) -> list[Disposition]:
    """Every delivery's disposition, one per delivery, in order. A completed
    task's decision (allow | review | block) comes from the model version's
    thresholds (chalicelib.domain.verdicts.decide)."""
    dispositions: list[Disposition] = []
    handled: set[int] = set()

    def permanent(d: Delivery, error: str, *, task: bool) -> Disposition:
        update = None
        if task and d.message is not None:
            update = TaskUpdate(d.message.task_id, FAILED, d.attempt, error_message=error, error_kind=PERMANENT)
        return Disposition(
            d, Outcome.FAILED_PERMANENT, error, PERMANENT, update, dlq_envelope(d, error, PERMANENT, now_iso)
        )

    for d in deliveries:
        msg = d.message
        if msg is None:
            dispositions.append(permanent(d, d.parse_error or "malformed message body", task=False))
            continue
        tid = msg.task_id
        if tid in handled:
            # The same task twice in one batch: the first delivery does the work.
            dispositions.append(Disposition(d, Outcome.DUPLICATE))
            continue
        task = claimed.get(tid)
        if task is None:
            if tid in locked_elsewhere:
                dispositions.append(Disposition(d, Outcome.BUSY, "task is being processed by another delivery"))
            else:
                dispositions.append(permanent(d, f"unknown task {tid}", task=False))
            continue
        handled.add(tid)
        if task.envelope_pending:
            # Failed for good by an earlier delivery whose envelope never
            # reached the DLQ: park it now (chalicelib.scoring.scorer, "nothing lost").
            error = task.error_message or "failed permanently"
            dispositions.append(Disposition(d, Outcome.FAILED_PERMANENT, error, PERMANENT, None,
                                      dlq_envelope(d, error, PERMANENT, now_iso)))
            continue
        if not task.claimable:
            dispositions.append(Disposition(d, Outcome.DUPLICATE))
            continue
        if msg.item_id != task.item_id:
            dispositions.append(
                permanent(d, f"message item_id {msg.item_id} does not match task item_id {task.item_id}", task=True)
            )
            continue
        if task.ad is None:
            dispositions.append(permanent(d, f"advertisement {task.item_id} not found or closed", task=True))
            continue
        score = scores.get(tid, Score(crashed="task was not scored"))
        if score.invalid is not None:
            dispositions.append(permanent(d, f"invalid features: {score.invalid}", task=True))
        elif score.probability is not None:
            p = score.probability
            decision = decide(p, thresholds)
            update = TaskUpdate(tid, COMPLETED, d.attempt, is_violation=decision == BLOCK, probability=p, decision=decision)
            dispositions.append(Disposition(d, Outcome.COMPLETED, update=update))
        else:
            dispositions.append(transient(d, score.crashed or "scoring failed", max_receive_count))
    return dispositions


def transient(d: Delivery, error: str, max_receive_count: int) -> Disposition:
    """Retry later; on the last attempt the task fails and redrive parks the message."""
    if d.message is None:  # no task to update: an unparsed message is simply retried
        return Disposition(d, Outcome.RETRY, error, TRANSIENT)
    if d.attempt >= max_receive_count:
        reason = f"gave up after {d.attempt} attempts: {error}"
        update = TaskUpdate(d.message.task_id, FAILED, d.attempt, error_message=reason, error_kind=TRANSIENT)
        return Disposition(d, Outcome.EXHAUSTED, reason, TRANSIENT, update)
    # error_message on a PROCESSING update lands in last_error only.
    update = TaskUpdate(d.message.task_id, PROCESSING, d.attempt, error_message=error)
    return Disposition(d, Outcome.RETRY, error, TRANSIENT, update)


def whole_batch_failure(deliveries: Sequence[Delivery], error: str, max_receive_count: int) -> list[Disposition]:
    """The handler could not run (e.g. no database): retry every message.

    Nothing is acknowledged that was not done, malformed messages included:
    they are parked on a later attempt, when the handler can run.
    """
    return [transient(d, error, max_receive_count) for d in deliveries]


def unparked(d: Disposition) -> Disposition:
    """A permanent failure whose envelope the DLQ did not store: retried, so
    the message comes back and its envelope is sent then (chalicelib.scoring.scorer)."""
    error = f"{d.error} (not parked: the DLQ send failed)"
    return dataclasses.replace(d, outcome=Outcome.RETRY, error=error, error_kind=TRANSIENT, update=None, envelope=None)


def trail(dispositions: Sequence[Disposition], claimed: Mapping[int, ClaimedTask], existing: set[int]) -> list[EventRow]:
    """The task_events rows a batch's dispositions leave in the claiming
    transaction, for tasks that exist.

    A delivery for an unknown task or an unreadable body has no task to
    attach a trail to: its envelope in the DLQ is its record. The
    `dlq_parked` row of a permanent failure is not here: it is written once
    the DLQ has the envelope (`parked`).
    """
    rows: list[EventRow] = []
    for d in dispositions:
        tid = d.task_id
        if tid is None or tid not in existing:
            continue
        task = claimed.get(tid)
        attempt, message_id, request_id = d.delivery.attempt, d.delivery.message_id, _request_id(d, task)
        if task is not None and task.status == FAILED and task.claimable and d.update is not None:
            error = f"previously failed ({task.error_kind})"
            rows.append(EventRow(tid, "redriven", attempt, None, error, message_id, request_id))
        rows.append(EventRow(tid, "attempt", attempt, d.outcome.value, d.error, message_id, request_id))
        if d.outcome is Outcome.EXHAUSTED:  # the redrive policy parks it: nothing to wait for
            rows.append(_parked_row(d, tid, task))
    return rows


def parked(dispositions: Sequence[Disposition], claimed: Mapping[int, ClaimedTask]) -> list[EventRow]:
    """The `dlq_parked` rows of permanent failures whose envelope the DLQ stored."""
    return [
        _parked_row(d, tid, claimed[tid])
        for d in dispositions
        if d.outcome is Outcome.FAILED_PERMANENT and (tid := d.task_id) is not None and tid in claimed
    ]


def _parked_row(d: Disposition, task_id: int, task: ClaimedTask | None) -> EventRow:
    attempt, outcome, message_id = d.delivery.attempt, d.outcome.value, d.delivery.message_id
    return EventRow(task_id, "dlq_parked", attempt, outcome, d.error, message_id, _request_id(d, task))


def _request_id(d: Disposition, task: ClaimedTask | None) -> str | None:
    return d.delivery.request_id or (task.request_id if task else None)
