"""The `make run` stack for end-to-end tests: started as `make run` starts it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
AWS = str(Path(sys.executable).parent / "aws")


@dataclass
class Stack:
    api: str
    endpoint: str
    env: dict[str, str]
    log: Path
    startup_seconds: float
    pg_data: Path
    pg_port: int

    def aws(self, *args: str) -> dict:
        out = subprocess.run([AWS, "--endpoint-url", self.endpoint, "--output", "json", *args],
                             env=self.env, capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out) if out.strip() else {}

    def queue_url(self, name: str) -> str:
        return self.aws("sqs", "get-queue-url", "--queue-name", name)["QueueUrl"]


def http(method: str, url: str, data: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def make_run_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `make run` on its own ports and state dir (PORT: the API's)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL")}
    env.update(
        # mkdtemp, not tmp_path_factory: see tests/conftest.py (pg_server).
        LOCAL_STATE_DIR=tempfile.mkdtemp(prefix="moderation-e2e-state-"),
        EMBEDDED_PG_PORT=str(free_port()),
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        PORT=str(free_port()),
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
    )
    env.update(extra_env or {})
    return env


def make_run_command(env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "devstack.run", "--port", env["PORT"], "--reconcile-every", "5"]


def ports_of(env: dict[str, str]) -> list[int]:
    """The ports a `make run` with this environment listens on (API, Postgres, AWS)."""
    aws_port = int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1].rstrip("/"))
    return [int(env["PORT"]), int(env["EMBEDDED_PG_PORT"]), aws_port]


@contextmanager
def make_run(tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Start the stack exactly as `make run` does, on its own ports and state dir."""
    env = make_run_env(extra_env)
    api_port, pg_port, aws_port = ports_of(env)
    log = tmp_path_factory.mktemp("log") / "make-run.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(make_run_command(env), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while "ready in" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - started > 240:
                pytest.fail(f"make run did not come up:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.3)
        yield Stack(f"http://127.0.0.1:{api_port}", env["AWS_ENDPOINT_URL"], env, log, time.monotonic() - started,
                    Path(env["LOCAL_STATE_DIR"]) / "pg", pg_port)
    finally:
        # Ctrl-C stops everything it started: API, runner, LocalStack, Postgres.
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text(errors="replace")[-4000:]
    deadline = time.monotonic() + 20
    while not all(port_free(p) for p in (api_port, pg_port, aws_port)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(port_free(p) for p in (api_port, pg_port, aws_port)), "something kept running after Ctrl-C"
    shutil.rmtree(env["LOCAL_STATE_DIR"], ignore_errors=True)
