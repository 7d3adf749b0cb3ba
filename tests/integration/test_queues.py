"""toolkit/template.py creates what resources.json says, idempotently."""

from __future__ import annotations

import json

from toolkit.template import ensure_queues


def test_queues_exist_with_redrive_policy_and_rerun_is_safe(sqs):
    urls = ensure_queues(sqs)  # second run (the fixture ran it once)
    attrs = sqs.get_queue_attributes(QueueUrl=urls["moderation"], AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=urls["moderation_dlq"], AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    assert json.loads(attrs["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}
    assert attrs["VisibilityTimeout"] == "180"
    dlq = sqs.get_queue_attributes(QueueUrl=urls["moderation_dlq"], AttributeNames=["MessageRetentionPeriod"])
    assert dlq["Attributes"]["MessageRetentionPeriod"] == "1209600"


def test_overrides_change_attributes_without_a_second_definition(sqs):
    urls = ensure_queues(sqs, overrides={"moderation": {"VisibilityTimeout": "7"}})
    attrs = sqs.get_queue_attributes(QueueUrl=urls["moderation"], AttributeNames=["VisibilityTimeout"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "7"
