"""Start `make run` and wait until it is ready: the one way tests, bench and load get a stack.

Free ports and a state dir of its own: it runs beside a developer's `make run`, and
beside other stacks, sharing no database, endpoint or queue.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack.run import READY
from toolkit import names, procs
from toolkit.local_keys import LocalKeys

AWS_CLI = Path(sys.executable).with_name("aws")  # the virtualenv's
STOP_TIMEOUT_S = 120.0  # make run stops the runner, the API, LocalStack and PostgreSQL in turn
_PORT_KEYS = ("PORT", "EMBEDDED_PG_PORT", "AWS_ENDPOINT_URL")  # as ports_of orders them


@dataclass(frozen=True)
class RunningStack:
    api: str  # http://127.0.0.1:<port>
    endpoint: str  # AWS_ENDPOINT_URL of its LocalStack
    database_url: str
    env: dict[str, str]  # the environment the stack runs with (credentials, endpoint, ...)
    log: Path  # make run's combined output
    state_dir: Path  # its LOCAL_STATE_DIR
    startup_seconds: float
    api_key: str  # x-api-key: make run enforces keys as the deployed API does

    def headers(self, **extra: str) -> dict[str, str]:
        """Request headers with the stack's API key (and any others given)."""
        return {"x-api-key": self.api_key, **extra}

    def aws(self, *args: str) -> dict[str, Any]:
        """`aws --endpoint-url ... --output json <args>` (the AWS CLI from the virtualenv)."""
        out = subprocess.run([str(AWS_CLI), "--endpoint-url", self.endpoint, "--output", "json", *args], env=self.env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return dict(json.loads(out)) if out.strip() else {}

    def queue_url(self, name: str) -> str:
        return str(self.aws("sqs", "get-queue-url", "--queue-name", name)["QueueUrl"])


def make_run_env(extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a `make run` on free ports (PORT is the API's) with a state dir of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL")}
    env.update(names.LOCAL_CREDENTIALS, **(extra_env or {}))
    env.setdefault("AWS_ENDPOINT_URL", names.endpoint(procs.free_port()))
    env.setdefault("EMBEDDED_PG_PORT", str(procs.free_port()))
    env.setdefault("PORT", str(procs.free_port()))
    # mkdtemp, not pytest's tmp_path: see EmbeddedPostgres.
    env.setdefault("LOCAL_STATE_DIR", tempfile.mkdtemp(prefix="moderation-stack-"))
    return env


def make_run_command(extra_args: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "devstack.run", *extra_args]


def ports_of(env: Mapping[str, str]) -> list[int]:
    """The ports a `make run` with this environment listens on: API, PostgreSQL, AWS."""
    return [int(env["PORT"]), int(env["EMBEDDED_PG_PORT"]), urlsplit(env["AWS_ENDPOINT_URL"]).port or 0]


@contextmanager
def make_run(*, log: Path | None = None, extra_env: Mapping[str, str] | None = None,
             extra_args: Sequence[str] = (), timeout: float = 240.0) -> Iterator[RunningStack]:
    """`python -m devstack.run` on free ports with its own state dir, as `make run` starts it;
    yields once it prints that it is ready; on exit sends Ctrl-C (SIGINT), waits, and raises if
    it did not exit 0 or left any of its ports listening."""
    env = make_run_env(extra_env)
    state = Path(env["LOCAL_STATE_DIR"])
    log = log or state / "make-run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        run = procs.start(make_run_command(extra_args), ready=lambda: READY in log.read_text(errors="replace"),
                          log_file=log, env=env, timeout=timeout)
    except procs.StartError as err:
        _forget(state, extra_env)
        raise RuntimeError(f"make run did not come up: {err}") from err
    assert run.process is not None
    try:
        yield RunningStack(api=f"http://{names.HOST}:{env['PORT']}", endpoint=env["AWS_ENDPOINT_URL"],
                           database_url=env.get("DATABASE_URL") or names.database_url(int(env["EMBEDDED_PG_PORT"])),
                           env=env, log=log, state_dir=state, startup_seconds=time.monotonic() - started,
                           api_key=LocalKeys(state).own_key())
    finally:
        # As a developer stops it. Only make run gets the signal (its children have
        # process groups of their own): stopping them is its job, checked below.
        run.process.send_signal(signal.SIGINT)
        try:
            code: int | None = run.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            code = None
        # Its own ports, not an endpoint or a database the caller gave it.
        ours = [port for key, port in zip(_PORT_KEYS, ports_of(env), strict=True) if key not in (extra_env or {})]
        deadline = time.monotonic() + 10
        while (left := {p: who for p in ours if (who := procs.holder(p))}) and time.monotonic() < deadline:
            time.sleep(0.5)
        run.kill()  # what is left of it, after the check
        problem = (f"make run exited with {code} after Ctrl-C; ports still held: {left or 'none'}\n"
                   f"--- last lines of {log} ---\n{procs.tail(log)}") if code != 0 or left else ""
        _forget(state, extra_env)
    if problem:  # reached only when the body did not raise: never hide its error
        raise RuntimeError(problem)


def _forget(state: Path, extra_env: Mapping[str, str] | None) -> None:
    if "LOCAL_STATE_DIR" not in (extra_env or {}):  # ours, made by make_run_env
        shutil.rmtree(state, ignore_errors=True)
