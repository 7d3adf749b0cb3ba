"""Every name the tooling shares, defined once: paths, ports, endpoints,
local credentials, queues and functions.

Queue names are read from infra/resources.json (the template CloudFormation
applies) and function names from .chalice/config.json, so neither is typed
in Python; the shipped app's own defaults live in chalicelib/config.py, and a
test checks the two agree and that no second literal copy appears anywhere
(tests/unit/test_names.py).

Two local stacks can run side by side and must never share a queue: `make
run` uses the RUN_* ports, `make deploy-localstack` the DEPLOY_* ones. A
deployed event source mapping on make run's LocalStack would otherwise
consume make run's queue.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

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
REGION = "us-east-1"
# LocalStack accepts any credentials; these are the conventional ones. Never real.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": REGION,
}
# The account id LocalStack and moto report.
LOCAL_ACCOUNT_ID = "000000000000"


def endpoint(port: int) -> str:
    return f"http://{HOST}:{port}"


def database_url(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{PG_SUPERUSER}@{HOST}:{port}/{database}"


RUN_ENDPOINT = endpoint(RUN_LOCALSTACK_PORT)
DEPLOY_ENDPOINT = endpoint(DEPLOY_LOCALSTACK_PORT)
RUN_API_URL = endpoint(RUN_API_PORT)


@dataclass(frozen=True, slots=True)
class Queues:
    main: str
    dlq: str


@cache
def queues() -> Queues:
    """The queue names of infra/resources.json: the main queue is the one
    with a RedrivePolicy, the DLQ its target."""
    resources = json.loads(RESOURCES_FILE.read_text())["Resources"]
    sqs = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"}
    [(main_id, main)] = [(k, p) for k, p in sqs.items() if "RedrivePolicy" in p]
    dlq_id = main["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    assert dlq_id != main_id
    return Queues(main=main["QueueName"], dlq=sqs[dlq_id]["QueueName"])


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
