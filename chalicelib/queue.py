"""SQS: the task queue and its dead-letter queue. Returns plain data.

The boto3 client is handed in (built lazily by chalicelib.deps), so tests pass
one pointed at moto or LocalStack. botocore errors become TransientError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.tasks import REQUEST_ID_ATTRIBUTE, PendingTask
from chalicelib.errors import TransientError
from chalicelib.logs import logger

# SQS batch APIs take at most 10 entries.
SQS_BATCH = 10
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VisibilityChange:
    receipt_handle: str
    timeout_seconds: int


def task_message(task_id: int, item_id: int) -> dict[str, Any]:
    """The message body contract: {task_id, item_id, timestamp}."""
    return {"task_id": task_id, "item_id": item_id, "timestamp": utc_now_iso()}


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _entry(task: PendingTask) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": str(task.task_id), "MessageBody": json.dumps(task_message(task.task_id, task.item_id))}
    if task.request_id:
        entry["MessageAttributes"] = {REQUEST_ID_ATTRIBUTE: {"DataType": "String", "StringValue": task.request_id}}
    return entry


def chunks(items: Sequence[T], size: int = SQS_BATCH) -> Iterable[Sequence[T]]:
    """`items` in slices of at most `size` (one SQS batch call each; ops/dlq.py uses it too)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TaskQueue:
    def __init__(
        self,
        sqs: Any,
        *,
        queue_name: str,
        dlq_name: str,
        queue_url: str | None = None,
        dlq_url: str | None = None,
        max_receive_count: int | None = None,
    ) -> None:
        self._sqs = sqs
        self._names = {"queue": queue_name, "dlq": dlq_name}
        self._urls: dict[str, str] = {}
        if queue_url:
            self._urls["queue"] = queue_url
        if dlq_url:
            self._urls["dlq"] = dlq_url
        # Given (the function's MAX_RECEIVE_COUNT): no GetQueueAttributes, and no client built for it.
        self._max_receive_count: int | None = max_receive_count

    # --- addressing --------------------------------------------------------------

    def url(self, which: str) -> str:
        """Queue URL by role ("queue" | "dlq"), looked up once per process."""
        if which not in self._urls:
            try:
                resp = self._sqs.get_queue_url(QueueName=self._names[which])
            except (BotoCoreError, ClientError) as exc:
                logger.warning("SQS error", extra={"queue": self._names[which], "error": str(exc)})
                raise TransientError(f"queue {self._names[which]} unavailable") from exc
            self._urls[which] = resp["QueueUrl"]
        return self._urls[which]

    # --- sending -----------------------------------------------------------------

    def send_tasks(self, tasks: Sequence[PendingTask]) -> dict[int, str]:
        """Send {task_id, item_id} messages; return {task_id: message id} of those SQS accepted.

        The API request id rides along as a message attribute, so the scorer
        can log it with every line about the task (chalicelib.scoring.dispositions).
        """
        sent: dict[int, str] = {}
        for chunk in chunks(tasks):
            entries = [_entry(t) for t in chunk]
            try:
                resp = self._sqs.send_message_batch(QueueUrl=self.url("queue"), Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                logger.warning("SQS error", extra={"error": str(exc)})
                raise TransientError(f"could not send to {self._names['queue']}") from exc
            sent.update({int(ok["Id"]): str(ok["MessageId"]) for ok in resp.get("Successful", [])})
        return sent

    def send_tasks_best_effort(self, tasks: Sequence[PendingTask]) -> dict[int, str]:
        """send_tasks, one SendMessageBatch per 10, where a failed call does not
        stop the next: {task_id: message id} of those SQS accepted. For callers
        that leave the rest to the reconciler (batch submit), which must still
        learn which chunks went through so only those are marked enqueued."""
        sent: dict[int, str] = {}
        for chunk in chunks(tasks):
            try:
                sent.update(self.send_tasks(chunk))
            except TransientError as exc:
                logger.warning("batch send failed", extra={"tasks": len(chunk), "error": exc.message})
        return sent

    def send_task(self, task: PendingTask) -> str:
        """Send one task (SendMessage, not a batch of one: cheaper on the API's path)."""
        try:
            resp = self._sqs.send_message(QueueUrl=self.url("queue"), **{k: v for k, v in _entry(task).items() if k != "Id"})
        except (BotoCoreError, ClientError) as exc:
            logger.warning("SQS error", extra={"task_id": task.task_id, "error": str(exc)})
            raise TransientError(f"could not send to {self._names['queue']}") from exc
        return str(resp["MessageId"])

    def send_to_dlq(self, envelopes: Sequence[dict[str, Any]]) -> set[int]:
        """Park envelopes; return the positions of those the DLQ stored.

        A failed call or a refused entry leaves its envelopes out (and is
        logged), so the scorer retries exactly those messages.
        """
        stored: set[int] = set()
        for n, chunk in enumerate(chunks(envelopes)):
            entries = [{"Id": str(n * SQS_BATCH + i), "MessageBody": json.dumps(e)} for i, e in enumerate(chunk)]
            try:
                resp = self._sqs.send_message_batch(QueueUrl=self.url("dlq"), Entries=entries)
            except (BotoCoreError, ClientError, TransientError) as exc:
                logger.warning("SQS error", extra={"queue": self._names["dlq"], "error": str(exc)})
                continue
            stored.update(int(ok["Id"]) for ok in resp.get("Successful", []))
            if resp.get("Failed"):
                logger.warning("envelopes refused", extra={"queue": self._names["dlq"], "failed": resp["Failed"]})
        return stored

    # --- retries -----------------------------------------------------------------

    def change_visibility(self, changes: Sequence[VisibilityChange]) -> None:
        """Best effort: if this fails the message returns after the queue's
        default visibility timeout instead, which is later but still a retry."""
        for chunk in chunks(changes):
            entries = [
                {"Id": str(i), "ReceiptHandle": c.receipt_handle, "VisibilityTimeout": c.timeout_seconds}
                for i, c in enumerate(chunk)
            ]
            try:
                resp = self._sqs.change_message_visibility_batch(QueueUrl=self.url("queue"), Entries=entries)
                if resp.get("Failed"):
                    logger.warning("visibility change refused", extra={"messages": len(resp["Failed"])})
            except (BotoCoreError, ClientError, TransientError) as exc:
                logger.warning("could not change visibility", extra={"error": str(exc)})

    def max_receive_count(self, default: int) -> int:
        """maxReceiveCount of the queue's RedrivePolicy: as configured, else read once per process."""
        if self._max_receive_count is None:
            try:
                attrs = self._sqs.get_queue_attributes(
                    QueueUrl=self.url("queue"), AttributeNames=["RedrivePolicy"]
                )["Attributes"]
                self._max_receive_count = int(json.loads(attrs["RedrivePolicy"])["maxReceiveCount"])
            except (BotoCoreError, ClientError, TransientError, KeyError, ValueError) as exc:
                logger.warning(
                    "RedrivePolicy unreadable; assuming the default maxReceiveCount",
                    extra={"error": str(exc), "max_receive_count": default},
                )
                return default
        return self._max_receive_count

    # --- health ------------------------------------------------------------------

    @property
    def dlq_name(self) -> str:
        return self._names["dlq"]

    def dlq_depth(self) -> int:
        """Visible messages in the DLQ: one GetQueueAttributes. TransientError when SQS is down."""
        try:
            attrs = self._sqs.get_queue_attributes(QueueUrl=self.url("dlq"), AttributeNames=["ApproximateNumberOfMessages"])
        except (BotoCoreError, ClientError) as exc:
            logger.warning("SQS error", extra={"queue": self.dlq_name, "error": str(exc)})
            raise TransientError(f"queue {self.dlq_name} unavailable") from exc
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])
