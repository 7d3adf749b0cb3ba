"""Look at, redrive and purge the dead-letter queue (docs/operations/dlq.md).

    python -m ops.dlq list [--limit N] [--json]
    python -m ops.dlq show <message-id-prefix | task:ID>
    python -m ops.dlq redrive (--all | --task-id N ... | --message-id ID ...) [--yes]
    python -m ops.dlq purge [--yes]

Common options, before or after the command: --endpoint-url, --queue, --dlq (default: the
queues of infra/resources.json), --local (make run's LocalStack, or the local endpoint
AWS_ENDPOINT_URL names, with LocalStack's credentials unless set; an empty AWS_ENDPOINT_URL means
AWS). The DLQ holds the scorer's envelopes and raw "exhausted" task messages
(both read by chalicelib.domain.tasks.read_body); either goes back to the main queue unchanged.
Exit codes: 0 ok, 1 error or aborted, 2 usage (or --yes needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.tasks import read_body
from chalicelib.queue import SQS_BATCH, chunks
from toolkit import logs, names

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
PEEK_VISIBILITY_S = 30  # a peek hides messages this long if we die before making them visible again
MOVE_VISIBILITY_S = 120  # messages being moved one by one stay hidden meanwhile
# Long polling asks every SQS server; a short poll may miss messages in a small queue.
RECEIVE_WAIT_S = 1
EXHAUSTED = "exhausted"
# How an endpoint says "I do not implement this action" (moto raises NotImplementedError instead).
UNSUPPORTED_CODES = frozenset({"UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", "InvalidAction",
                               "NotImplemented", "UnknownOperationException"})

log = logs.get("dlq")


class OpsError(Exception):
    """Something went wrong; the message says what."""

    exit_code = EXIT_ERROR


class UsageError(OpsError):
    """Bad arguments, or a confirmation that cannot be asked for."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class DlqMessage:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    message_attributes: dict[str, Any]
    kind: str  # the envelope's error_kind, or "exhausted" for a raw task message
    task_id: int | None
    error: str
    retry_count: int | None  # the attempt the scorer parked it on
    receive_count: int | None  # the DLQ's ApproximateReceiveCount: each peek (this one too) adds one
    sent_ms: int

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> DlqMessage:
        body, attributes = str(raw.get("Body", "")), dict(raw.get("Attributes") or {})
        read = read_body(body)
        if read.envelope is not None:
            kind, error = str(read.envelope.get("error_kind") or "unknown"), str(read.envelope.get("error"))
        elif isinstance(read.message, dict) and "task_id" in read.message:
            kind, error = EXHAUSTED, "exhausted retries (see task)"
        else:  # only SQS redrive puts a non-envelope here; the body was never a valid task
            kind, error = EXHAUSTED, "exhausted retries (body is not a task message)"
        retries = (read.envelope or {}).get("retry_count")
        receives, sent = attributes.get("ApproximateReceiveCount", ""), attributes.get("SentTimestamp", "")
        return cls(str(raw["MessageId"]), str(raw["ReceiptHandle"]), body, attributes, dict(raw.get("MessageAttributes") or {}),
                   kind, read.task_id, error, retries if type(retries) is int else None,
                   int(receives) if receives.isdigit() else None, int(sent) if sent.isdigit() else 0)

    @property
    def sent_at(self) -> str:
        return _utc(self.sent_ms) if self.sent_ms else "-"

    def as_json(self) -> dict[str, Any]:
        keys = ("message_id", "task_id", "kind", "error", "retry_count", "receive_count", "sent_at")
        return {**{k: getattr(self, k) for k in keys}, "dead_letter_source_arn": self.attributes.get("DeadLetterQueueSourceArn")}


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class Queues:
    """The main queue and its DLQ on one SQS endpoint."""

    def __init__(self, sqs: Any, queue: str, dlq: str) -> None:
        self.sqs, self.queue_name, self.dlq_name = sqs, queue, dlq
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

    def arn(self, name: str) -> str:
        return str(self.sqs.get_queue_attributes(QueueUrl=self.url(name), AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])

    def counts(self) -> tuple[int, int]:
        """(visible, in flight) messages of the DLQ, as SQS approximates them."""
        keys = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.url(self.dlq_name), AttributeNames=keys)["Attributes"]
        return int(attrs.get(keys[0], 0)), int(attrs.get(keys[1], 0))

    def receive(self, visibility: int) -> list[DlqMessage]:
        resp = self.sqs.receive_message(QueueUrl=self.url(self.dlq_name), MaxNumberOfMessages=SQS_BATCH,
                                        VisibilityTimeout=visibility, WaitTimeSeconds=RECEIVE_WAIT_S,
                                        AttributeNames=["All"], MessageAttributeNames=["All"])
        return [DlqMessage.from_sqs(m) for m in resp.get("Messages", [])]

    def release(self, messages: Iterable[DlqMessage]) -> None:
        """Make received messages visible again at once."""
        for chunk in chunks(list(messages)):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0} for i, m in enumerate(chunk)]
            resp = self.sqs.change_message_visibility_batch(QueueUrl=self.url(self.dlq_name), Entries=entries)
            for failed in resp.get("Failed", []):
                log.warning("could not make %s visible again (%s); it reappears by itself within %d s",
                            chunk[int(failed["Id"])].message_id, failed.get("Code"), PEEK_VISIBILITY_S)

    def peek(self, limit: int | None = None) -> tuple[list[DlqMessage], int]:
        """Every visible DLQ message (up to `limit`), oldest first, without consuming any: received
        until a receive brings nothing new or as many as SQS counted, then all made visible again.
        Also how many others are in flight (counted first: our own peeks would count afterwards)."""
        expected, in_flight = self.counts()
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
        return sorted(seen.values(), key=lambda m: (m.sent_ms, m.message_id))[:limit], in_flight

    def move(self, message: DlqMessage) -> bool:
        """Send the body unchanged (with its message attributes) to the main queue, then
        delete it from the DLQ; False if it was sent but could not be deleted."""
        attrs = {name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
                 for name, value in message.message_attributes.items()}
        self.sqs.send_message(QueueUrl=self.url(self.queue_name), MessageBody=message.body,
                              **({"MessageAttributes": attrs} if attrs else {}))
        entries = [{"Id": "0", "ReceiptHandle": message.receipt_handle}]
        return not self.sqs.delete_message_batch(QueueUrl=self.url(self.dlq_name), Entries=entries).get("Failed")


def is_unsupported(err: BaseException) -> bool:
    """True if the endpoint does not implement the action (LocalStack/moto/old emulators)."""
    if isinstance(err, ClientError):
        return _code(err) in UNSUPPORTED_CODES or err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 501
    return isinstance(err, NotImplementedError)


def print_table(messages: Sequence[DlqMessage]) -> None:
    rows = [("MESSAGE", "TASK", "KIND", "ERROR", "RETRIES", "RECEIVES", "SENT")]
    rows += [(m.message_id[:8], _dash(m.task_id), m.kind, textwrap.shorten(m.error, 60, placeholder="..."),
              _dash(m.retry_count), _dash(m.receive_count), m.sent_at) for m in messages]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def confirm(prompt: str, yes: bool, *, expect: str | None = None) -> None:
    """Ask on the terminal unless --yes; without a terminal, --yes is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on; re-run with --yes")
    answer = input(f"{prompt}\nType the queue name ({expect}) to confirm: " if expect else f"{prompt} [y/N] ").strip()
    if (answer != expect) if expect else (answer.lower() not in ("y", "yes")):
        raise OpsError("aborted, nothing changed")


def _matching(messages: Sequence[DlqMessage], target: str) -> list[DlqMessage]:
    """The messages of `task:ID`, or those whose id starts with `target`."""
    if not target.startswith("task:"):
        return [m for m in messages if m.message_id.startswith(target)]
    try:
        task_id = int(target.removeprefix("task:"))
    except ValueError as err:
        raise UsageError(f"not a task id: {target!r} (use task:<integer>)") from err
    return [m for m in messages if m.task_id == task_id]


def cmd_list(q: Queues, args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    messages, in_flight = q.peek(args.limit)
    if args.json:
        for m in messages:
            print(json.dumps(m.as_json(), ensure_ascii=False))
    elif messages:
        print_table(messages)
    kinds = Counter(m.kind for m in messages)
    summary = f"{len(messages)} message{'s' if len(messages) != 1 else ''} in {q.dlq_name}"
    summary += " (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")" if kinds else ""
    summary += f", limited to {args.limit}" if len(messages) == args.limit else ""
    summary += f"; {in_flight} more in flight (received by someone else), not listed" if in_flight else ""
    (log.info if args.json else print)(summary)  # with --json, stdout holds only JSON lines
    return EXIT_OK


def cmd_show(q: Queues, args: argparse.Namespace) -> int:
    if not args.target:
        raise UsageError("give a message id (prefix) or task:<id>")
    matches = _matching(q.peek()[0], args.target)
    if not matches:
        raise OpsError(f"no message in {q.dlq_name} matches {args.target!r}")
    for i, m in enumerate(matches):
        print(("\n" if i else "") + f"MessageId: {m.message_id}")
        print(f"Kind: {m.kind}   Task: {_dash(m.task_id)}   Retries: {_dash(m.retry_count)}\nError: {m.error}\nAttributes:")
        for name, value in sorted(m.attributes.items()):
            print(f"  {name}: {value}" + (f"  ({_utc(int(value))})" if name.endswith("Timestamp") and value.isdigit() else ""))
        for name, attr in sorted(m.message_attributes.items()):
            print(f"  (message attribute) {name}: {attr.get('StringValue', attr.get('BinaryValue'))}")
        try:
            print("Body:\n" + json.dumps(json.loads(m.body), indent=2, ensure_ascii=False))
        except ValueError:
            print("Body:\n" + m.body)
    return EXIT_OK


def _move_task(q: Queues) -> int | None:
    """StartMessageMoveTask + progress; None if the endpoint does not support it. Always with a
    destination: "back to the source" only works for messages SQS itself moved to the DLQ (they carry
    DeadLetterQueueSourceArn); the scorer's envelopes have none, and a task without one fails on them."""
    dlq_arn = q.arn(q.dlq_name)
    try:
        handle = q.sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=q.arn(q.queue_name))["TaskHandle"]
    except (ClientError, NotImplementedError) as err:
        if not is_unsupported(err):
            raise
        print(f"StartMessageMoveTask is not supported by this endpoint ({err}); moving messages one by one")
        return None
    print(f"started message move task {q.dlq_name} -> {q.queue_name}")
    task: dict[str, Any] = {}
    last = ""
    try:
        while task.get("Status") not in ("COMPLETED", "FAILED", "CANCELLED"):
            time.sleep(0.5 if last else 0)
            results = q.sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10).get("Results", [])
            # AWS returns TaskHandle only while the task runs; the newest task comes first.
            task = next((t for t in results if t.get("TaskHandle") == handle), results[0] if results else {"Status": "?"})
            moved, total = task.get("ApproximateNumberOfMessagesMoved", 0), task.get("ApproximateNumberOfMessagesToMove", "?")
            if (line := f"{task['Status'].lower()}: moved {moved}/{total}") != last:
                print(line, flush=True)
                last = line
    except KeyboardInterrupt:
        log.warning("stopped watching; the move task goes on: aws sqs list-message-move-tasks --source-arn %s", dlq_arn)
        raise
    if task["Status"] == "COMPLETED":
        print(f"redrive complete: moved {moved} message(s) from {q.dlq_name} to {q.queue_name}")
        return EXIT_OK
    log.error("redrive %s: moved %s/%s; reason: %s", task["Status"], moved, total, task.get("FailureReason", "no reason given"))
    return EXIT_ERROR


def _move_one_by_one(q: Queues, wanted: set[str]) -> int:
    """Receive -> send to the main queue -> delete (only once the copy is there), for the `wanted`
    message ids. The others stay hidden until the end, so each receive brings new ones."""
    remaining, held, failed = set(wanted), dict[str, DlqMessage](), dict[str, str]()
    try:
        while remaining and (batch := [m for m in q.receive(MOVE_VISIBILITY_S) if m.message_id not in held]):
            for m in batch:
                try:
                    if m.message_id not in remaining:
                        held[m.message_id] = m
                    elif not q.move(m):
                        log.warning("%s was sent but could not be deleted from the DLQ; it may be redriven twice", m.message_id)
                except ClientError as err:
                    failed[m.message_id], held[m.message_id] = str(err), m
                if m.message_id in remaining and m.message_id not in held:
                    remaining.discard(m.message_id)
                    print(f"moved {len(wanted) - len(remaining)}/{len(wanted)}: {m.message_id} (task {_dash(m.task_id)})")
    finally:
        q.release(held.values())
    failed.update({i: "not received again (in flight elsewhere, or already gone)" for i in remaining - set(failed)})
    moved = len(wanted) - len(remaining)
    print(f"redrive complete: moved {moved} of {len(wanted)} selected message(s) from {q.dlq_name} to {q.queue_name}")
    for message_id, error in failed.items():
        log.error("could not send %s: %s (left in the DLQ)", message_id, error)
    return EXIT_ERROR if failed else EXIT_OK


def cmd_redrive(q: Queues, args: argparse.Namespace) -> int:
    if args.all:
        visible, in_flight = q.counts()
        if visible == 0:
            print(f"nothing to redrive: {q.dlq_name} has no visible messages ({in_flight} in flight)")
            return EXIT_OK
        confirm(f"Redrive all ~{visible} message(s) from {q.dlq_name} to {q.queue_name}?", args.yes)
        result = _move_task(q)
        return result if result is not None else _move_one_by_one(q, {m.message_id for m in q.peek()[0]})
    messages, chosen, problems = q.peek()[0], set[str](), list[str]()
    for task_id in args.task_id or []:
        found = _matching(messages, f"task:{task_id}")
        problems += [] if found else [f"no message for task {task_id}"]
        chosen.update(m.message_id for m in found)
    for prefix in args.message_id or []:
        found = _matching(messages, prefix)
        problems += [] if len(found) == 1 else [f"{len(found)} messages with an id starting {prefix!r} (need one)"]
        chosen.update(m.message_id for m in found)
    if problems:
        raise OpsError("nothing redriven: " + "; ".join(problems))
    print_table(selected := [m for m in messages if m.message_id in chosen])
    confirm(f"Redrive these {len(selected)} message(s) to {q.queue_name}?", args.yes)
    return _move_one_by_one(q, chosen)


def cmd_purge(q: Queues, args: argparse.Namespace) -> int:
    total = sum(q.counts())
    confirm(f"Purge {q.dlq_name}: delete ~{total} message(s) for good?", args.yes, expect=q.dlq_name)
    try:
        q.sqs.purge_queue(QueueUrl=q.url(q.dlq_name))
    except ClientError as err:
        if "PurgeQueueInProgress" in _code(err):
            raise OpsError(f"{q.dlq_name} was purged less than 60 s ago; try again in a minute") from err
        raise
    print(f"purged {q.dlq_name} (~{total} message(s); SQS may take up to 60 s to finish)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    # The common options work before or after the command; SUPPRESS keeps a
    # subcommand's unset option from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--endpoint-url", default=argparse.SUPPRESS, help="SQS endpoint (default: $AWS_ENDPOINT_URL, else AWS)")
    common.add_argument("--queue", default=argparse.SUPPRESS, help=f"main queue name (default {names.queues().main})")
    common.add_argument("--dlq", default=argparse.SUPPRESS, help=f"dead-letter queue name (default {names.queues().dlq})")
    common.add_argument("--local", action="store_true", default=argparse.SUPPRESS,
                        help=f"make run's LocalStack ({names.RUN_ENDPOINT}, test credentials) unless AWS_ENDPOINT_URL is set")
    parser = argparse.ArgumentParser(prog="python -m ops.dlq", parents=[common],
                                     description="Inspect, redrive and purge the moderation dead-letter queue.")
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
    logs.setup()
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    endpoint_url = getattr(args, "endpoint_url", None)
    if getattr(args, "local", False) and os.environ.get("AWS_ENDPOINT_URL") != "":
        # A local stack (make run's, or whichever AWS_ENDPOINT_URL names) takes
        # LocalStack's credentials and region unless the caller gave their own.
        os.environ.update({k: v for k, v in names.local_aws_env(names.RUN_ENDPOINT).items() if k not in os.environ})
    try:
        queues = Queues(make_client(endpoint_url), getattr(args, "queue", names.queues().main),
                        getattr(args, "dlq", names.queues().dlq))
        return int(args.func(queues, args))
    except (OpsError, ClientError, BotoCoreError) as err:
        log.error("%s", err)
        return getattr(err, "exit_code", EXIT_ERROR)
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
