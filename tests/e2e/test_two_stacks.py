"""Two local stacks never steal each other's messages.

A stack deployed to LocalStack (`make deploy-localstack`) has a real event
source mapping on its endpoint's `moderation` queue; `make run` has its own
runner on the `moderation` queue of its endpoint. On one endpoint the
deployed function would take `make run`'s messages (and score them against
its own database, where those tasks do not exist), so `make run`'s tasks
would stay pending. So:

- the deployment gets an endpoint of its own (`python -m infra.deploy_localstack`,
  what the make target runs, here on free ports and a temp state dir), and a
  `make run` beside it completes every one of its tasks while the deployed
  stack completes its own;
- `make run` pointed at the deployed stack's endpoint refuses to start,
  naming the mapping and the command that stops the other stack, and leaves
  nothing running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.stack import make_run_command, make_run_env, ports_of
from infra import deploy_localstack as dl
from tests.e2e.deployed_stack import http_json
from tests.e2e.e2e_stack import Stack, http, settle
from tests.helpers import free_port
from toolkit import names
from toolkit.names import ROOT
from toolkit.procs import holder


def port_free(port: int) -> bool:
    return holder(port) is None

pytestmark = pytest.mark.e2e


@dataclass
class Deployment:
    endpoint: str
    api_url: str
    api_key: str


def deploy_command(command: str, endpoint: str, pg_port: int) -> list[str]:
    return [sys.executable, "-m", "infra.deploy_localstack", command, "--endpoint", endpoint, "--pg-port", str(pg_port)]


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """`make deploy-localstack`, on free ports and its own state dir; `make deploy-localstack-stop` after."""
    state = Path(tempfile.mkdtemp(prefix="moderation-e2e-deploy-"))
    endpoint, pg_port = f"http://127.0.0.1:{free_port()}", free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL", "DEPLOY_LOCALSTACK_ENDPOINT")}
    env["LOCAL_STATE_DIR"] = str(state)
    try:
        up = subprocess.run([*deploy_command("up", endpoint, pg_port), "--package-dir", str(state / "package")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        api_url = re.search(r"API URL\s+(\S+)", up.stdout)
        api_key = re.search(r"API key\s+(\S+)", up.stdout)
        assert api_url and api_key, up.stdout
        yield Deployment(endpoint, api_url.group(1), api_key.group(1))
    finally:
        down = subprocess.run(deploy_command("stop", endpoint, pg_port), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        port = int(endpoint.rsplit(":", 1)[1])
        deadline = time.monotonic() + 20
        while not (port_free(port) and port_free(pg_port)) and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert port_free(port) and port_free(pg_port), "deploy-localstack-stop left something running"


def post_with_key(deployment: Deployment, path: str) -> tuple[int, dict]:
    status, body = http_json("POST", deployment.api_url + path, api_key=deployment.api_key)
    return status, body


def wait_terminal(get_result, task_ids: list[int], timeout: float) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[int, str] = {}
    while True:
        statuses = {t: get_result(t)["status"] for t in task_ids}
        if all(s in ("completed", "failed") for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.3)


def test_the_defaults_give_each_stack_its_own_endpoint_port_and_state():
    args = dl.arguments([])
    assert args.endpoint != names.RUN_ENDPOINT
    assert args.pg_port != names.RUN_PG_PORT
    assert dl.LOCALSTACK_DATA != names.state_dir() / "localstack" and dl.PG_DATA != names.state_dir() / "pg"


def test_make_run_beside_a_deployed_stack_completes_every_task(deployment: Deployment, shared_make_run: Stack):
    # The session's make run (tests/conftest.py), on the endpoint make run picks; the deployment came up beside it.
    stack = shared_make_run
    try:
        assert stack.endpoint != deployment.endpoint
        ours = []
        for item_id in range(1, 21):
            status, body = http("POST", f"{stack.api}/moderation/async_predict?item_id={item_id}", key=stack.api_key)
            assert status == 202, body
            ours.append(body["task_id"])
        theirs = []
        for item_id in range(1, 4):
            status, body = post_with_key(deployment, f"/moderation/async_predict?item_id={item_id}")
            assert status == 202, body
            theirs.append(body["task_id"])

        def ours_result(task_id: int) -> dict:
            return http("GET", f"{stack.api}/moderation/moderation_result/{task_id}", key=stack.api_key)[1]

        def theirs_result(task_id: int) -> dict:
            url = f"{deployment.api_url}/moderation/moderation_result/{task_id}"
            return http_json("GET", url, api_key=deployment.api_key)[1]  # reads need the key too

        assert set(wait_terminal(ours_result, ours, 45).values()) == {"completed"}
        assert set(wait_terminal(theirs_result, theirs, 45).values()) == {"completed"}
        _assert_queue_empty(stack)
    finally:
        settle(stack)


def _assert_queue_empty(stack: Stack) -> None:
    attrs = stack.aws("sqs", "get-queue-attributes", "--queue-url", stack.queue_url("moderation"),
                      "--attribute-names", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
    assert attrs["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
    assert stack.aws("sqs", "get-queue-attributes", "--queue-url", stack.queue_url("moderation_dlq"),
                     "--attribute-names", "ApproximateNumberOfMessages")["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_make_run_refuses_the_endpoint_of_a_deployed_stack(deployment: Deployment):
    env = make_run_env({"AWS_ENDPOINT_URL": deployment.endpoint})
    api_port, pg_port, _ = ports_of(env)
    try:
        started = time.monotonic()
        run = subprocess.run(make_run_command(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                             check=False)
        took = time.monotonic() - started
    finally:
        shutil.rmtree(env["LOCAL_STATE_DIR"], ignore_errors=True)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "refusing to start" in out and deployment.endpoint in out, out
    assert "function ad-moderation-dev-score" in out and re.search(r"mapping [0-9a-f-]{36}", out), out
    assert "make deploy-localstack-stop" in out and "AWS_ENDPOINT_URL=" in out, out
    assert "ready in" not in out
    # Nothing left behind: no API, and the embedded Postgres it had started is stopped again.
    assert port_free(api_port) and port_free(pg_port)
    # The deployed stack is untouched and still works.
    status, body = post_with_key(deployment, "/moderation/async_predict?item_id=5")
    assert status == 202, body
    def result_of(task_id: int) -> dict:
        return http_json("GET", f"{deployment.api_url}/moderation/moderation_result/{task_id}", api_key=deployment.api_key)[1]

    result = wait_terminal(result_of, [body["task_id"]], 45)
    assert result == {body["task_id"]: "completed"}
    print(f"\n[two stacks] make run refused in {took:.1f} s")
