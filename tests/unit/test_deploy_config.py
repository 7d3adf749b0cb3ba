"""The deployment configuration keeps its promises without building anything:
IAM policy files, stage config, API keys on the write routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra import check, policies
from infra.check import DEFAULT_DB_CONNECTION_BUDGET, RESOURCELESS_ACTIONS
from toolkit import names

ROOT = Path(__file__).resolve().parents[2]
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
STAGES = json.loads((ROOT / "infra" / "stages.json").read_text())


def test_committed_policy_files_match_infra_policies():
    assert policies.main(["--check"]) == 0, "run `make policies` and commit .chalice/policy-*.json"


@pytest.mark.parametrize("stage", policies.STAGES)
def test_every_function_of_a_deployable_stage_has_its_own_least_privilege_policy(stage: str):
    assert CONFIG["autogen_policy"] is False
    functions = CONFIG["stages"][stage]["lambda_functions"]
    assert set(functions) == set(names.functions()) == set(CONFIG["lambda_functions"])
    for fn, settings in functions.items():
        doc = json.loads((ROOT / ".chalice" / settings["iam_policy_file"]).read_text())
        for stmt in doc["Statement"]:
            actions = stmt["Action"] if isinstance(stmt["Action"], list) else [stmt["Action"]]
            assert not any("*" in a for a in actions), (fn, actions)
            if stmt["Resource"] == "*":  # only for actions that cannot name a resource (X-Ray, EC2 reads)
                assert set(actions) <= RESOURCELESS_ACTIONS, (fn, actions)
                continue
            for resource in stmt["Resource"] if isinstance(stmt["Resource"], list) else [stmt["Resource"]]:
                if resource.startswith("arn:aws:s3:::"):  # the template's bucket by logical id (make package)
                    assert resource.removeprefix("arn:aws:s3:::").split("/")[0] == policies.MODEL_BUCKET
                    continue
                # Only region and account may be wildcards (rendered exactly by `make package`).
                assert resource.startswith("arn:aws:") and resource.split(":")[3:5] == ["*", "*"], (fn, resource)
        logs = next(s for s in doc["Statement"] if s["Sid"] == "OwnLogGroupOnly")
        assert logs["Resource"].endswith(f"/aws/lambda/{policies.function_name(stage, fn)}:*")
        assert "logs:CreateLogGroup" not in logs["Action"]


@pytest.mark.parametrize("stage", policies.STAGES)
def test_xray_actions_only_where_the_stage_traces(stage: str):
    tracing = STAGES[stage]["tracing"]
    assert isinstance(tracing, bool)
    for fn in names.functions():
        doc = json.loads(policies.policy_file(stage, fn).read_text())
        xray = [s for s in doc["Statement"] if any(a.startswith("xray:") for a in s["Action"])]
        if tracing:
            assert xray == [{"Sid": "XRayTracing", "Effect": "Allow", "Action": policies.XRAY_ACTIONS, "Resource": "*"}]
        else:
            assert xray == [], (stage, fn)
    assert STAGES["dev"]["tracing"] is False  # the stage the e2e test deploys to LocalStack, which has no X-Ray


@pytest.mark.parametrize("stage", policies.STAGES)
def test_vpc_stages_let_lambda_manage_the_functions_network_interfaces(stage: str):
    """Lambda creates a VPC function's interfaces with its role: the writes name the kinds of EC2 resource."""
    assert STAGES["prod"]["vpc"] == "required" and STAGES["dev"]["vpc"] == "optional"
    for fn in names.functions():
        doc = json.loads(policies.policy_file(stage, fn).read_text())
        ec2 = [s for s in doc["Statement"] if any(a.startswith("ec2:") for a in s["Action"])]
        assert ec2 == [
            {"Sid": "VpcNetworkInterfaces", "Effect": "Allow", "Action": policies.VPC_WRITE_ACTIONS,
             "Resource": policies.VPC_WRITE_RESOURCES},
            {"Sid": "VpcDescribe", "Effect": "Allow", "Action": policies.VPC_READ_ACTIONS, "Resource": "*"},
        ]


def test_prod_demands_verified_tls_to_the_database():
    """DB_REQUIRE_TLS on, with the CA bundle `make package` ships (infra/stages.json names where it comes from)."""
    env = CONFIG["stages"]["prod"]["environment_variables"]
    assert env["DB_REQUIRE_TLS"] == "true" and env["DB_SSL_ROOT_CERT"].startswith("chalicelib/certs/")
    assert STAGES["prod"]["db_ca_bundle"].startswith("https://truststore.pki.rds.amazonaws.com/")
    assert "DB_REQUIRE_TLS" not in CONFIG["stages"]["dev"]["environment_variables"]  # LocalStack's embedded server has no TLS


@pytest.mark.parametrize("stage", policies.STAGES)
def test_every_function_tags_its_metrics_with_its_stage(stage: str):
    """The dashboard filters the app's metrics (namespace AdModeration) on the `stage` dimension."""
    env = CONFIG["stages"][stage]["environment_variables"]
    assert env["STAGE"] == stage
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == check.METRICS_NAMESPACE
    assert env["POWERTOOLS_SERVICE_NAME"] == names.APP_NAME
    for fn, settings in CONFIG["stages"][stage]["lambda_functions"].items():  # no function overrides them
        assert not {"STAGE", "POWERTOOLS_METRICS_NAMESPACE"} & set(settings.get("environment_variables", {})), fn


@pytest.mark.parametrize("stage", policies.STAGES)
def test_the_scoring_batch_is_set_in_one_place_and_is_one_sqs_accepts(stage: str):
    """Batch size and window live in infra/stages.json only (package.py writes them into the mapping)."""
    assert "SCORING_BATCH_SIZE" not in CONFIG["stages"][stage]["environment_variables"]
    settings = STAGES[stage]
    event = {
        "Type": "SQS",
        "Properties": {
            "BatchSize": settings["scoring_batch_size"],
            "MaximumBatchingWindowInSeconds": settings["scoring_batching_window_seconds"],
        },
    }
    template = {"Resources": {"Score": {"Type": "AWS::Serverless::Function", "Properties": {"Events": {"Sqs": event}}}}}
    assert list(check.check_batching(template)) == []


def test_only_the_scoring_function_can_consume_the_queue():
    consumers = [fn for fn, queues in policies.SQS_ACTIONS.items() if "sqs:ReceiveMessage" in queues.get(policies.QUEUE, [])]
    assert consumers == ["score"]
    assert policies.SQS_ACTIONS["migrate"] == {}


@pytest.mark.parametrize("stage", policies.STAGES)
def test_stage_settings_fit_the_connection_budget(stage: str):
    fns = CONFIG["stages"][stage]["lambda_functions"]
    reserved = sum(fns[f]["reserved_concurrency"] for f in ("api_handler", "reconcile", "migrate"))
    settings = STAGES[stage]
    assert settings["scoring_max_concurrency"] + reserved <= settings["db_connection_budget"]
    assert 2 <= settings["scoring_max_concurrency"] <= 1000  # the range Lambda accepts
    env = CONFIG["stages"][stage]["environment_variables"]
    assert env["DATABASE_SECRET_ARN"] == policies.secret_name(stage)
    assert not any("DATABASE_URL" in k or "postgresql://" in v for k, v in env.items())
    assert DEFAULT_DB_CONNECTION_BUDGET >= 1


# Open for probes and humans; everything else (writes and reads: task ids are
# sequential) needs the API key on the deployed API.
# The moderator console's page and files are open too: the page asks for the moderator's key and
# sends it with each call it makes (docs/reviews.md#the-moderator-console).
OPEN_ROUTES = {"/health", "/health/pipeline", "/openapi.json", "/docs", "/console"}


def test_every_route_but_health_and_docs_needs_an_api_key():
    from app import app

    for path, methods in app.routes.items():
        for method, entry in methods.items():
            is_open = path in OPEN_ROUTES or path.startswith(("/docs/", "/console/"))
            assert bool(entry.api_key_required) is not is_open, (method, path)
