"""`make run` refuses an endpoint where a Lambda event source mapping reads its queue.

That mapping (a stack deployed by `make deploy-localstack`, say) would take our
messages and score them against its own database, where the tasks do not exist.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _function(arn: str) -> str:
    parts = arn.split(":")  # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    return parts[6] if len(parts) > 6 else arn


def ensure_no_other_consumer(endpoint: str, queue_name: str, *,
                             client: Callable[[str], Any] | None = None) -> list[dict[str, Any]] | None:
    """Raise QueueConsumedError if a Lambda event source mapping at `endpoint` reads `queue_name`.

    Returns the (empty) list of polling mappings, or None if the endpoint has no such
    queue or no Lambda API. `client` builds a boto3 client by service name (tests pass theirs).
    """
    make = client or (lambda service: boto3.client(service, endpoint_url=endpoint, config=_CLIENT_CONFIG))
    sqs = make("sqs")
    try:
        url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    except ClientError as err:
        if "NonExistentQueue" in err.response.get("Error", {}).get("Code", ""):
            return None  # nothing reads a queue that does not exist
        raise
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    try:
        pages = make("lambda").get_paginator("list_event_source_mappings").paginate(EventSourceArn=arn)
        mappings = [m for page in pages for m in page.get("EventSourceMappings", [])]
    except (ClientError, BotoCoreError):  # unknown operation, 404, service not enabled: no consumer here
        return None
    polling = [m for m in mappings if (m.get("State") or "Enabled") not in _IDLE_STATES]
    if polling:
        listed = "\n".join(f"    mapping {m['UUID']} -> function {_function(m.get('FunctionArn', '?'))} "
                           f"({m.get('State') or 'Enabled'})" for m in polling)
        raise QueueConsumedError(
            f"the AWS endpoint {endpoint} already has a Lambda event source mapping on queue {queue_name!r}:\n{listed}\n"
            "It would consume this stack's messages (scoring them against its own database), and this stack's tasks "
            "would stay pending. Another stack is deployed there, probably by `make deploy-localstack`. Either stop it:\n"
            "    make deploy-localstack-stop\n"
            "or give `make run` its own endpoint (it starts a LocalStack there if none answers):\n"
            "    AWS_ENDPOINT_URL=http://127.0.0.1:4568 make run")
    return polling
