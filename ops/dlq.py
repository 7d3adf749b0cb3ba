"""Look at, redrive and purge the dead-letter queue (`moderation_dlq`).

    python -m ops.dlq list [--limit N] [--json]
    python -m ops.dlq show <message-id-prefix | task:ID>
    python -m ops.dlq redrive (--all | --task-id N ... | --message-id ID ...) [--yes]
    python -m ops.dlq purge [--yes]

Common options (before or after the command): --endpoint-url URL, --queue NAME
(default moderation), --dlq NAME (default moderation_dlq). boto3 reads
AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and the usual credentials; an empty
AWS_ENDPOINT_URL counts as unset (real AWS).

The DLQ holds two kinds of messages:

* envelopes the scorer sent for permanent failures,
  {"original_message", "error", "error_kind", "task_id", "message_id", "timestamp", "retry_count"};
* raw task messages {"task_id", "item_id", "timestamp"} that SQS moved there
  after maxReceiveCount transient failures ("exhausted").

Both can be sent back to `moderation` unchanged: the scorer unwraps envelopes
(a permanently failed task stays failed) and processes exhausted tasks again.

Exit codes: 0 ok, 1 error (or aborted at the prompt), 2 usage (including
"needs --yes" when there is no terminal to ask on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

DEFAULT_QUEUE = "moderation"
DEFAULT_DLQ = "moderation_dlq"

# Peeking hides each message for this long; it is made visible again (timeout
# 0) as soon as the listing is done, or by SQS itself if we are killed.
PEEK_VISIBILITY_S = 30
# Messages being moved one by one stay hidden while they are sent and deleted.
MOVE_VISIBILITY_S = 120
# Long polling asks every SQS server; a short poll may miss messages in a small queue.
RECEIVE_WAIT_S = 1
MOVE_TASK_POLL_S = 0.5
ERROR_WIDTH = 60

EXHAUSTED = "exhausted"
EXHAUSTED_ERROR = "exhausted retries (see task)"

# How an endpoint says "I do not implement this action". moto (in-process)
# raises NotImplementedError instead of answering, handled separately.
UNSUPPORTED_CODES = frozenset(
    {
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "InvalidAction",
        "NotImplemented",
        "UnknownOperationException",
    }
)
MOVE_TASK_DONE = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


class UsageError(Exception):
    """Bad arguments, or a confirmation that cannot be asked for (exit 2)."""


class OpsError(Exception):
    """Something went wrong; the message says what (exit 1)."""


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Classified:
    kind: str
    task_id: int | None
    error: str
    retry_count: int | None


def classify(body: str) -> Classified:
    """What a DLQ body is: a scorer envelope or a raw (exhausted) task message."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and "original_message" in data and "error" in data:
        task_id = _as_int(data.get("task_id"))
        original = data.get("original_message")
        if task_id is None and isinstance(original, dict):
            task_id = _as_int(original.get("task_id"))
        return Classified(
            kind=str(data.get("error_kind") or "unknown"),
            task_id=task_id,
            error=str(data.get("error")),
            retry_count=_as_int(data.get("retry_count")),
        )
    if isinstance(data, dict) and "task_id" in data:
        return Classified(EXHAUSTED, _as_int(data.get("task_id")), EXHAUSTED_ERROR, None)
    # Only SQS redrive puts a non-envelope here; the body was never a valid task.
    return Classified(EXHAUSTED, None, "exhausted retries (body is not a task message)", None)


@dataclass(slots=True)
class DlqMessage:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str] = field(default_factory=dict)
    message_attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> DlqMessage:
        return cls(
            message_id=str(raw["MessageId"]),
            receipt_handle=str(raw["ReceiptHandle"]),
            body=str(raw.get("Body", "")),
            attributes=dict(raw.get("Attributes") or {}),
            message_attributes=dict(raw.get("MessageAttributes") or {}),
        )

    @property
    def info(self) -> Classified:
        return classify(self.body)

    @property
    def receive_count(self) -> int | None:
        """The DLQ's ApproximateReceiveCount. It includes every peek (this one too)."""
        try:
            return int(self.attributes["ApproximateReceiveCount"])
        except (KeyError, ValueError):
            return None

    @property
    def sent_ms(self) -> int:
        try:
            return int(self.attributes["SentTimestamp"])
        except (KeyError, ValueError):
            return 0

    @property
    def sent_at(self) -> str:
        if not self.sent_ms:
            return "-"
        return datetime.fromtimestamp(self.sent_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def as_json(self) -> dict[str, Any]:
        info = self.info
        return {
            "message_id": self.message_id,
            "task_id": info.task_id,
            "kind": info.kind,
            "error": info.error,
            "retry_count": info.retry_count,
            "receive_count": self.receive_count,
            "sent_at": self.sent_at,
            "dead_letter_source_arn": self.attributes.get("DeadLetterQueueSourceArn"),
        }


# --------------------------------------------------------------------------
# The queues
# --------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int = 10) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Queues:
    """The main queue and its DLQ on one SQS endpoint."""

    def __init__(self, sqs: Any, queue: str = DEFAULT_QUEUE, dlq: str = DEFAULT_DLQ) -> None:
        self.sqs = sqs
        self.queue_name = queue
        self.dlq_name = dlq
        self._urls: dict[str, str] = {}

    def url(self, name: str) -> str:
        if name not in self._urls:
            try:
                self._urls[name] = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            except ClientError as err:
                if "NonExistentQueue" in _code(err) or "QueueDoesNotExist" in _code(err):
                    raise OpsError(f"queue {name!r} does not exist at {self.sqs.meta.endpoint_url}") from err
                raise
        return self._urls[name]

    @property
    def dlq_url(self) -> str:
        return self.url(self.dlq_name)

    @property
    def queue_url(self) -> str:
        return self.url(self.queue_name)

    def arn(self, url: str) -> str:
        return str(self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])

    def counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight) messages of a queue, as SQS approximates them."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0)), int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))

    def receive(self, visibility: int) -> list[DlqMessage]:
        resp = self.sqs.receive_message(
            QueueUrl=self.dlq_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=visibility,
            WaitTimeSeconds=RECEIVE_WAIT_S,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return [DlqMessage.from_sqs(m) for m in resp.get("Messages", [])]

    def release(self, messages: Iterable[DlqMessage]) -> None:
        """Make received messages visible again at once."""
        items = list(messages)
        for chunk in _chunks(items):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0} for i, m in enumerate(chunk)]
            resp = self.sqs.change_message_visibility_batch(QueueUrl=self.dlq_url, Entries=entries)
            for failed in resp.get("Failed", []):
                msg = chunk[int(failed["Id"])]
                print(
                    f"warning: could not make {msg.message_id} visible again ({failed.get('Code')}); "
                    f"it reappears by itself within {PEEK_VISIBILITY_S} s",
                    file=sys.stderr,
                )

    def peek(self, limit: int | None = None, expected: int | None = None) -> list[DlqMessage]:
        """Every visible DLQ message (up to `limit`), without consuming any.

        Receives with a short visibility timeout until a receive brings no
        new message id (or we have as many as SQS counted: `expected`,
        looked up if not given), then sets the visibility of everything
        received back to 0.
        """
        if expected is None:
            expected, _ = self.counts(self.dlq_url)
        seen: dict[str, DlqMessage] = {}
        try:
            while limit is None or len(seen) < limit:
                batch = self.receive(PEEK_VISIBILITY_S)
                new = [m for m in batch if m.message_id not in seen]
                # A message seen twice: keep the newest receipt handle, the only valid one.
                seen.update((m.message_id, m) for m in batch)
                if not new or (expected and len(seen) >= expected):
                    break
        finally:
            self.release(seen.values())
        messages = sorted(seen.values(), key=lambda m: (m.sent_ms, m.message_id))
        return messages[:limit] if limit is not None else messages

    def send_to_main(self, message: DlqMessage) -> None:
        """Send the body unchanged (and any message attributes) to the main queue."""
        kwargs: dict[str, Any] = {"QueueUrl": self.queue_url, "MessageBody": message.body}
        attrs = {
            name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
            for name, value in message.message_attributes.items()
        }
        if attrs:
            kwargs["MessageAttributes"] = attrs
        self.sqs.send_message(**kwargs)

    def delete(self, messages: Sequence[DlqMessage]) -> list[str]:
        """Delete from the DLQ; return the ids that could not be deleted."""
        failed: list[str] = []
        for chunk in _chunks(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)]
            resp = self.sqs.delete_message_batch(QueueUrl=self.dlq_url, Entries=entries)
            failed.extend(chunk[int(f["Id"])].message_id for f in resp.get("Failed", []))
        return failed


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def is_unsupported(err: BaseException) -> bool:
    """True if the endpoint does not implement the action (LocalStack/moto/old emulators)."""
    if isinstance(err, NotImplementedError):
        return True
    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return _code(err) in UNSUPPORTED_CODES or status == 501
    return False


# --------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def print_table(messages: Sequence[DlqMessage]) -> None:
    header = ("MESSAGE", "TASK", "KIND", "ERROR", "RETRIES", "RECEIVES", "SENT")
    rows = [header]
    for m in messages:
        info = m.info
        rows.append(
            (
                m.message_id[:8],
                _dash(info.task_id),
                info.kind,
                _short(info.error, ERROR_WIDTH),
                _dash(info.retry_count),
                _dash(m.receive_count),
                m.sent_at,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def confirm(prompt: str, yes: bool, *, expect: str | None = None) -> None:
    """Ask on the terminal unless --yes; without a terminal, --yes is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on; re-run with --yes")
    if expect is None:
        answer = input(f"{prompt} [y/N] ").strip().lower()
        ok = answer in ("y", "yes")
    else:
        ok = input(f"{prompt}\nType the queue name ({expect}) to confirm: ").strip() == expect
    if not ok:
        raise OpsError("aborted, nothing changed")


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def cmd_list(q: Queues, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    # Counted first: afterwards our own just-released peeks could still count as in flight.
    visible, in_flight = q.counts(q.dlq_url)
    messages = q.peek(args.limit, expected=visible)
    if args.json:
        for m in messages:
            print(json.dumps(m.as_json(), ensure_ascii=False))
    elif messages:
        print_table(messages)
    kinds: dict[str, int] = {}
    for m in messages:
        kinds[m.info.kind] = kinds.get(m.info.kind, 0) + 1
    summary = f"{len(messages)} message{'s' if len(messages) != 1 else ''} in {q.dlq_name}"
    if kinds:
        summary += " (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"
    if args.limit is not None and len(messages) == args.limit:
        summary += f", limited to {args.limit}"
    if in_flight:
        summary += f"; {in_flight} more in flight (received by someone else), not listed"
    # With --json, stdout holds only JSON lines.
    print(summary, file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK


def _select(messages: Sequence[DlqMessage], target: str) -> list[DlqMessage]:
    if target.startswith("task:"):
        try:
            task_id = int(target.removeprefix("task:"))
        except ValueError as err:
            raise UsageError(f"not a task id: {target!r} (use task:<integer>)") from err
        return [m for m in messages if m.info.task_id == task_id]
    return [m for m in messages if m.message_id.startswith(target)]


def cmd_show(q: Queues, args: argparse.Namespace) -> int:
    target: str = args.target
    if not target:
        raise UsageError("give a message id (prefix) or task:<id>")
    matches = _select(q.peek(), target)
    if not matches:
        raise OpsError(f"no message in {q.dlq_name} matches {target!r}")
    for i, m in enumerate(matches):
        if i:
            print()
        info = m.info
        print(f"MessageId: {m.message_id}")
        print(f"Kind: {info.kind}   Task: {_dash(info.task_id)}   Retries: {_dash(info.retry_count)}")
        print(f"Error: {info.error}")
        print("Attributes:")
        for name in sorted(m.attributes):
            value = m.attributes[name]
            if name.endswith("Timestamp") and value.isdigit():
                value += "  (" + datetime.fromtimestamp(int(value) / 1000, UTC).isoformat(timespec="seconds") + ")"
            print(f"  {name}: {value}")
        for name, value in sorted(m.message_attributes.items()):
            print(f"  (message attribute) {name}: {value.get('StringValue', value.get('BinaryValue'))}")
        print("Body:")
        try:
            print(json.dumps(json.loads(m.body), indent=2, ensure_ascii=False))
        except ValueError:
            print(m.body)
    if len(matches) > 1:
        print(f"\n{len(matches)} messages match {target!r}")
    return EXIT_OK


def _redrive_with_move_task(q: Queues, dlq_arn: str, queue_arn: str) -> int | None:
    """StartMessageMoveTask + progress; None if the endpoint does not support it.

    The destination is always given: "back to the original source" only
    works for messages SQS itself moved to the DLQ (they carry
    DeadLetterQueueSourceArn); the scorer's envelopes were sent to the DLQ
    directly and have no source, and a task without DestinationArn fails on them.
    """
    try:
        handle = q.sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=queue_arn)["TaskHandle"]
    except (ClientError, NotImplementedError) as err:
        if not is_unsupported(err):
            raise
        print(f"StartMessageMoveTask is not supported by this endpoint ({err}); moving messages one by one")
        return None
    print(f"started message move task {q.dlq_name} -> {q.queue_name}")
    last = ""
    try:
        while True:
            results = q.sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10).get("Results", [])
            # AWS returns TaskHandle only while the task runs; the newest task comes first.
            task = next((t for t in results if t.get("TaskHandle") == handle), results[0] if results else {})
            status = str(task.get("Status", "UNKNOWN"))
            moved = task.get("ApproximateNumberOfMessagesMoved", 0)
            total = task.get("ApproximateNumberOfMessagesToMove", "?")
            line = f"{status.lower()}: moved {moved}/{total}"
            if line != last:
                print(line, flush=True)
                last = line
            if status in MOVE_TASK_DONE:
                break
            time.sleep(MOVE_TASK_POLL_S)
    except KeyboardInterrupt:
        print(
            "\nstopped watching; the move task keeps running. Follow it with:\n"
            f"  aws sqs list-message-move-tasks --source-arn {dlq_arn}",
            file=sys.stderr,
        )
        raise
    if status == "COMPLETED":
        print(f"redrive complete: moved {moved} message(s) from {q.dlq_name} to {q.queue_name}")
        return EXIT_OK
    reason = task.get("FailureReason", "no reason given")
    print(f"redrive {status}: moved {moved}/{total}; reason: {reason}", file=sys.stderr)
    return EXIT_ERROR


def _redrive_one_by_one(q: Queues, total: int) -> int:
    """Receive -> send to the main queue -> delete, until the DLQ is empty."""
    moved = 0
    failed: dict[str, str] = {}
    not_deleted: list[str] = []
    while True:
        batch = q.receive(MOVE_VISIBILITY_S)
        todo = [m for m in batch if m.message_id not in failed]
        q.release([m for m in batch if m.message_id in failed])
        if not todo:
            break
        sent: list[DlqMessage] = []
        for m in todo:
            try:
                q.send_to_main(m)
            except ClientError as err:
                failed[m.message_id] = str(err)
                q.release([m])
                continue
            sent.append(m)
        # Deleted only once the copy is safely in the main queue.
        not_deleted.extend(q.delete(sent))
        moved += len(sent)
        print(f"moved {moved}/{max(total, moved)}", flush=True)
    print(f"redrive complete: moved {moved} message(s) from {q.dlq_name} to {q.queue_name}")
    return _report_failures(failed, not_deleted)


def _report_failures(failed: dict[str, str], not_deleted: Sequence[str]) -> int:
    for message_id, error in failed.items():
        print(f"error: could not send {message_id}: {error} (left in the DLQ)", file=sys.stderr)
    for message_id in not_deleted:
        print(f"warning: {message_id} was sent but could not be deleted from the DLQ; it may be redriven twice", file=sys.stderr)
    return EXIT_ERROR if failed or not_deleted else EXIT_OK


def _match_selection(messages: Sequence[DlqMessage], task_ids: Sequence[int], message_ids: Sequence[str]) -> list[DlqMessage]:
    chosen: dict[str, DlqMessage] = {}
    problems: list[str] = []
    for task_id in task_ids:
        found = [m for m in messages if m.info.task_id == task_id]
        if not found:
            problems.append(f"no message for task {task_id}")
        chosen.update((m.message_id, m) for m in found)
    for prefix in message_ids:
        found = [m for m in messages if m.message_id.startswith(prefix)]
        if not found:
            problems.append(f"no message with id {prefix!r}")
        elif len(found) > 1:
            problems.append(f"message id {prefix!r} is ambiguous: " + ", ".join(m.message_id for m in found))
        chosen.update((m.message_id, m) for m in found)
    if problems:
        raise OpsError("nothing redriven: " + "; ".join(problems))
    return sorted(chosen.values(), key=lambda m: (m.sent_ms, m.message_id))


def _redrive_selected(q: Queues, wanted: set[str]) -> int:
    remaining = set(wanted)
    held: dict[str, DlqMessage] = {}
    moved = 0
    failed: dict[str, str] = {}
    not_deleted: list[str] = []
    try:
        while remaining:
            batch = q.receive(MOVE_VISIBILITY_S)
            if not [m for m in batch if m.message_id not in held]:
                break
            for m in batch:
                if m.message_id not in remaining:
                    held[m.message_id] = m
                    continue
                remaining.discard(m.message_id)
                try:
                    q.send_to_main(m)
                except ClientError as err:
                    failed[m.message_id] = str(err)
                    held[m.message_id] = m
                    continue
                not_deleted.extend(q.delete([m]))
                moved += 1
                print(f"moved {moved}/{len(wanted)}: {m.message_id} (task {_dash(m.info.task_id)})", flush=True)
    finally:
        q.release(held.values())
    for message_id in sorted(remaining):
        failed[message_id] = "not received again (in flight elsewhere, or already gone)"
    print(f"redrive complete: moved {moved} of {len(wanted)} selected message(s) to {q.queue_name}")
    return _report_failures(failed, not_deleted)


def cmd_redrive(q: Queues, args: argparse.Namespace) -> int:
    if args.all:
        visible, in_flight = q.counts(q.dlq_url)
        if visible == 0:
            note = f" ({in_flight} in flight)" if in_flight else ""
            print(f"nothing to redrive: {q.dlq_name} has no visible messages{note}")
            return EXIT_OK
        confirm(f"Redrive all ~{visible} message(s) from {q.dlq_name} to {q.queue_name}?", args.yes)
        result = _redrive_with_move_task(q, q.arn(q.dlq_url), q.arn(q.queue_url))
        return result if result is not None else _redrive_one_by_one(q, visible)
    selected = _match_selection(q.peek(), args.task_id or [], args.message_id or [])
    print_table(selected)
    confirm(f"Redrive these {len(selected)} message(s) to {q.queue_name}?", args.yes)
    return _redrive_selected(q, {m.message_id for m in selected})


def cmd_purge(q: Queues, args: argparse.Namespace) -> int:
    visible, in_flight = q.counts(q.dlq_url)
    confirm(
        f"Purge {q.dlq_name}: delete ~{visible + in_flight} message(s) for good?",
        args.yes,
        expect=q.dlq_name,
    )
    try:
        q.sqs.purge_queue(QueueUrl=q.dlq_url)
    except ClientError as err:
        if "PurgeQueueInProgress" in _code(err):
            raise OpsError(f"{q.dlq_name} was purged less than 60 s ago; try again in a minute") from err
        raise
    print(f"purged {q.dlq_name} (~{visible + in_flight} message(s); SQS may take up to 60 s to finish)")
    return EXIT_OK


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # The common options work before or after the command; SUPPRESS keeps a
    # subcommand's unset option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoint-url", default=argparse.SUPPRESS, help="SQS endpoint (default: $AWS_ENDPOINT_URL, else AWS)")
    common.add_argument("--queue", default=argparse.SUPPRESS, help=f"main queue name (default {DEFAULT_QUEUE})")
    common.add_argument("--dlq", default=argparse.SUPPRESS, help=f"dead-letter queue name (default {DEFAULT_DLQ})")

    parser = argparse.ArgumentParser(
        prog="python -m ops.dlq",
        description="Inspect, redrive and purge the moderation dead-letter queue.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], help="peek at every message (nothing is consumed)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="show at most N messages")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[common], help="one message in full: body and attributes")
    p.add_argument("target", metavar="MESSAGE_ID_PREFIX|task:ID")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("redrive", parents=[common], help="send messages back to the main queue")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="everything (StartMessageMoveTask when supported)")
    which.add_argument("--task-id", type=int, nargs="+", action="extend", metavar="N", help="the messages of these tasks")
    which.add_argument("--message-id", nargs="+", action="extend", metavar="ID", help="these messages (id or unique prefix)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_redrive)

    p = sub.add_parser("purge", parents=[common], help="delete every message in the DLQ")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (required without a terminal)")
    p.set_defaults(func=cmd_purge)
    return parser


def make_client(endpoint_url: str | None) -> Any:
    # `AWS_ENDPOINT_URL= make dlq` means "real AWS", not "endpoint ''".
    if os.environ.get("AWS_ENDPOINT_URL") == "":
        del os.environ["AWS_ENDPOINT_URL"]
    return boto3.client("sqs", endpoint_url=endpoint_url or None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        sqs = make_client(getattr(args, "endpoint_url", None))
        queues = Queues(sqs, getattr(args, "queue", DEFAULT_QUEUE), getattr(args, "dlq", DEFAULT_DLQ))
        return int(args.func(queues, args))
    except UsageError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OpsError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except (ClientError, BotoCoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            print("interrupted", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
