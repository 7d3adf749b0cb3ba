"""`make package` for real: `chalice package` + infra/package.py, then the
checks `make check-infra` runs (infra/check.py, cfn-lint and checkov, on the
dev and the prod package), and the SAM transform CloudFormation will apply, on
the output."""

from __future__ import annotations

import json
import marshal
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra import check
from infra.package import PackageError, package
from tests.helpers import Ca, pem

ROOT = Path(__file__).resolve().parents[2]
STAGES = json.loads((ROOT / "infra" / "stages.json").read_text())
FUNCTIONS = ("APIHandler", "Score", "Reconcile", "Migrate", "SendWebhooks")  # SendWebhooks: issue 22
# What the app emits (Powertools Metrics, embedded metric format): the dashboard is built on exactly these.
APP_METRICS = ("TasksSubmitted", "TasksCompleted", "TasksRetried", "TasksSentToDLQ", "TasksResent", "BatchSize",
               "ScoringLatency", "SubmitToCompletedLatency", "TasksFailed")
ERROR_KINDS = ("permanent", "transient", "stuck")
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")
# What AWS accepts for a zip uploaded through S3.
MAX_ZIP_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("package") / "dev"
    info = package("dev", out)
    info["sam"] = json.loads(info["template"].read_text())
    return info


@pytest.fixture(scope="module")
def ca_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the prod package ships for DB_REQUIRE_TLS. The RDS bundle needs a network; any CA will do."""
    path = tmp_path_factory.mktemp("ca") / "bundle.pem"
    path.write_bytes(pem(Ca.new("test database CA").cert))
    return path


@pytest.fixture(scope="module")
def packaged_prod(tmp_path_factory: pytest.TempPathFactory, ca_bundle: Path) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DB_CA_BUNDLE", str(ca_bundle))
        started = time.monotonic()
        info = package("prod", tmp_path_factory.mktemp("package") / "prod")
        info["build_seconds"] = time.monotonic() - started
    info["sam"] = json.loads(info["template"].read_text())
    return info


def sam_transform(template: dict[str, Any]) -> dict[str, Any]:
    """The AWS::Serverless-2016-10-31 transform, as CloudFormation applies it."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    template = json.loads(json.dumps(template))
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://artifacts/deployment.zip"  # what `cloudformation package` writes
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "eu-west-1"
    try:
        return transform(template, {}, NoManagedPolicies())
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved


def test_the_zip_ships_the_app_its_dependencies_and_the_migrations(packaged: dict[str, Any], tmp_path: Path):
    assert packaged["zip_bytes"] < MAX_ZIP_BYTES
    with zipfile.ZipFile(packaged["zip"]) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path)
    assert {"app.py", "chalicelib/operations/deploy_migrations.py", "chalicelib/artifacts/model.json"} <= names
    assert any(n.startswith("psycopg2/") for n in names) and any(n.startswith("yoyo/") for n in names)
    # Tooling never ships.
    assert not any(n.startswith(("devstack/", "infra/", "tests/", "training/", "migrations/")) for n in names)
    from chalicelib.operations.deploy_migrations import migrations_hash, sql_files

    shipped = sql_files(tmp_path / "chalicelib" / "migrations_sql")
    assert [p.name for p in shipped] == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    for p in shipped:
        assert p.read_bytes() == (ROOT / "migrations" / p.name).read_bytes()
    custom = packaged["sam"]["Resources"]["DatabaseMigrations"]["Properties"]
    assert custom["MigrationsHash"] == migrations_hash(ROOT / "migrations")


def test_the_zip_ships_bytecode_that_a_cold_start_loads_instead_of_compiling(packaged: dict[str, Any], tmp_path: Path):
    """Lambda's /var/task is read-only: without .pyc files in the zip every cold start compiles
    every module it imports (infra/bytecode.py). The test extracts the zip, then breaks the
    sources the API's first request imports: the modules still load, from their bytecode."""
    runtime = {r["Properties"]["Runtime"] for r in packaged["sam"]["Resources"].values()
               if r["Type"] == "AWS::Serverless::Function"}
    assert runtime == {f"python{sys.version_info.major}.{sys.version_info.minor}"}
    tag = sys.implementation.cache_tag
    with zipfile.ZipFile(packaged["zip"]) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path)
    sources = [Path(n) for n in names if n.endswith(".py")]
    compiled = {p for p in sources if (p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").as_posix() in names}
    assert packaged["bytecode_files"] == len(compiled) and len(compiled) >= 0.95 * len(sources)  # a py2-only file may not compile
    for module in ("app", "chalicelib/api/handlers", "chalicelib/deps", "pydantic/main",
                   "aws_lambda_powertools/logging/logger", "chalice/app"):
        source = Path(module + ".py")
        assert f"{source.parent.as_posix() + '/' if module.count('/') else ''}__pycache__/{source.stem}.{tag}.pyc" in names
    for module in ("chalicelib/api/handlers.py", "chalicelib/api/models.py", "chalicelib/deps.py", "app.py"):
        (tmp_path / module).write_text("raise SystemExit('compiled from source')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    probe = "import app, chalicelib.api.handlers, chalicelib.deps; print(chalicelib.api.handlers.__file__)"
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {probe}"],
                            cwd=tmp_path, env={**env, "DATABASE_URL": "postgresql://unused/x", "AWS_DEFAULT_REGION": "us-east-1"},
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    # Unchecked-hash bytecode (the zip keeps no reliable mtimes), naming the files where Lambda has them.
    pyc = (tmp_path / "chalicelib" / "__pycache__" / f"deps.{tag}.pyc").read_bytes()
    assert int.from_bytes(pyc[4:8], "little") == 0b01  # PEP 552: hash-based, check_source off
    assert marshal.loads(pyc[16:]).co_filename == "/var/task/chalicelib/deps.py"


def test_the_template_passes_check_infra(packaged: dict[str, Any]):
    assert check.check(packaged["sam"]) == []
    assert check.main([str(packaged["template"])]) == 0


def test_the_template_passes_cfn_lint(packaged: dict[str, Any]):
    result = subprocess.run([CFN_LINT, str(packaged["template"])], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_stage_settings_and_exact_arns_are_in_the_template(packaged: dict[str, Any]):
    res = packaged["sam"]["Resources"]
    assert packaged["sam"]["Metadata"]["AdModeration"]["DbConnectionBudget"] == 20
    score = res["Score"]["Properties"]
    assert score["FunctionName"] == "ad-moderation-dev-score" and score["Timeout"] == 30
    event = score["Events"]["ScoreSqsEventSource"]["Properties"]
    assert event == {
        "Queue": {"Fn::GetAtt": ["ModerationQueue", "Arn"]},
        "BatchSize": 10,
        "MaximumBatchingWindowInSeconds": 1,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": 5},
    }
    assert event["BatchSize"] == STAGES["dev"]["scoring_batch_size"]
    assert event["MaximumBatchingWindowInSeconds"] == STAGES["dev"]["scoring_batching_window_seconds"]
    assert res["ModerationQueue"]["Properties"]["VisibilityTimeout"] >= 6 * score["Timeout"]
    # The scorer's redrive count is the queue's, so its first batch need not ask SQS for it.
    redrive = res["ModerationQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    assert score["Environment"]["Variables"]["MAX_RECEIVE_COUNT"] == str(redrive) == "3"
    for name in FUNCTIONS:
        env = res[name]["Properties"]["Environment"]["Variables"]
        assert env["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"} and "DATABASE_URL" not in env
        assert env["STAGE"] == "dev" and env["POWERTOOLS_METRICS_NAMESPACE"] == "AdModeration"
        assert res[name]["Properties"]["Tracing"] == "PassThrough"  # dev: no X-Ray
    assert "TracingEnabled" not in res["RestAPI"]["Properties"]
    # No policy ARN keeps a region/account wildcard after packaging.
    for logical_id, r in res.items():
        if r["Type"] != "AWS::IAM::Role":
            continue
        for policy in r["Properties"].get("Policies", []):  # the API Gateway logs role has a managed one only
            for stmt in policy["PolicyDocument"]["Statement"]:
                assert "*:*" not in json.dumps(stmt["Resource"]), (logical_id, stmt)
    assert res["ScoreRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/ad-moderation-dev-score:*"
    }


def render_join(body: dict[str, Any]) -> str:
    """Fn::Join, with every Ref / Fn::GetAtt replaced by a stand-in: <Id> or <Id.Attr>."""
    separator, parts = body["Fn::Join"]
    stand_ins = {
        str: lambda p: p,
        dict: lambda p: f"<{p['Ref']}>" if "Ref" in p else "<{}.{}>".format(*p["Fn::GetAtt"]),
    }
    return str(separator).join(stand_ins[type(p)](p) for p in parts)


def test_the_dashboard_shows_queues_functions_and_the_app_metrics(packaged: dict[str, Any]):
    res = packaged["sam"]["Resources"]
    text = render_join(res["OperatorDashboard"]["Properties"]["DashboardBody"])
    body = json.loads(text)
    assert "${" not in text.replace("${PROP('Dim.function')}", "")  # CloudWatch's dynamic label is the only one left
    widgets = body["widgets"]
    metrics = [m for w in widgets if w["type"] == "metric" for m in w["properties"]["metrics"]]
    plain = {(m[0], m[1], m[3]) for m in metrics if isinstance(m[0], str)}
    for queue in ("ModerationQueue", "ModerationDLQ"):
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", f"<{queue}.QueueName>") in plain
    assert ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "<ModerationQueue.QueueName>") in plain
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage", "<ModerationQueue.QueueName>") in plain
    for fn in FUNCTIONS:
        assert {("AWS/Lambda", "Errors", f"<{fn}>"), ("AWS/Lambda", "Throttles", f"<{fn}>")} <= plain
    expressions = [m[0]["expression"] for m in metrics if isinstance(m[0], dict)]
    for metric in APP_METRICS:
        assert any(f'MetricName="{metric}"' in e for e in expressions), metric
    for kind in ERROR_KINDS:
        assert any(f'error_kind="{kind}"' in e for e in expressions), kind
    # Every search is on the app's namespace and dimensions, for this stage only.
    for e in expressions:
        assert "{AdModeration," in e and ",function,service,stage}" in e and 'service="ad-moderation" stage="dev"' in e
    assert {s for e in expressions for s in re.findall(r"'(p\d\d)'", e)} == {"p50", "p95", "p99"}
    # Every alarm of the stack is on the dashboard's alarm widget.
    (alarm_widget,) = [w for w in widgets if w["type"] == "alarm"]
    alarms = {k for k, r in res.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert set(alarm_widget["properties"]["alarms"]) == {f"<{a}.Arn>" for a in alarms}


def test_every_function_has_an_errors_and_a_throttles_alarm(packaged: dict[str, Any]):
    res = packaged["sam"]["Resources"]
    alarmed = {
        (r["Properties"]["Dimensions"][0]["Value"]["Ref"], r["Properties"]["MetricName"])
        for r in res.values()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"]["Namespace"] == "AWS/Lambda"
    }
    assert alarmed == {(fn, metric) for fn in FUNCTIONS for metric in ("Errors", "Throttles")}
    for r in res.values():
        if r["Type"] == "AWS::CloudWatch::Alarm":  # all notify the same optional topic
            assert r["Properties"]["AlarmActions"] == {
                "Fn::If": ["HasAlarmAction", [{"Ref": "AlarmActionArn"}], {"Ref": "AWS::NoValue"}]
            }


def render_gateway_template(template: str) -> Any:
    """API Gateway's rendering of a gateway response template, for the variables ours use."""
    for var, value in {
        "$context.httpMethod": "DELETE",
        "$context.path": "/api/no/such/route",
        "$context.error.messageString": json.dumps("Too Many Requests"),
        "$context.error.responseType": "INTEGRATION_FAILURE",
    }.items():
        template = template.replace(var, value)
    return json.loads(template)


def test_the_model_registry_bucket_is_read_only_to_the_functions_that_score(packaged: dict[str, Any]):
    resources = packaged["sam"]["Resources"]
    bucket = resources["ModelBucket"]
    assert bucket["Type"] == "AWS::S3::Bucket" and bucket["DeletionPolicy"] == "Retain"
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["Properties"]["PublicAccessBlockConfiguration"].values())
    for fn in ("APIHandler", "Score"):
        assert resources[fn]["Properties"]["Environment"]["Variables"]["MODEL_BUCKET"] == {"Ref": "ModelBucket"}
    s3 = {role: [st for st in statements if any(a.startswith("s3:") for a in st["Action"])]
          for role, statements in ((r, [st for p in res["Properties"].get("Policies", [])
                                         for st in p["PolicyDocument"]["Statement"]])
                                   for r, res in resources.items() if res["Type"] == "AWS::IAM::Role")}
    for role, statements in s3.items():
        readers = role in ("ApiHandlerRole", "ScoreRole")
        assert [(st["Action"], st["Resource"]) for st in statements] == ([
            (["s3:GetObject"], {"Fn::Sub": "${ModelBucket.Arn}/aliases.json"}),
            (["s3:GetObject"], {"Fn::Sub": "${ModelBucket.Arn}/versions/*"}),
            (["s3:ListBucket"], {"Fn::Sub": "${ModelBucket.Arn}"}),
        ] if readers else []), role
    for alarm, function in (("ScoreModelRefusedAlarm", "score"), ("APIHandlerModelRefusedAlarm", "api_handler")):
        props = resources[alarm]["Properties"]
        assert (props["Namespace"], props["MetricName"]) == ("AdModeration", "ModelRefused")
        assert {d["Name"]: d["Value"] for d in props["Dimensions"]} == {
            "function": function, "service": "ad-moderation", "stage": "dev"}
    assert packaged["sam"]["Outputs"]["ModelBucketName"]["Value"] == {"Ref": "ModelBucket"}


def test_api_gateway_errors_are_json_like_the_apps(packaged: dict[str, Any]):
    """Unknown route: 404 not_found (not 403 "Missing Authentication Token"); no key: 403 forbidden."""
    swagger = sam_transform(packaged["sam"])["Resources"]["RestAPI"]["Properties"]["Body"]
    responses = swagger["x-amazon-apigateway-gateway-responses"]
    rendered = {t: render_gateway_template(r["responseTemplates"]["application/json"]) for t, r in responses.items()}
    status = {t: r.get("statusCode") for t, r in responses.items()}
    assert status["MISSING_AUTHENTICATION_TOKEN"] == "404"
    assert rendered["MISSING_AUTHENTICATION_TOKEN"] == {
        "code": "not_found",
        "message": "no such route: DELETE /api/no/such/route",
        "detail": "no such route: DELETE /api/no/such/route",
    }
    assert status["INVALID_API_KEY"] == "403" and rendered["INVALID_API_KEY"]["code"] == "forbidden"
    assert status["THROTTLED"] == "429" and rendered["THROTTLED"]["code"] == "throttled"
    assert responses["THROTTLED"]["responseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}
    assert status["QUOTA_EXCEEDED"] == "429" and rendered["QUOTA_EXCEEDED"]["code"] == "quota_exceeded"
    assert responses["QUOTA_EXCEEDED"]["responseParameters"] == {"gatewayresponse.header.Retry-After": "'3600'"}
    # 4xx keep each error's own status. Every 5xx API Gateway makes itself (the API function throttled
    # at its reserved concurrency: 500; an invocation failed or timed out: 502/504) becomes a 503 that
    # says when to come back, and which it was.
    assert status["DEFAULT_4XX"] is None and status["DEFAULT_5XX"] == "503"
    assert responses["DEFAULT_5XX"]["responseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}
    assert rendered["DEFAULT_5XX"]["code"] == "service_unavailable"
    assert "(INTEGRATION_FAILURE)" in rendered["DEFAULT_5XX"]["message"]
    for body in rendered.values():
        assert set(body) == {"code", "message", "detail"} and body["message"] == body["detail"]
    # Every 429 and 503 API Gateway makes says when to come back.
    assert all("gatewayresponse.header.Retry-After" in r["responseParameters"]
               for t, r in responses.items() if status[t] in ("429", "503")), responses


def test_after_the_sam_transform(packaged: dict[str, Any]):
    cfn = sam_transform(packaged["sam"])
    res = cfn["Resources"]
    # The id under which Chalice's SQS event becomes an event source mapping.
    esm = res["ScoreScoreSqsEventSource"]
    assert esm["Type"] == "AWS::Lambda::EventSourceMapping"
    assert esm["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["ModerationQueue", "Arn"]}
    assert check.check(cfn) == []
    # Functions that use the database are created after the migrations ran.
    for name in ("APIHandler", "Score", "Reconcile"):
        assert res[name]["DependsOn"] == ["DatabaseMigrations"]
    assert res["DatabaseMigrations"]["Properties"]["ServiceToken"] == {"Fn::GetAtt": ["Migrate", "Arn"]}
    assert res["ClientUsagePlan"]["DependsOn"] == ["RestAPIapiStage"] and "RestAPIapiStage" in res
    swagger = res["RestAPI"]["Properties"]["Body"]
    assert swagger["paths"]["/moderation/async_predict"]["post"]["security"] == [{"api_key": []}]
    # Reads need the key too (task ids are sequential); only /health is open.
    assert swagger["paths"]["/moderation/moderation_result/{task_id}"]["get"]["security"] == [{"api_key": []}]
    assert "security" not in swagger["paths"]["/health"]["get"]
    assert res["ScoreLogGroup"]["Properties"]["RetentionInDays"] == 30


def test_prod_gets_its_own_limits(packaged_prod: dict[str, Any]):
    info, sam = packaged_prod, packaged_prod["sam"]
    assert info["build_seconds"] < 60
    event = sam["Resources"]["Score"]["Properties"]["Events"]["ScoreSqsEventSource"]["Properties"]
    assert event["ScalingConfig"] == {"MaximumConcurrency": 10}
    assert sam["Resources"]["APIHandler"]["Properties"]["ReservedConcurrentExecutions"] == 25
    assert sam["Resources"]["APIHandler"]["Properties"]["FunctionName"] == "ad-moderation-prod"
    assert check.check(sam) == []
    assert [v.rule for v in check.check(sam, budget=20)] == ["connection-budget"]
    # prod traces (infra/stages.json): every function, the API stage, and the roles may send segments.
    assert STAGES["prod"]["tracing"] is True
    res = sam["Resources"]
    for fn in FUNCTIONS:
        assert res[fn]["Properties"]["Tracing"] == "Active"
        assert res[fn]["Properties"]["Environment"]["Variables"]["STAGE"] == "prod"
    assert res["RestAPI"]["Properties"]["TracingEnabled"] is True
    for role in ("ApiHandlerRole", "ScoreRole", "ReconcileRole", "MigrateRole"):
        statements = res[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        assert {"Sid": "XRayTracing", "Effect": "Allow", "Action": ["xray:PutTelemetryRecords", "xray:PutTraceSegments"],
                "Resource": "*"} in statements
    assert 'stage=\\"prod\\"' in render_join(res["OperatorDashboard"]["Properties"]["DashboardBody"])
    cfn = sam_transform(sam)
    assert cfn["Resources"]["RestAPIapiStage"]["Properties"]["TracingEnabled"] is True
    assert cfn["Resources"]["Score"]["Properties"]["TracingConfig"] == {"Mode": "Active"}
    assert check.check(cfn) == []
    result = subprocess.run([CFN_LINT, str(info["template"])], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def checkov_failed(packaged: dict[str, Any], packaged_prod: dict[str, Any],
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """`make check-infra`'s checkov (skips: infra/skipped-checks.md), once over both stages' templates and
    the dev one without its access log: the checks each fails."""
    broken = json.loads(json.dumps(packaged["sam"]))
    del broken["Resources"]["RestAPI"]["Properties"]["AccessLogSetting"]
    broken_path = tmp_path_factory.mktemp("checkov") / "sam.json"
    broken_path.write_text(json.dumps(broken))
    templates = {"dev": packaged["template"], "prod": packaged_prod["template"], "broken": broken_path}
    failed = check.checkov_failures(*templates.values())
    return {name: failed[path] for name, path in templates.items()}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_checkov_passes_with_only_the_listed_skips(stage: str, checkov_failed: dict[str, list[str]]):
    assert checkov_failed[stage] == []


def test_checkov_still_fails_what_the_skips_do_not_cover(checkov_failed: dict[str, list[str]]):
    assert checkov_failed["broken"] == ["CKV_AWS_76"]


def test_queues_are_encrypted_and_what_ops_need_survives_the_stack(packaged: dict[str, Any]):
    res = packaged["sam"]["Resources"]
    for queue in ("ModerationQueue", "ModerationDLQ"):
        assert res[queue]["Properties"]["SqsManagedSseEnabled"] is True
    kept = {k for k, r in res.items() if r.get("DeletionPolicy") == "Retain" and r.get("UpdateReplacePolicy") == "Retain"}
    log_groups = {k for k, r in res.items() if r["Type"] == "AWS::Logs::LogGroup"}
    assert log_groups == {f"{fn}LogGroup" for fn in FUNCTIONS} | {"ApiAccessLogGroup"}
    assert {"ModerationDLQ", "WebhookDLQ", "WebhookSecretsKey", *log_groups} <= kept and "ModerationQueue" not in kept


def test_the_access_log_is_one_json_line_per_request(packaged: dict[str, Any]):
    cfn = sam_transform(packaged["sam"])
    stage = cfn["Resources"]["RestAPIapiStage"]["Properties"]
    setting = stage["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert cfn["Resources"]["ApiAccessLogGroup"]["Properties"]["RetentionInDays"] == 90
    # As API Gateway fills it in: every $context variable replaced by a value, numbers unquoted.
    line = re.sub(r"\$context\.status", "403", setting["Format"])
    line = re.sub(r"\$context\.[A-Za-z.]+", "x", line)
    record = json.loads(line)
    assert {"requestId", "apiKeyId", "resourcePath", "httpMethod", "status", "responseLatency", "sourceIp"} <= set(record)
    assert record["status"] == 403
    # The account's CloudWatch role is set before the API (and its stage) exists.
    assert cfn["Resources"]["RestAPI"]["DependsOn"] == ["ApiGatewayAccount"]
    assert cfn["Resources"]["ApiGatewayAccount"]["Properties"]["CloudWatchRoleArn"] == {
        "Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]}


def test_the_dashboard_shows_the_apis_4xx_and_5xx(packaged: dict[str, Any]):
    body = json.loads(render_join(packaged["sam"]["Resources"]["OperatorDashboard"]["Properties"]["DashboardBody"]))
    api = [m for w in body["widgets"] if w["type"] == "metric" for m in w["properties"]["metrics"]
           if m[0] == "AWS/ApiGateway"]
    assert {m[1] for m in api} == {"Count", "4XXError", "5XXError"}
    (log_widget,) = [w for w in body["widgets"] if w["type"] == "log"]
    assert log_widget["properties"]["query"].startswith("SOURCE '<ApiAccessLogGroup>'")
    assert "by apiKeyId" in log_widget["properties"]["query"]


def test_dev_may_run_in_a_vpc_prod_must(packaged: dict[str, Any], packaged_prod: dict[str, Any]):
    dev, prod = packaged["sam"], packaged_prod["sam"]
    for fn in FUNCTIONS:
        assert dev["Resources"][fn]["Properties"]["VpcConfig"]["Fn::If"][0] == "HasVpc"
        assert prod["Resources"][fn]["Properties"]["VpcConfig"] == {
            "SubnetIds": {"Ref": "VpcSubnetIds"}, "SecurityGroupIds": {"Ref": "VpcSecurityGroupIds"}}
    assert all("Default" in dev["Parameters"][p] for p in ("VpcId", "VpcSubnetIds", "VpcSecurityGroupIds"))
    assert {p: v["Type"] for p, v in prod["Parameters"].items() if p.startswith("Vpc") and "Default" not in v} == {
        "VpcId": "AWS::EC2::VPC::Id", "VpcSubnetIds": "List<AWS::EC2::Subnet::Id>",
        "VpcSecurityGroupIds": "List<AWS::EC2::SecurityGroup::Id>"}
    # The endpoints the functions need from inside the VPC, only where there is one.
    endpoints = {r["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[1]: r for r in prod["Resources"].values()
                 if r["Type"] == "AWS::EC2::VPCEndpoint"}
    assert set(endpoints) == {"sqs", "secretsmanager", "s3", "kms"}  # kms: webhook secrets (issue 22)
    assert all(r["Condition"] == "HasVpc" and r["Properties"]["PrivateDnsEnabled"] for r in endpoints.values())
    # SAM keeps both forms (the transform CloudFormation applies).
    for sam in (dev, prod):
        cfn = sam_transform(sam)
        assert cfn["Resources"]["Score"]["Properties"]["VpcConfig"] == sam["Resources"]["Score"]["Properties"]["VpcConfig"]
    assert [v.rule for v in check.check(sam_transform(prod))] == []


def test_prod_ships_its_database_ca_bundle_and_dev_none(packaged: dict[str, Any], packaged_prod: dict[str, Any],
                                                        ca_bundle: Path):
    with zipfile.ZipFile(packaged_prod["zip"]) as zf:
        assert zf.read("chalicelib/certs/db-ca.pem") == ca_bundle.read_bytes()
    env = packaged_prod["sam"]["Resources"]["Score"]["Properties"]["Environment"]["Variables"]
    assert env["DB_REQUIRE_TLS"] == "true" and env["DB_SSL_ROOT_CERT"] == "chalicelib/certs/db-ca.pem"
    with zipfile.ZipFile(packaged["zip"]) as zf:
        assert not [n for n in zf.namelist() if n.startswith("chalicelib/certs/")]


def test_a_prod_package_refuses_a_ca_bundle_that_is_not_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    not_pem = tmp_path / "page.html"
    not_pem.write_text("<html>Not Found</html>")
    monkeypatch.setenv("DB_CA_BUNDLE", str(not_pem))
    with pytest.raises(PackageError, match=r"not a PEM CA bundle|no CA certificate"):
        package("prod", tmp_path / "prod")


# The LocalStack service that creates each kind of resource the deploy makes.
SERVICE_OF_TYPE = {"AWS::SQS::": "sqs", "AWS::Lambda::": "lambda", "AWS::IAM::": "iam", "AWS::Logs::": "logs",
                   "AWS::CloudWatch::": "cloudwatch", "AWS::ApiGateway::": "apigateway", "AWS::Events::": "events",
                   "AWS::EC2::": "ec2", "AWS::S3::": "s3", "AWS::KMS::": "kms", "Custom::": "lambda"}


def test_the_docker_compose_localstack_covers_everything_the_deploy_creates(packaged: dict[str, Any]):
    """docker-compose.localstack.yml and what `make deploy-localstack` uses (the services it starts LocalStack
    with, and those of every resource of the stack it deploys there) cannot drift apart."""
    import yaml

    from infra.deploy_localstack import executor_env

    compose = yaml.safe_load((ROOT / "docker-compose.localstack.yml").read_text())
    localstack = compose["services"]["localstack"]
    env = localstack["environment"]
    # dev, as deploy-localstack deploys it: no VPC parameters, so no HasVpc resources.
    created = {r["Type"] for r in sam_transform(packaged["sam"])["Resources"].values() if r.get("Condition") != "HasVpc"}
    unmapped = {t for t in created if not any(t.startswith(prefix) for prefix in SERVICE_OF_TYPE)}
    assert not unmapped, f"which LocalStack service creates {unmapped}? add it to SERVICE_OF_TYPE"
    needed = {s for t in created for prefix, s in SERVICE_OF_TYPE.items() if t.startswith(prefix)}
    needed |= set(executor_env()["SERVICES"].split(","))
    assert "events" in needed  # the reconciler's schedule
    assert needed <= set(env["SERVICES"].split(",")), f"add {needed - set(env['SERVICES'].split(','))} to SERVICES"
    # Lambda containers on the compose network, where PostgreSQL is `postgres`.
    assert env["LAMBDA_DOCKER_NETWORK"] == compose["networks"]["default"]["name"]
    assert "postgres" in compose["services"]
    # A pinned image (the last one before LocalStack's auth-token change), or the token passed through.
    name, _, tag = localstack["image"].partition(":")
    assert name == "localstack/localstack" and tag and tag != "latest"
    assert env["LOCALSTACK_AUTH_TOKEN"] == "${LOCALSTACK_AUTH_TOKEN:-}"


def test_the_webhooks_have_their_queue_function_key_and_alarms(packaged: dict[str, Any]):
    """Issue 22 (docs/webhooks.md): the sender's own queue and DLQ, its event source with partial
    batch responses, the KMS key only the API (encrypt) and the sender (decrypt) may use, the two
    alarms; and no WEBHOOK_ALLOW_* in the AWS template (only the LocalStack deployment sets them)."""
    resources = packaged["sam"]["Resources"]
    sender = resources["SendWebhooks"]["Properties"]
    assert sender["FunctionName"] == "ad-moderation-dev-send_webhooks" and sender["Timeout"] == 60
    event = sender["Events"]["SendWebhooksSqsEventSource"]["Properties"]
    assert event["Queue"] == {"Fn::GetAtt": ["WebhookQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["ScalingConfig"]["MaximumConcurrency"] <= sender["ReservedConcurrentExecutions"]
    queue = resources["WebhookQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * sender["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDLQ", "Arn"]}
    assert resources["WebhookDLQ"]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    kms = {role: [(st["Action"], st["Resource"]) for p in res["Properties"].get("Policies", [])
                  for st in p["PolicyDocument"]["Statement"] if any(a.startswith("kms:") for a in st["Action"])]
           for role, res in resources.items() if res["Type"] == "AWS::IAM::Role"}
    key = {"Fn::GetAtt": ["WebhookSecretsKey", "Arn"]}
    assert {role: grants for role, grants in kms.items() if grants} == {
        "ApiHandlerRole": [(["kms:Encrypt"], key)], "SendWebhooksRole": [(["kms:Decrypt"], key)]}
    assert resources["WebhookSecretsKey"]["Properties"]["EnableKeyRotation"] is True
    assert resources["WebhookDeadLetterQueueNotEmptyAlarm"]["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert resources["WebhookOldestUndeliveredAlarm"]["Properties"]["MetricName"] == "WebhookOldestUndeliveredSeconds"
    for res in resources.values():
        if res["Type"] == "AWS::Serverless::Function":
            assert not {"WEBHOOK_ALLOW_HTTP", "WEBHOOK_ALLOW_PRIVATE"} & set(res["Properties"]["Environment"]["Variables"])
