"""Create the queues of infra/resources.json on any SQS endpoint, idempotently.

CloudFormation applies resources.json on AWS; locally (LocalStack, moto) this
module reads the same file, so queue names, retention, visibility timeout and
the redrive policy are defined once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.names import RESOURCES_FILE as RESOURCES

# CloudFormation property -> SQS attribute, for the properties we use.
_ATTRIBUTES = {
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "VisibilityTimeout": "VisibilityTimeout",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "DelaySeconds": "DelaySeconds",
}


def queue_resources(path: Path = RESOURCES) -> dict[str, dict[str, Any]]:
    """Logical id -> Properties of every AWS::SQS::Queue, DLQs first."""
    resources = json.loads(path.read_text())["Resources"]
    queues = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"}
    # A queue with a RedrivePolicy needs its DLQ's ARN, so create DLQs first.
    return dict(sorted(queues.items(), key=lambda kv: "RedrivePolicy" in kv[1]))


def ensure_queues(sqs: Any, overrides: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """Create or update every queue; return name -> URL.

    `overrides` (queue name -> SQS attributes) lets tests shorten timeouts
    without a second definition.
    """
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    logical_to_name: dict[str, str] = {}
    for logical_id, props in queue_resources().items():
        name = props["QueueName"]
        logical_to_name[logical_id] = name
        attrs = {sqs_name: str(props[cfn]) for cfn, sqs_name in _ATTRIBUTES.items() if cfn in props}
        if "RedrivePolicy" in props:
            policy = props["RedrivePolicy"]
            target = policy["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attrs["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[logical_to_name[target]], "maxReceiveCount": int(policy["maxReceiveCount"])}
            )
        attrs.update((overrides or {}).get(name, {}))
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        # create_queue refuses changed attributes on an existing queue, so
        # set them separately: re-running converges instead of failing.
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
        urls[name] = url
        arns[name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return urls
