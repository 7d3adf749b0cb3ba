"""Who else consumes the queue: `make run` refuses an endpoint whose queue a Lambda reads.

`make run` plays the event source mapping with its own runner. If the AWS
endpoint it reuses already has a real event source mapping on the same queue
(a stack deployed there by `make deploy-localstack`, for instance), that
mapping's function receives `make run`'s messages too: it scores them
against its own database, where the tasks do not exist, so `make run`'s
tasks stay `pending` for good and the messages end up in the DLQ. Two
stacks must not share a queue; the fix is to stop the other stack or give
one of them its own endpoint.

An endpoint without a Lambda API (a plain SQS emulator such as ElasticMQ or
moto's SQS-only server) has no event source mappings: nothing to refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

# Mappings in these states do not poll (AWS's and LocalStack's state names).
_IDLE_STATES = frozenset({"Disabled", "Disabling", "Deleting"})
# Lambda services load lazily on LocalStack: the first call may take seconds.
_CLIENT_CONFIG = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2})


class QueueConsumedError(RuntimeError):
    """Another consumer (a Lambda event source mapping) reads the queue."""


@dataclass(frozen=True)
class Mapping:
    """An active event source mapping, as the refusal names it."""

    uuid: str
    function: str
    state: str


def _function_name(arn: str) -> str:
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    parts = arn.split(":")
    return parts[6] if len(parts) > 6 and parts[5] == "function" else arn


def queue_arn(sqs: Any, queue_name: str) -> str | None:
    """The queue's ARN, or None if the endpoint has no such queue (then nothing reads it)."""
    try:
        url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    except ClientError as err:
        if "NonExistentQueue" in err.response.get("Error", {}).get("Code", ""):
            return None
        raise
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return str(arn)


def active_mappings(lambda_client: Any, source_arn: str) -> list[Mapping] | None:
    """Event source mappings reading `source_arn` that poll; None if there is no Lambda API here."""
    found: list[Mapping] = []
    try:
        for page in lambda_client.get_paginator("list_event_source_mappings").paginate(EventSourceArn=source_arn):
            for m in page.get("EventSourceMappings", []):
                state = str(m.get("State") or "Enabled")
                if state not in _IDLE_STATES:
                    found.append(Mapping(str(m["UUID"]), _function_name(str(m.get("FunctionArn", "?"))), state))
    except (ClientError, BotoCoreError):
        # No Lambda service at this endpoint (unknown operation, 404, service
        # not enabled): nothing there can consume the queue.
        return None
    return found


def refusal(endpoint: str, queue_name: str, mappings: list[Mapping]) -> str:
    listed = "\n".join(f"    mapping {m.uuid} -> function {m.function} ({m.state})" for m in mappings)
    return (
        f"the AWS endpoint {endpoint} already has a Lambda event source mapping on queue {queue_name!r}:\n"
        f"{listed}\n"
        "It would consume this stack's messages (scoring them against its own database), and this stack's tasks "
        "would stay pending. Another stack is deployed there, probably by `make deploy-localstack`. Either stop it:\n"
        "    make deploy-localstack-stop\n"
        "or give `make run` its own endpoint (it starts a LocalStack there if none answers):\n"
        "    AWS_ENDPOINT_URL=http://127.0.0.1:4568 make run"
    )


def ensure_no_other_consumer(
    endpoint: str,
    queue_name: str,
    *,
    client: Callable[[str], Any] | None = None,
) -> list[Mapping] | None:
    """Raise QueueConsumedError if a Lambda event source mapping at `endpoint` reads `queue_name`.

    Returns the (empty) list of mappings found, or None if the endpoint has
    no Lambda API or no such queue. `client` builds a boto3 client by
    service name (tests pass their own).
    """
    make = client or (lambda service: boto3.client(service, endpoint_url=endpoint, config=_CLIENT_CONFIG))
    arn = queue_arn(make("sqs"), queue_name)
    if arn is None:
        return None
    mappings = active_mappings(make("lambda"), arn)
    if mappings:
        raise QueueConsumedError(refusal(endpoint, queue_name, mappings))
    return mappings
