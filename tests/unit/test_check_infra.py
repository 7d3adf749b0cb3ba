"""infra/check.py: a good template passes, and each rule catches its own breakage;
infra/skipped-checks.md is the list every scanner's skips are held to."""

from __future__ import annotations

import copy
import json
import tomllib
from typing import Any

import pytest

from infra import check
from toolkit import names

FUNCTIONS = ("Score", "APIHandler", "Reconcile", "NoDatabase")
METRICS_ENV = {"STAGE": "dev", "POWERTOOLS_METRICS_NAMESPACE": "AdModeration"}
RETAIN = {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId", "apiKeyId": "$context.identity.apiKeyId", "ip": "$context.identity.sourceIp",
    "method": "$context.httpMethod", "route": "$context.resourcePath", "latency": "$context.responseLatency",
}).replace('}', ',"status":$context.status}')


def lambda_alarm(function: str, metric: str) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "Namespace": "AWS/Lambda",
            "MetricName": metric,
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function}}],
            "Statistic": "Sum",
            "Period": 60,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
        },
    }


def dashboard(functions: tuple[str, ...] = FUNCTIONS) -> dict[str, Any]:
    """A dashboard body as `make package` writes it: Fn::Join of text and the Refs/GetAtts of queues and functions."""
    parts: list[Any] = ['{"widgets":[{"type":"metric","properties":{"metrics":[']
    for fn in functions:
        parts += ['["AWS/Lambda","Errors","FunctionName","', {"Ref": fn}, '"],']
    for queue in ("ModerationQueue", "ModerationDLQ"):
        parts += ['["AWS/SQS","ApproximateNumberOfMessagesVisible","QueueName","', {"Fn::GetAtt": [queue, "QueueName"]}, '"],']
    parts.append('[{"expression":"SEARCH(\'{AdModeration,function,service,stage} MetricName=\\"TasksCompleted\\" '
                 'stage=\\"dev\\"\', \'Sum\', 60)","id":"completed"}]]}}]}')
    return {"Type": "AWS::CloudWatch::Dashboard", "Properties": {"DashboardBody": {"Fn::Join": ["", parts]}}}


def good_template() -> dict[str, Any]:
    """The shape `make package` produces, reduced to what the rules read."""
    db_env = {"Variables": {"DATABASE_SECRET_ARN": {"Ref": "DatabaseSecretArn"}, **METRICS_ENV}}
    template: dict[str, Any] = {
        "Transform": "AWS::Serverless-2016-10-31",
        "Metadata": {"AdModeration": {"DbConnectionBudget": 20, "Stage": "dev"}},
        "Resources": {
            "ModerationDLQ": {
                "Type": "AWS::SQS::Queue",
                **RETAIN,
                "Properties": {"QueueName": "moderation_dlq", "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True},
            },
            "ModerationQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "QueueName": "moderation",
                    "VisibilityTimeout": 180,
                    "MessageRetentionPeriod": 345600,
                    "KmsMasterKeyId": "alias/aws/sqs",
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
            "NoDatabase": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"Environment": {"Variables": dict(METRICS_ENV)}},
            },
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
            "OperatorDashboard": dashboard(),
            "ScoreLogGroup": {"Type": "AWS::Logs::LogGroup", **RETAIN, "Properties": {"RetentionInDays": 30}},
            "AccessLogs": {"Type": "AWS::Logs::LogGroup", **RETAIN, "Properties": {"RetentionInDays": 90}},
            "RestAPI": {
                "Type": "AWS::Serverless::Api",
                "Properties": {"AccessLogSetting": {"DestinationArn": {"Fn::GetAtt": ["AccessLogs", "Arn"]},
                                                    "Format": ACCESS_LOG_FORMAT}},
            },
        },
    }
    for fn in FUNCTIONS:
        for metric in ("Errors", "Throttles"):
            template["Resources"][f"{fn}{metric}Alarm"] = lambda_alarm(fn, metric)
    return template


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
    esm["BatchSize"] = 100  # no batching window
    assert rules(t) == ["batch-size"]


def mapping(t: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = t["Resources"]["Score"]["Properties"]["Events"]["ScoreSqsEventSource"]["Properties"]
    return props


@pytest.mark.parametrize(
    ("size", "window", "ok"),
    [(1, None, True), (10, 0, True), (11, None, False), (11, 0, False), (11, 1, True), (100, 5, True),
     (10000, 300, True), (10001, 5, False), (0, 1, False), (10, 301, False)],
)
def test_batch_size_and_batching_window(size: int, window: int | None, ok: bool):
    t = good_template()
    mapping(t)["BatchSize"] = size
    if window is not None:
        mapping(t)["MaximumBatchingWindowInSeconds"] = window
    assert rules(t) == ([] if ok else ["batch-size"])


def test_a_batch_over_ten_without_a_window_says_what_to_set():
    t = good_template()
    mapping(t)["BatchSize"] = 100
    (v,) = check.check(t)
    assert v.rule == "batch-size"
    assert "BatchSize 100 > 10 needs MaximumBatchingWindowInSeconds >= 1 (it is 0)" in v.message


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_a_function_without_an_errors_or_throttles_alarm(metric: str):
    t = good_template()
    del t["Resources"][f"Reconcile{metric}Alarm"]
    (v,) = check.check(t)
    assert v.rule == "lambda-alarms"
    assert v.message.startswith(f"Reconcile has no alarm on AWS/Lambda {metric}")


def test_an_alarm_on_another_function_or_metric_does_not_count():
    t = good_template()
    t["Resources"]["ScoreErrorsAlarm"]["Properties"]["Dimensions"][0]["Value"] = {"Ref": "APIHandler"}
    t["Resources"]["APIHandlerThrottlesAlarm"]["Properties"]["MetricName"] = "Invocations"
    messages = sorted(v.message for v in check.check(t))
    assert [m.split(" (")[0] for m in messages] == [
        "APIHandler has no alarm on AWS/Lambda Throttles",
        "Score has no alarm on AWS/Lambda Errors",
    ]


def test_an_alarm_may_name_the_function_literally():
    t = good_template()
    t["Resources"]["Score"]["Properties"]["FunctionName"] = "ad-moderation-dev-score"
    t["Resources"]["ScoreErrorsAlarm"]["Properties"]["Dimensions"][0]["Value"] = "ad-moderation-dev-score"
    assert check.check(t) == []


def test_no_dashboard():
    t = good_template()
    del t["Resources"]["OperatorDashboard"]
    (v,) = check.check(t)
    assert v.rule == "dashboard" and v.message.startswith("no AWS::CloudWatch::Dashboard")


def test_a_dashboard_that_leaves_out_a_function_a_queue_or_the_app_metrics():
    t = good_template()
    t["Resources"]["OperatorDashboard"] = dashboard(functions=("Score", "APIHandler", "NoDatabase"))
    parts = t["Resources"]["OperatorDashboard"]["Properties"]["DashboardBody"]["Fn::Join"][1]
    parts[:] = ["some-other-queue" if p == {"Fn::GetAtt": ["ModerationDLQ", "QueueName"]} else p for p in parts]
    parts[-1] = parts[-1].replace("AdModeration", "Other")
    assert sorted(v.message for v in check.check(t)) == [
        "the dashboard does not show function Reconcile",
        "the dashboard does not show queue ModerationDLQ",
        "the dashboard shows none of the app's metrics (namespace AdModeration)",
    ]
    assert set(rules(t)) == {"dashboard"}


def test_a_fn_sub_dashboard_counts_too():
    t = good_template()
    text = check._dashboard_text(t["Resources"]["OperatorDashboard"]["Properties"]["DashboardBody"])
    assert "${Reconcile}" in text and "${ModerationDLQ.QueueName}" in text
    t["Resources"]["OperatorDashboard"]["Properties"]["DashboardBody"] = {"Fn::Sub": [text, {"Stage": "dev"}]}
    assert check.check(t) == []


def test_a_dashboard_may_name_resources_literally():
    t = good_template()
    body = {"widgets": [{"properties": {"metrics": [
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "moderation"],
        ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", "moderation_dlq"],
        *[["AWS/Lambda", "Errors", "FunctionName", f"fn-{fn}"] for fn in FUNCTIONS],
        ["AdModeration", "TasksCompleted", "service", "ad-moderation", "function", "score", "stage", "dev"],
    ]}}]}
    t["Resources"]["OperatorDashboard"]["Properties"]["DashboardBody"] = json.dumps(body)
    for fn in FUNCTIONS:
        t["Resources"][fn]["Properties"]["FunctionName"] = f"fn-{fn}"
    assert check.check(t) == []


def test_functions_must_tag_their_metrics_with_the_packaged_stage():
    t = good_template()
    t["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]["STAGE"] = "prod"
    del t["Resources"]["Score"]["Properties"]["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"]
    messages = sorted(v.message for v in check.check(t))
    assert rules(t) == ["metrics-env", "metrics-env"]
    assert messages[0].startswith("APIHandler: STAGE is 'prod', not the packaged stage 'dev'")
    assert messages[1].startswith("Score: POWERTOOLS_METRICS_NAMESPACE is None, not 'AdModeration'")


def test_active_tracing_needs_the_xray_actions_in_the_role():
    t = good_template()
    t["Resources"]["Score"]["Properties"]["Role"] = {"Fn::GetAtt": ["ScoreRole", "Arn"]}
    t["Resources"]["Score"]["Properties"]["Tracing"] = "Active"
    (v,) = check.check(t)
    assert v.rule == "tracing-permissions"
    assert "xray:PutTelemetryRecords, xray:PutTraceSegments" in v.message
    statements = t["Resources"]["ScoreRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    statements.append(
        {"Effect": "Allow", "Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "Resource": "*"}
    )
    assert check.check(t) == []  # Resource "*" is fine for them: X-Ray has no resource to name


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


def test_the_cli_names_a_missing_alarm_and_a_missing_dashboard(tmp_path, capsys):
    t = good_template()
    # A new function with an Errors alarm but no Throttles alarm, and no dashboard at all.
    t["Resources"]["Migrate"] = {"Type": "AWS::Serverless::Function", "Properties": {"Environment": {"Variables": METRICS_ENV}}}
    t["Resources"]["MigrateErrorsAlarm"] = lambda_alarm("Migrate", "Errors")
    del t["Resources"]["OperatorDashboard"]
    path = tmp_path / "sam.json"
    path.write_text(json.dumps(t))
    assert check.main([str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "FAIL [lambda-alarms] Migrate has no alarm on AWS/Lambda Throttles" in err[0]
    assert err[1].startswith("FAIL [dashboard] no AWS::CloudWatch::Dashboard")
    assert err[2].endswith("2 problem(s)")


def test_queues_must_be_encrypted_explicitly():
    t = good_template()
    del t["Resources"]["ModerationDLQ"]["Properties"]["SqsManagedSseEnabled"]
    (v,) = check.check(t)
    assert v.rule == "queue-encryption" and v.message.startswith("ModerationDLQ")
    t["Resources"]["ModerationDLQ"]["Properties"]["SqsManagedSseEnabled"] = False
    assert rules(t) == ["queue-encryption"]


@pytest.mark.parametrize("resource", ["ModerationDLQ", "ScoreLogGroup", "AccessLogs"])
@pytest.mark.parametrize("policy", ["DeletionPolicy", "UpdateReplacePolicy"])
def test_the_dlq_and_the_log_groups_survive_the_stack(resource: str, policy: str):
    t = good_template()
    t["Resources"][resource][policy] = "Delete"
    (v,) = check.check(t)
    assert v.rule == "retain" and v.message.startswith(resource) and f"{policy}: Retain" in v.message


def test_the_main_queue_may_go_with_the_stack_and_a_log_group_needs_a_retention():
    t = good_template()
    assert "DeletionPolicy" not in t["Resources"]["ModerationQueue"]  # only what ops need afterwards is kept
    del t["Resources"]["ScoreLogGroup"]["Properties"]["RetentionInDays"]
    (v,) = check.check(t)
    assert v.rule == "retain" and "RetentionInDays" in v.message


def test_the_api_needs_a_json_access_log_in_a_log_group_of_the_template():
    t = good_template()
    del t["Resources"]["RestAPI"]["Properties"]["AccessLogSetting"]
    assert rules(t) == ["access-log"]
    t = good_template()
    setting = t["Resources"]["RestAPI"]["Properties"]["AccessLogSetting"]
    setting["Format"] = setting["Format"].replace("$context.identity.apiKeyId", "-")
    (v,) = check.check(t)
    assert v.rule == "access-log" and v.message.endswith("lacks $context.identity.apiKeyId")
    setting["Format"] = ACCESS_LOG_FORMAT
    setting["DestinationArn"] = "arn:aws:logs:eu-west-1:123456789012:log-group:elsewhere"
    assert rules(t) == ["access-log"]


def prod_template() -> dict[str, Any]:
    """The good template as a prod package: functions in the VPC the deploy names, verified TLS."""
    t = good_template()
    t["Metadata"]["AdModeration"]["Stage"] = "prod"
    t["Parameters"] = {"VpcSubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>"},
                       "VpcSecurityGroupIds": {"Type": "List<AWS::EC2::SecurityGroup::Id>"}}
    for fn in FUNCTIONS:
        props = t["Resources"][fn]["Properties"]
        props["Environment"]["Variables"]["STAGE"] = "prod"
        if "DATABASE_SECRET_ARN" in props["Environment"]["Variables"]:
            props["VpcConfig"] = {"SubnetIds": {"Ref": "VpcSubnetIds"}, "SecurityGroupIds": {"Ref": "VpcSecurityGroupIds"}}
            props["Environment"]["Variables"].update(DB_REQUIRE_TLS="true", DB_SSL_ROOT_CERT="chalicelib/certs/db-ca.pem")
    return t


def test_prod_reaches_its_database_privately_and_verified():
    assert check.check(prod_template()) == []
    t = prod_template()
    del t["Resources"]["Score"]["Properties"]["VpcConfig"]
    t["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]["DB_REQUIRE_TLS"] = "false"
    del t["Resources"]["Reconcile"]["Properties"]["Environment"]["Variables"]["DB_SSL_ROOT_CERT"]
    found = sorted((v.rule, v.message.split(":")[0]) for v in check.check(t))
    assert found == [("db-tls", "APIHandler"), ("db-tls", "Reconcile"), ("vpc", "Score")]


def test_prod_vpc_settings_must_be_given_at_deploy_and_not_conditional():
    t = prod_template()
    t["Parameters"]["VpcSubnetIds"]["Default"] = ""
    assert sorted(set(rules(t))) == ["vpc"] and len(rules(t)) == 3  # the three functions that use the database
    t = prod_template()
    vpc = t["Resources"]["Score"]["Properties"]["VpcConfig"]
    t["Resources"]["Score"]["Properties"]["VpcConfig"] = {"Fn::If": ["HasVpc", vpc, {"Ref": "AWS::NoValue"}]}
    assert rules(t) == ["vpc"]


def test_dev_may_run_outside_a_vpc_and_without_tls():
    t = good_template()  # stage dev: no VpcConfig, no DB_REQUIRE_TLS
    assert check.check(t) == []


def _markdown_ids(tool: str) -> set[str]:
    return set(check.skipped_checks(tool))


def test_every_skipped_check_is_in_the_one_list_with_its_reason():
    """pyproject.toml's ruff S ignores and bandit skips are exactly infra/skipped-checks.md's."""
    pyproject = tomllib.loads((names.ROOT / "pyproject.toml").read_text())
    ruff = pyproject["tool"]["ruff"]["lint"]
    assert {i for i in ruff["ignore"] if i.startswith("S")} == _markdown_ids("ruff")
    assert set(pyproject["tool"]["bandit"]["skips"]) == _markdown_ids("bandit")
    text = names.SKIPPED_CHECKS_FILE.read_text()
    for path, ignored in ruff["per-file-ignores"].items():
        if "S" in ignored:
            assert f"`{path}`" in text, f"{path} ignores ruff's S rules: say why in infra/skipped-checks.md"
    assert {"CKV_AWS_27", "CKV_AWS_116"} <= _markdown_ids("checkov")
    for row in (line for line in text.splitlines() if line.startswith("| `")):
        assert len([c for c in row.split("|") if c.strip()]) == 3, row  # id, what it flags, why


def test_checkov_is_run_with_the_lists_skips():
    command = check.checkov_command(names.ROOT / "build" / "package" / "sam.json")
    assert command[command.index("--skip-check") + 1].split(",") == check.skipped_checks("checkov")
    assert "--skip-download" in command  # no network
