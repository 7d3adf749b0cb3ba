"""infra/check.py: a good template passes, and each rule catches its own breakage."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from infra import check


def good_template() -> dict[str, Any]:
    """The shape `make package` produces, reduced to what the rules read."""
    db_env = {"Variables": {"DATABASE_SECRET_ARN": {"Ref": "DatabaseSecretArn"}}}
    return {
        "Transform": "AWS::Serverless-2016-10-31",
        "Metadata": {"AdModeration": {"DbConnectionBudget": 20}},
        "Resources": {
            "ModerationDLQ": {
                "Type": "AWS::SQS::Queue",
                "Properties": {"QueueName": "moderation_dlq", "MessageRetentionPeriod": 1209600},
            },
            "ModerationQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "QueueName": "moderation",
                    "VisibilityTimeout": 180,
                    "MessageRetentionPeriod": 345600,
                    "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": ["ModerationDLQ", "Arn"]}, "maxReceiveCount": 3},
                },
            },
            "Score": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "Timeout": 30,
                    "Environment": copy.deepcopy(db_env),
                    "Events": {
                        "ScoreSqsEventSource": {
                            "Type": "SQS",
                            "Properties": {
                                "Queue": {"Fn::GetAtt": ["ModerationQueue", "Arn"]},
                                "BatchSize": 10,
                                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                                "ScalingConfig": {"MaximumConcurrency": 5},
                            },
                        }
                    },
                },
            },
            "APIHandler": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"Timeout": 10, "ReservedConcurrentExecutions": 10, "Environment": copy.deepcopy(db_env)},
            },
            "Reconcile": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"ReservedConcurrentExecutions": 1, "Environment": copy.deepcopy(db_env)},
            },
            "NoDatabase": {"Type": "AWS::Serverless::Function", "Properties": {}},
            "ScoreRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Policies": [
                        {
                            "PolicyName": "ScoreRolePolicy",
                            "PolicyDocument": {
                                "Statement": [
                                    {
                                        "Effect": "Allow",
                                        "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                                        "Resource": {"Fn::GetAtt": ["ModerationQueue", "Arn"]},
                                    },
                                    {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"},
                                ]
                            },
                        }
                    ]
                },
            },
        },
    }


def rules(template: dict[str, Any], budget: int | None = None) -> list[str]:
    return [v.rule for v in check.check(template, budget)]


def test_the_good_template_passes():
    assert check.check(good_template()) == []


def test_visibility_timeout_below_six_times_the_function_timeout():
    t = good_template()
    t["Resources"]["ModerationQueue"]["Properties"]["VisibilityTimeout"] = 179
    (v,) = check.check(t)
    assert v.rule == "visibility-timeout" and "179 s < 6 x Score Timeout 30 s = 180 s" in v.message


def test_visibility_timeout_defaults_count():
    t = good_template()
    del t["Resources"]["ModerationQueue"]["Properties"]["VisibilityTimeout"]  # SQS default: 30 s
    assert rules(t) == ["visibility-timeout"]


def test_mapping_without_report_batch_item_failures():
    t = good_template()
    del t["Resources"]["Score"]["Properties"]["Events"]["ScoreSqsEventSource"]["Properties"]["FunctionResponseTypes"]
    (v,) = check.check(t)
    assert v.rule == "partial-batch" and "Score.Events.ScoreSqsEventSource" in v.message


def test_main_queue_without_redrive_policy():
    t = good_template()
    del t["Resources"]["ModerationQueue"]["Properties"]["RedrivePolicy"]
    assert rules(t) == ["redrive"]


def test_dlq_keeping_messages_for_less_time_than_the_main_queue():
    t = good_template()
    t["Resources"]["ModerationDLQ"]["Properties"]["MessageRetentionPeriod"] = 3600
    (v,) = check.check(t)
    assert v.rule == "dlq-retention" and "3600 s < ModerationQueue's 345600 s" in v.message


def test_connections_over_the_budget():
    t = good_template()
    t["Resources"]["APIHandler"]["Properties"]["ReservedConcurrentExecutions"] = 15  # 5 + 15 + 1 = 21
    (v,) = check.check(t)
    assert v.rule == "connection-budget" and "up to 21 PostgreSQL connections" in v.message and "budget 20" in v.message
    assert rules(good_template(), budget=15) == ["connection-budget"]  # 16 > 15
    assert rules(good_template(), budget=16) == []


def test_unbounded_scoring_or_api_concurrency():
    t = good_template()
    del t["Resources"]["Score"]["Properties"]["Events"]["ScoreSqsEventSource"]["Properties"]["ScalingConfig"]
    (v,) = check.check(t)
    assert v.rule == "connection-budget" and "MaximumConcurrency" in v.message
    t = good_template()
    del t["Resources"]["APIHandler"]["Properties"]["ReservedConcurrentExecutions"]
    (v,) = check.check(t)
    assert v.rule == "connection-budget" and "APIHandler" in v.message and "unbounded" in v.message


@pytest.mark.parametrize("action", ["*", "sqs:*", "sqs:Get*", ["sqs:SendMessage", "logs:*"]])
def test_wildcard_actions(action: Any):
    t = good_template()
    t["Resources"]["ScoreRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]["Action"] = action
    assert rules(t) == ["iam-wildcard-action"]


def test_not_action_and_star_resources():
    t = good_template()
    stmt = t["Resources"]["ScoreRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    stmt["Resource"] = "*"
    (v,) = check.check(t)
    assert v.rule == "iam-wildcard-resource" and "sqs:ReceiveMessage" in v.message
    t = good_template()
    t["Resources"]["ExtraPolicy"] = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyDocument": {"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "arn:aws:s3:::x"}]}
        },
    }
    assert rules(t) == ["iam-wildcard-action"]


def test_a_transformed_template_is_checked_too():
    """After the SAM transform the mapping is an AWS::Lambda::EventSourceMapping resource."""
    t = good_template()
    for name in ("Score", "APIHandler", "Reconcile", "NoDatabase"):
        t["Resources"][name]["Type"] = "AWS::Lambda::Function"
    event = t["Resources"]["Score"]["Properties"].pop("Events")["ScoreSqsEventSource"]["Properties"]
    esm = {"EventSourceArn": event["Queue"], "FunctionName": {"Ref": "Score"}, "ScalingConfig": event["ScalingConfig"]}
    t["Resources"]["ScoreScoreSqsEventSource"] = {"Type": "AWS::Lambda::EventSourceMapping", "Properties": esm}
    assert rules(t) == ["partial-batch"]
    esm["FunctionResponseTypes"] = ["ReportBatchItemFailures"]
    assert rules(t) == []


def test_the_cli_exits_non_zero_with_one_line_per_problem(tmp_path, capsys):
    t = good_template()
    t["Resources"]["ModerationQueue"]["Properties"]["VisibilityTimeout"] = 10
    del t["Resources"]["Score"]["Properties"]["Events"]["ScoreSqsEventSource"]["Properties"]["FunctionResponseTypes"]
    path = tmp_path / "sam.json"
    path.write_text(json.dumps(t))
    assert check.main([str(path)]) == 1
    err = capsys.readouterr().err
    assert "FAIL [partial-batch]" in err and "FAIL [visibility-timeout]" in err and "2 problem(s)" in err
    path.write_text(json.dumps(good_template()))
    assert check.main([str(path)]) == 0
    assert check.main([str(tmp_path / "missing.json")]) == 2
