"""The SQS event source mapping that `chalice local` does not have (docs/local-stack.md).

Pollers hand Lambda-shaped batches to the very handler Lambda invokes (`app.score`; the
webhooks queue's to `app.send_webhooks`, issue 22)
and delete only what it did not report in `batchItemFailures`; a timer fires the
reconciler (`app.reconcile`) as EventBridge would.

Run: python -m devstack.runner [--pollers N]   (make run starts it for you)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
from chalice.local import LambdaContext

from toolkit import logs, names

log = logs.get("runner")
Handler = Callable[[dict[str, Any], Any], Any]

DEFAULT_POLLERS = 5  # what Lambda's SQS event source mapping starts with
# Receives wait at most this long, so a stop is seen within about as long (plus
# the batch in hand) although SQS allows 20 s long polls.
POLL_WAIT_CAP_SECONDS = 2
RECEIVE_RETRY_SECONDS = 2.0  # back-off after a receive error
STOP_CHECK_SECONDS = 0.25  # how often the timer thread looks for a stop
# The attributes Lambda passes on (ReceiveMessage's "All" has more).
_LAMBDA_ATTRIBUTES = ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
                      "MessageGroupId", "MessageDeduplicationId", "SequenceNumber", "AWSTraceHeader")


def lambda_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS message as ReceiveMessage returns it -> a Lambda SQS event record."""
    attrs = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {k: attrs[k] for k in _LAMBDA_ATTRIBUTES if k in attrs},
        # Lambda lower-cases the first letter of each field of a message attribute.
        "messageAttributes": {
            name: {"stringValue": a.get("StringValue"), "binaryValue": a.get("BinaryValue"), "stringListValues": [],
                   "binaryListValues": [], "dataType": a["DataType"]}
            for name, a in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_ids(response: Any, records: Sequence[dict[str, Any]]) -> set[str] | None:
    """Message ids to keep, per the partial batch response contract; None keeps the whole
    batch, as Lambda does when an itemIdentifier is missing, empty or not in the batch.
    An empty dict or None means every message succeeded."""
    if response is None or response == {}:
        return set()
    if not isinstance(response, dict):
        return None
    known, keep = {r["messageId"] for r in records}, set()
    for failure in response.get("batchItemFailures") or []:
        item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not item or item not in known:
            return None
        keep.add(item)
    return keep


class Runner:
    def __init__(self, sqs: Any, queue_url: str, handler: Handler, *, reconcile: Handler | None = None,
                 batch_size: int = 10, wait_seconds: int = 20, reconcile_every_seconds: float = 60.0,
                 function_timeout_seconds: int = 30, pollers: int = DEFAULT_POLLERS) -> None:
        if pollers < 1:
            raise ValueError(f"pollers must be at least 1, got {pollers}")
        self._sqs, self._queue_url, self._handler, self._reconcile = sqs, queue_url, handler, reconcile
        self._batch_size, self._wait, self.pollers = min(batch_size, 10), wait_seconds, pollers
        self._reconcile_every, self._timeout_ms = reconcile_every_seconds, function_timeout_seconds * 1000
        self._arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self._region, self._account = self._arn.split(":")[3:5]
        # An Event, so pollers backing off after an error wake up at once.
        self._stopping = threading.Event()
        self._next_reconcile = time.monotonic()

    def stop(self, *_: Any) -> None:
        """Ask the pollers and the timer to finish; also the SIGINT/SIGTERM handler. Safe there:
        the main thread never waits on the Event (it sleeps), so no interrupted Event.wait()
        on that thread holds the lock Event.set() takes."""
        self._stopping.set()

    def poll_once(self, wait_seconds: int | None = None) -> int:
        """Receive one batch and hand it to the handler; return its size."""
        messages = self._sqs.receive_message(
            QueueUrl=self._queue_url, MaxNumberOfMessages=self._batch_size, AttributeNames=["All"],
            MessageAttributeNames=["All"], WaitTimeSeconds=self._wait if wait_seconds is None else wait_seconds,
        ).get("Messages", [])
        if messages:
            self.invoke(messages)
        return len(messages)

    def invoke(self, messages: Sequence[dict[str, Any]]) -> set[str] | None:
        records = [lambda_record(m, self._arn, self._region) for m in messages]
        try:
            response = self._handler({"Records": records}, LambdaContext("score", 256, max_runtime_ms=self._timeout_ms))
        except Exception:  # Lambda would report a function error
            log.exception("handler raised; the whole batch of %d returns after its visibility timeout", len(records))
            return None
        keep = failed_ids(response, records)
        if keep is None:
            log.error("invalid batch response %r; keeping the whole batch", response)
            return None
        done = [r for r in records if r["messageId"] not in keep]
        for start in range(0, len(done), 10):
            self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(done[start : start + 10])])
        return keep

    def maybe_reconcile(self) -> Any:
        """Fire the scheduled handler if it is due; its result (None if not run or failed)."""
        if self._reconcile is None or time.monotonic() < self._next_reconcile:
            return None
        self._next_reconcile = time.monotonic() + self._reconcile_every
        event = {
            "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": self._account, "time": datetime.now(UTC).isoformat(timespec="seconds"), "region": self._region,
            "resources": [f"arn:aws:events:{self._region}:{self._account}:rule/reconcile"], "detail": {},
        }
        try:
            result = self._reconcile(event, LambdaContext("reconcile", 256, max_runtime_ms=self._timeout_ms))
        except Exception:  # the next tick tries again
            log.exception("reconciler failed")
            return None
        log.info("reconciler: %s", json.dumps(result))
        return result

    def _poll_loop(self) -> None:
        # A batch received just before a stop is still handed to the handler:
        # dropping it would hide its messages for a whole visibility timeout.
        while not self._stopping.is_set():
            try:
                self.poll_once(wait_seconds=min(self._wait, POLL_WAIT_CAP_SECONDS))
            except Exception:  # an SQS hiccup: back off and poll again
                log.exception("receive failed; retrying in %.0f s", RECEIVE_RETRY_SECONDS)
                self._stopping.wait(RECEIVE_RETRY_SECONDS)

    def run_forever(self) -> None:
        """The pollers, and the reconciler's timer on this thread, until stop()."""
        # Daemon threads: a handler stuck past its timeout must not keep the process alive
        # after Ctrl-C (its batch comes back after the visibility timeout).
        threads = [threading.Thread(target=self._poll_loop, name=f"poller-{i + 1}", daemon=True) for i in range(self.pollers)]
        for thread in threads:
            thread.start()
        while not self._stopping.is_set():
            self.maybe_reconcile()  # one run at a time, as with reserved concurrency 1 on AWS
            # Short slices, so a stop is noticed soon; floored so a zero interval cannot spin.
            time.sleep(STOP_CHECK_SECONDS if self._reconcile is None else
                       min(STOP_CHECK_SECONDS, max(0.05, self._next_reconcile - time.monotonic())))
        # A poller finishes its receive (<= POLL_WAIT_CAP_SECONDS) and the batch in hand.
        deadline = time.monotonic() + POLL_WAIT_CAP_SECONDS + self._timeout_ms / 1000
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if stuck := [t.name for t in threads if t.is_alive()]:
            log.warning("pollers still busy at exit (their batches return after the visibility timeout): %s", stuck)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queue", default=names.queues().main)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--reconcile-every", type=float, default=60.0, help="seconds between reconciler runs")
    parser.add_argument("--pollers", type=int, default=int(os.environ.get("RUNNER_POLLERS") or DEFAULT_POLLERS),
                        help=f"concurrent pollers, as the event source mapping (default {DEFAULT_POLLERS}, env RUNNER_POLLERS)")
    args = parser.parse_args(argv)
    if args.pollers < 1:
        parser.error("--pollers must be at least 1")
    logs.setup(verbose=True)  # with the time and the poller of each line
    # Before chalicelib reads its settings (on the first batch): each poller and the
    # reconciler hold at most one connection at a time.
    # The webhook sender's pollers (issue 22) hold one more each, and its batch's attempts share them.
    os.environ["DB_POOL_SIZE"] = str(2 * args.pollers + 1)

    import app as chalice_app  # the same module Lambda loads
    from chalicelib.config import WEBHOOK_QUEUE_NAME, batch_size

    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=args.queue)["QueueUrl"]
    runner = Runner(sqs, url, chalice_app.score, reconcile=chalice_app.reconcile, batch_size=args.batch_size or batch_size(),
                    reconcile_every_seconds=args.reconcile_every, pollers=args.pollers)
    # The webhooks' own queue to their own handler (app.send_webhooks), as its event source mapping does.
    hooks_url = sqs.get_queue_url(QueueName=os.environ.get("WEBHOOK_QUEUE_NAME") or WEBHOOK_QUEUE_NAME)["QueueUrl"]
    hooks = Runner(sqs, hooks_url, chalice_app.send_webhooks, batch_size=10, pollers=args.pollers)
    hooks_thread = threading.Thread(target=hooks.run_forever, name="webhooks", daemon=True)

    def stop(*_: Any) -> None:
        runner.stop()
        hooks.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("polling %s and %s with %d pollers each (batch size %d; at most %s database connections)", url, hooks_url,
             runner.pollers, runner._batch_size, os.environ["DB_POOL_SIZE"])
    hooks_thread.start()
    runner.run_forever()
    hooks_thread.join(POLL_WAIT_CAP_SECONDS + 35)
    log.info("stopped")


if __name__ == "__main__":
    main()
