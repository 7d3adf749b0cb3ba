"""Create the queues of infra/resources.json on any SQS endpoint, idempotently.

CloudFormation applies resources.json on AWS; locally (LocalStack, moto) this
module reads the same file, so queue names, retention, visibility timeout and
the redrive policy are defined once.
"""

from __future__ import annotations

import json
from typing import Any

from toolkit.names import queue_resources

# The CloudFormation properties we use; SQS names its attributes the same.
_ATTRIBUTES = ("MessageRetentionPeriod", "VisibilityTimeout", "ReceiveMessageWaitTimeSeconds", "DelaySeconds")


def ensure_queues(sqs: Any, overrides: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """Create or update every queue; return name -> URL. `overrides` (queue name -> SQS
    attributes) lets tests shorten timeouts without a second definition."""
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}  # by logical id, for the redrive policies
    for logical_id, props in queue_resources().items():  # DLQs first: a redrive policy needs its DLQ's ARN
        attrs = {name: str(props[name]) for name in _ATTRIBUTES if name in props}
        if policy := props.get("RedrivePolicy"):
            dlq = arns[policy["deadLetterTargetArn"]["Fn::GetAtt"][0]]
            attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq, "maxReceiveCount": int(policy["maxReceiveCount"])})
        attrs.update((overrides or {}).get(props["QueueName"], {}))
        url = urls[props["QueueName"]] = sqs.create_queue(QueueName=props["QueueName"])["QueueUrl"]
        # create_queue refuses changed attributes on an existing queue, so set them
        # separately: re-running converges instead of failing.
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
        arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return urls
