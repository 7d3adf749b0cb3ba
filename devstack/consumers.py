"""Who else consumes the queue: `make run` refuses an endpoint whose queue a Lambda reads.

`make run` plays the event source mapping with its own runner. If the endpoint it
reuses already has a real mapping on the same queue (a stack deployed there by
`make deploy-localstack`, say), that mapping's function receives `make run`'s
messages too and scores them against its own database, where the tasks do not
exist: they stay `pending` for good and the messages end up in the DLQ. Two
stacks must not share a queue. An endpoint without a Lambda API (a plain SQS
emulator) has no mappings: nothing to refuse.
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
# Lambda loads lazily on LocalStack: the first call may take seconds.
_CLIENT_CONFIG = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 2})


class QueueConsumedError(RuntimeError):
    """Another consumer (a Lambda event source mapping) reads the queue."""


@dataclass(frozen=True)
class Mapping:
    """An active event source mapping, as the refusal names it."""

    uuid: str
    function: str
    state: str


def queue_arn(sqs: Any, queue_name: str) -> str | None:
    """The queue's ARN, or None if the endpoint has no such queue (then nothing reads it)."""
    try:
        url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    except ClientError as err:
        if "NonExistentQueue" in err.response.get("Error", {}).get("Code", ""):
            return None
        raise
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def active_mappings(lambda_client: Any, source_arn: str) -> list[Mapping] | None:
    """Event source mappings reading `source_arn` that poll; None if there is no Lambda API here."""
    try:
        pages = lambda_client.get_paginator("list_event_source_mappings").paginate(EventSourceArn=source_arn)
        mappings = [m for page in pages for m in page.get("EventSourceMappings", [])]
    except (ClientError, BotoCoreError):  # unknown operation, 404, service not enabled: no consumer here
        return None
    # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    return [Mapping(str(m["UUID"]), str(m.get("FunctionArn", "?")).split(":function:")[-1].split(":")[0],
                    str(m.get("State") or "Enabled"))
            for m in mappings if (m.get("State") or "Enabled") not in _IDLE_STATES]


def refusal(endpoint: str, queue_name: str, mappings: list[Mapping]) -> str:
    listed = "\n".join(f"    mapping {m.uuid} -> function {m.function} ({m.state})" for m in mappings)
    return (
        f"the AWS endpoint {endpoint} already has a Lambda event source mapping on queue {queue_name!r}:\n{listed}\n"
        "It would consume this stack's messages (scoring them against its own database), and this stack's tasks "
        "would stay pending. Another stack is deployed there, probably by `make deploy-localstack`. Either stop it:\n"
        "    make deploy-localstack-stop\n"
        "or give `make run` its own endpoint (it starts a LocalStack there if none answers):\n"
        "    AWS_ENDPOINT_URL=http://127.0.0.1:4568 make run"
    )


def ensure_no_other_consumer(endpoint: str, queue_name: str, *,
                             client: Callable[[str], Any] | None = None) -> list[Mapping] | None:
    """Raise QueueConsumedError if a Lambda event source mapping at `endpoint` reads `queue_name`.

    Returns the (empty) list of mappings found, or None if the endpoint has no Lambda
    API or no such queue. `client` builds a boto3 client by service name (tests pass theirs).
    """
    make = client or (lambda service: boto3.client(service, endpoint_url=endpoint, config=_CLIENT_CONFIG))
    arn = queue_arn(make("sqs"), queue_name)
    mappings = None if arn is None else active_mappings(make("lambda"), arn)
    if mappings:
        raise QueueConsumedError(refusal(endpoint, queue_name, mappings))
    return mappings
