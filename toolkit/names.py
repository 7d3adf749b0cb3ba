"""Every name the tooling shares, defined once: paths, ports, endpoints, local
credentials, queues and functions.

Queue names come from infra/resources.json (the template CloudFormation applies),
function names from .chalice/config.json; the shipped app's own defaults live in
chalicelib/config.py. tests/unit/test_names.py checks the two agree and finds any
second literal copy. `make run` uses the RUN_* ports, `make deploy-localstack` the
DEPLOY_* ones: a deployed event source mapping on make run's LocalStack would
consume make run's queue.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from chalicelib.config import QUEUE_NAME

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / ".local"  # embedded database, LocalStack state, logs (git-ignored)
LOCALSTACK_VENV = ROOT / ".venv-localstack"  # LocalStack's own Python 3.13 (git-ignored)
BUILD_DIR = ROOT / "build"
MIGRATIONS_DIR = ROOT / "migrations"
RESOURCES_FILE = ROOT / "infra" / "resources.json"
STAGES_FILE = ROOT / "infra" / "stages.json"
CHALICE_DIR = ROOT / ".chalice"
CHALICE_CONFIG_FILE = CHALICE_DIR / "config.json"
APP_NAME = "ad-moderation"

HOST = "127.0.0.1"
# make run's stack. The embedded PostgreSQL is not on 5432: a system server may hold it.
RUN_LOCALSTACK_PORT = 4566
RUN_PG_PORT = 54329
RUN_API_PORT = 8000
# make deploy-localstack's own stack.
DEPLOY_LOCALSTACK_PORT = 4567
DEPLOY_PG_PORT = 54330

DATABASE = "moderation"
PG_SUPERUSER = "postgres"
# The deployed functions' login role (make deploy-localstack, the deployed e2e stack): a password
# it must give (scram-sha-256), so rotating it is real. make run keeps the trust-auth superuser.
APP_DB_ROLE = "moderation_app"
REGION = "us-east-1"
# LocalStack accepts any credentials; these are the conventional ones. Never real.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": REGION}
# The account id LocalStack and moto report.
LOCAL_ACCOUNT_ID = "000000000000"


def endpoint(port: int) -> str:
    return f"http://{HOST}:{port}"


def database_url(port: int, database: str = DATABASE, *, user: str = PG_SUPERUSER, password: str | None = None) -> str:
    from urllib.parse import quote

    auth = user if password is None else f"{user}:{quote(password, safe='')}"
    return f"postgresql://{auth}@{HOST}:{port}/{database}"


RUN_ENDPOINT = endpoint(RUN_LOCALSTACK_PORT)
DEPLOY_ENDPOINT = endpoint(DEPLOY_LOCALSTACK_PORT)
RUN_API_URL = endpoint(RUN_API_PORT)


@dataclass(frozen=True, slots=True)
class Queues:
    main: str
    dlq: str


@cache
def queue_resources() -> dict[str, dict[str, Any]]:
    """Logical id -> Properties of every AWS::SQS::Queue of infra/resources.json, DLQs first."""
    resources = json.loads(RESOURCES_FILE.read_text())["Resources"]
    queues = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"}
    return dict(sorted(queues.items(), key=lambda kv: "RedrivePolicy" in kv[1]))


@cache
def queues() -> Queues:
    """The queue names: the main queue is the one with a RedrivePolicy, the DLQ its target."""
    sqs = queue_resources()
    # The webhooks' queue (issue 22) has a RedrivePolicy too: the main queue is the one named `moderation`.
    [main] = [p for p in sqs.values() if "RedrivePolicy" in p and p["QueueName"] == QUEUE_NAME]
    return Queues(main=main["QueueName"], dlq=sqs[main["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]]["QueueName"])


@cache
def max_receive_count() -> int:
    """maxReceiveCount of the main queue's RedrivePolicy: the scorer's MAX_RECEIVE_COUNT wherever
    a stack is set up (infra/package.py, make run, the tests), from this one definition."""
    [main] = [p for p in queue_resources().values() if p["QueueName"] == queues().main]
    return int(main["RedrivePolicy"]["maxReceiveCount"])


@cache
def functions() -> tuple[str, ...]:
    """The Lambda functions Chalice builds, as .chalice/config.json names them
    (the API's function is `api_handler`)."""
    return tuple(json.loads(CHALICE_CONFIG_FILE.read_text())["lambda_functions"])


def local_aws_env(endpoint_url: str) -> dict[str, str]:
    """The environment a process needs to talk to a local AWS endpoint."""
    return {**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint_url}


def state_dir() -> Path:
    """Where a local stack keeps its state: LOCAL_STATE_DIR, so a test can run a second
    stack beside a developer's, else .local/."""
    return Path(os.environ.get("LOCAL_STATE_DIR") or LOCAL_DIR)


def app_dir() -> Path:
    """Where make run finds the app (app.py, chalicelib/, .chalice/) and watches it for changes:
    DEVSTACK_APP_DIR, so a test can serve and edit a copy, else the repository."""
    return Path(os.environ.get("DEVSTACK_APP_DIR") or ROOT)


# --- infra (issue 14): the security scanners and the local API keys ---
CHECKOV_VENV = ROOT / ".venv-checkov"  # checkov's own virtualenv (git-ignored): it pins an older boto3
SKIPPED_CHECKS_FILE = ROOT / "infra" / "skipped-checks.md"  # every check turned off, with the reason


# --- the model registry (chalicelib/serving/registry.py reads it; toolkit/registry.py, ops/models.py, devstack/run.py write) ---
# The bucket make run creates in its LocalStack (a deployed stack creates its own:
# its ModelBucketName output). `MODEL_BUCKET=` (empty) runs make run without a registry.
MODEL_BUCKET = "ad-moderation-models"


def model_registry_mirror(name: str) -> Path:
    """The state directory's copy of a local model registry (a bucket, or a deployed
    LocalStack stack's by stack name): LocalStack keeps nothing across restarts."""
    return state_dir() / "model-registry" / name
