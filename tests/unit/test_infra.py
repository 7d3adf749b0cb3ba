"""The queue definition keeps the design's promises."""

from __future__ import annotations

import json
from pathlib import Path

from toolkit.template import queue_resources

ROOT = Path(__file__).resolve().parents[2]


def test_main_queue_redrives_to_the_dlq_after_three_receives():
    q = queue_resources()
    assert q["ModerationQueue"]["QueueName"] == "moderation"
    policy = q["ModerationQueue"]["RedrivePolicy"]
    assert policy["maxReceiveCount"] == 3
    assert policy["deadLetterTargetArn"] == {"Fn::GetAtt": ["ModerationDLQ", "Arn"]}
    assert q["ModerationDLQ"]["QueueName"] == "moderation_dlq"
    assert q["ModerationDLQ"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert q["ModerationDLQ"]["MessageRetentionPeriod"] >= q["ModerationQueue"]["MessageRetentionPeriod"]
    # DLQs are created first; the webhooks' pair is issue 22's (docs/webhooks.md)
    assert list(q) == ["ModerationDLQ", "WebhookDLQ", "ModerationQueue", "WebhookQueue"]


def test_visibility_timeout_is_at_least_six_times_the_scoring_timeout():
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    timeout = config["lambda_functions"]["score"]["lambda_timeout"]
    assert queue_resources()["ModerationQueue"]["VisibilityTimeout"] >= 6 * timeout
