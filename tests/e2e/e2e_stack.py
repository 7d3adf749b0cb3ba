"""The `make run` stack for end-to-end tests: devstack.stack, its log in the test's temp dir."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import boto3
import pytest

from devstack.stack import RunningStack
from devstack.stack import make_run as start_make_run
from tests.helpers import execute
from toolkit import names

Stack = RunningStack


@contextmanager
def make_run(tmp_path_factory: pytest.TempPathFactory, extra_env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """`make run` on its own ports and state dir, its reconciler every 5 s instead of every minute."""
    with start_make_run(log=tmp_path_factory.mktemp("log") / "make-run.log", extra_env=extra_env,
                        extra_args=("--reconcile-every", "5")) as stack:
        yield stack


def http(method: str, url: str, data: bytes | None = None, *, key: str | None = None) -> tuple[int, dict]:
    """Status and JSON body; `key` is the x-api-key (make run enforces keys as the deployed API does)."""
    headers = {"Content-Type": "application/json", **({"x-api-key": key} if key else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class SharedStack(Protocol):
    """What settle() needs of a session's stack: `make run`'s (Stack) or the deployed one (tests/e2e/deployed_stack.py)."""

    @property
    def endpoint(self) -> str: ...
    @property
    def database_url(self) -> str: ...


def settle(stack: SharedStack, timeout: float = 60) -> None:
    """Leave a shared stack as the next module expects it: no webhook endpoints (the contract fuzz
    registers dozens, at whatever addresses it generates, and every completion is delivered to each),
    every queued task finished, the ads a test closed reopened, the DLQ empty (a module that
    parks messages there must not turn the next one's /health/pipeline degraded or its DLQ counts
    wrong)."""
    # First, so the tasks still finishing publish to no one; their queued deliveries are dropped
    # when received (the sender finds no delivery), with their attempts and the endpoints.
    execute(stack.database_url, "DELETE FROM webhook_endpoints")
    creds = names.LOCAL_CREDENTIALS
    sqs = boto3.client("sqs", endpoint_url=stack.endpoint, region_name=creds["AWS_DEFAULT_REGION"],
                       aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
    queues = names.queues()
    queue_url = sqs.get_queue_url(QueueName=queues.main)["QueueUrl"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        if attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0":
            break
        time.sleep(0.5)
    # Drained, not purged: SQS refuses a second purge of a queue within 60 s.
    dlq_url = sqs.get_queue_url(QueueName=queues.dlq)["QueueUrl"]
    while messages := sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message_batch(QueueUrl=dlq_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
    execute(stack.database_url, "UPDATE advertisements SET is_closed = false WHERE is_closed")
