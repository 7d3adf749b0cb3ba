"""`make package` for real: `chalice package` + infra/package.py, then the
checks `make check-infra` runs (infra/check.py and cfn-lint), and the SAM
transform CloudFormation will apply, on the output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from infra import check
from infra.package import package

ROOT = Path(__file__).resolve().parents[2]
CFN_LINT = str(Path(sys.executable).parent / "cfn-lint")
# What AWS accepts for a zip uploaded through S3.
MAX_ZIP_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("package") / "dev"
    info = package("dev", out)
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
    assert {"app.py", "chalicelib/deploy_migrations.py", "chalicelib/artifacts/model.json"} <= names
    assert any(n.startswith("psycopg2/") for n in names) and any(n.startswith("yoyo/") for n in names)
    # Tooling never ships.
    assert not any(n.startswith(("devstack/", "infra/", "tests/", "training/", "migrations/")) for n in names)
    from chalicelib.deploy_migrations import migrations_hash, sql_files

    shipped = sql_files(tmp_path / "chalicelib" / "migrations_sql")
    assert [p.name for p in shipped] == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    for p in shipped:
        assert p.read_bytes() == (ROOT / "migrations" / p.name).read_bytes()
    custom = packaged["sam"]["Resources"]["DatabaseMigrations"]["Properties"]
    assert custom["MigrationsHash"] == migrations_hash(ROOT / "migrations")


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
    assert res["ModerationQueue"]["Properties"]["VisibilityTimeout"] >= 6 * score["Timeout"]
    for name in ("APIHandler", "Score", "Reconcile", "Migrate"):
        env = res[name]["Properties"]["Environment"]["Variables"]
        assert env["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"} and "DATABASE_URL" not in env
    # No policy ARN keeps a region/account wildcard after packaging.
    for logical_id, r in res.items():
        if r["Type"] != "AWS::IAM::Role":
            continue
        for stmt in r["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
            assert "*:*" not in json.dumps(stmt["Resource"]), (logical_id, stmt)
    assert res["ScoreRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/ad-moderation-dev-score:*"
    }


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
    assert "security" not in swagger["paths"]["/moderation/moderation_result/{task_id}"]["get"]
    assert res["ScoreLogGroup"]["Properties"]["RetentionInDays"] == 30


def test_prod_gets_its_own_limits(tmp_path: Path):
    started = time.monotonic()
    info = package("prod", tmp_path / "prod")
    sam = json.loads(info["template"].read_text())
    assert time.monotonic() - started < 60
    event = sam["Resources"]["Score"]["Properties"]["Events"]["ScoreSqsEventSource"]["Properties"]
    assert event["ScalingConfig"] == {"MaximumConcurrency": 10}
    assert sam["Resources"]["APIHandler"]["Properties"]["ReservedConcurrentExecutions"] == 25
    assert sam["Resources"]["APIHandler"]["Properties"]["FunctionName"] == "ad-moderation-prod"
    assert check.check(sam) == []
    assert [v.rule for v in check.check(sam, budget=20)] == ["connection-budget"]
