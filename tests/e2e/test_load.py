"""`make load`, small: 16 concurrent clients, 300 submits, on the `make run` stack, started as `make run`
starts it (chalice local serves requests on threads: the case of the connection pool); the same on the
packaged stack deployed to LocalStack is in test_load_deployed.py.

The load tool runs as `make load` runs it, in a subprocess (locust patches the
standard library with gevent, which must not happen inside pytest). Then: no
response >= 500, every accepted task terminal, no verdict written twice (a
trigger counts every transition into 'completed'), and the results file holds
the figures. And, against a fake API that fails, that the tool exits non-zero.

The stacks are the session's (tests/conftest.py SHARED_STACKS): the module before leaves them settled,
with nothing in flight, and only this module's tasks are on them while it runs, so the trigger counts
only the load's verdicts.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.e2e_stack import Stack, settle
from tests.helpers import execute, http_server, verdicts_counted

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
USERS, SUBMITS = 16, 300


def load_tool(url: str, out: Path, *args: str, api_key: str = "") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "measure.load.run", "--url", url, "--out", str(out), *args]
    # The key goes the way `make load` passes it: through the environment.
    env = {k: v for k, v in os.environ.items() if k != "LOAD_API_KEY"}
    if api_key:
        env["LOAD_API_KEY"] = api_key
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def run_load(url: str, out: Path, *, items: str, api_key: str = "", submits: int = SUBMITS,
             drain_poll: float = 0.5) -> dict[str, Any]:
    proc = load_tool(url, out, "--users", str(USERS), "--submits", str(submits), "--items", items,
                     "--drain-timeout", "180", "--drain-poll", str(drain_poll), api_key=api_key)
    report = proc.stdout + proc.stderr
    assert out.exists(), report
    results = json.loads(out.read_text())
    assert results["config"]["drain_poll_s"] == drain_poll
    # The report is the first thing to read when this fails.
    assert proc.returncode == 0 and results["ok"], report
    assert "req/s" in proc.stdout and "tasks/s" in proc.stdout
    return results


def check_results(results: dict[str, Any], database_url: str, *, submits: int = SUBMITS) -> None:
    assert results["responses_5xx"] == 0 and results["no_response"] == 0, results["server_errors"]
    assert results["load_phase"]["submits_sent"] == submits
    tasks = results["tasks"]
    assert tasks["accepted"] == submits, results["status_counts"]
    assert tasks["not_terminal"] == 0 and tasks["completed"] + tasks["failed"] == submits, tasks
    # The figures are there.
    assert results["load_phase"]["req_per_s"] > 0 and tasks["tasks_per_s"] > 0
    for kind in ("submit", "poll"):
        figures = results["by_kind"][kind]
        assert figures["count"] > 0 and 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    latency = tasks["submit_to_completed"]
    assert latency["count"] == tasks["completed"] and latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    # A verdict is written once: one transition into 'completed' per completed task, none repeated.
    twice = execute(database_url, "SELECT task_id, count(*) FROM verdict_writes GROUP BY task_id HAVING count(*) > 1")
    assert twice == [], f"verdicts written more than once: {twice[:10]}"
    (written,) = execute(database_url, "SELECT count(*) FROM verdict_writes")[0]
    assert written == tasks["completed"]


def show(label: str, results: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    by_kind, tasks = results["by_kind"], results["tasks"]
    with capsys.disabled():
        phase = results["load_phase"]
        print(f"\n[load {label}] {USERS} clients x {phase['submits_sent']} submits: {phase['req_per_s']} req/s, "
              f"submit p50/p95/p99 {by_kind['submit']['p50_ms']}/{by_kind['submit']['p95_ms']}/"
              f"{by_kind['submit']['p99_ms']} ms, submit->completed p50/p99 "
              f"{tasks['submit_to_completed']['p50_ms']}/{tasks['submit_to_completed']['p99_ms']} ms, "
              f"{tasks['tasks_per_s']} tasks/s, statuses {results['status_counts']}")


def test_load_on_make_run(shared_make_run: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    stack = shared_make_run
    settle(stack)  # nothing of another module's still in flight, to be counted as this load's
    try:
        with verdicts_counted(stack.database_url):
            results = run_load(stack.api, tmp_path / "results.json", items="1-300", api_key=stack.api_key)
            assert results["config"]["api_key_sent"]  # make run enforces keys as the deployed API does
            check_results(results, stack.database_url)
    finally:
        settle(stack)
    show("make run", results, capsys)


class FailingAPI(BaseHTTPRequestHandler):
    """A fake API: every third submit answers 500, and task 2 never finishes."""

    submits = itertools.count(1)
    created = datetime.now(UTC)

    def do_GET(self) -> None:
        if self.path == "/health":
            return self._send(200, {"status": "ok"})
        task_id = int(self.path.rsplit("/", 1)[1])
        done = task_id != 2
        self._send(200, {"task_id": task_id, "status": "completed" if done else "pending",
                         "created_at": self.created.isoformat(),
                         "processed_at": (self.created + timedelta(milliseconds=50)).isoformat() if done else None})

    def do_POST(self) -> None:
        n = next(self.submits)
        if n % 3 == 0:
            return self._send(500, {"code": "internal_error", "message": "internal error"})
        self._send(202, {"task_id": n, "status": "pending", "message": "Moderation request accepted"})

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


def test_server_errors_and_unfinished_tasks_fail_the_run(tmp_path: Path):
    """What makes `make load` usable in CI: a non-zero exit, and the 5xx shouted, not buried."""
    with http_server(FailingAPI) as url:
        proc = load_tool(url, tmp_path / "results.json", "--users", "4", "--submits", "30", "--drain-timeout", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert not results["ok"]
    assert results["by_kind"]["submit"]["statuses"] == {"202": 20, "500": 10}
    assert results["responses_5xx"] == 10 and results["server_errors"][0]["status"] == 500
    assert results["tasks"]["accepted"] == 20 and results["tasks"]["not_terminal_ids"] == [2]
    assert results["tasks"]["tasks_per_s"] is None  # not every task finished: no flattering figure
    assert "10 REQUESTS FAILED ON THE SERVER SIDE: 500: 10" in proc.stdout
    assert "FAILED: 10 responses >= 500; 1 accepted tasks did not reach completed/failed" in proc.stdout


class SheddingAPI(FailingAPI):
    """A fake API under overload: every 4th submit 503 with Retry-After, every 5th 429 without."""

    submits = itertools.count(1)

    def do_GET(self) -> None:
        if self.path == "/health":
            return self._send(200, {"status": "ok"})
        self._send(200, {"task_id": int(self.path.rsplit("/", 1)[1]), "status": "completed",
                         "created_at": self.created.isoformat(), "processed_at": self.created.isoformat()})

    def do_POST(self) -> None:
        n = next(self.submits)
        error = {"code": "overloaded", "message": "busy", "detail": "busy"}
        if n % 4 == 0:
            return self._send(503, error, {"Retry-After": "1"})
        if n % 5 == 0:
            return self._send(429, error)
        self._send(202, {"task_id": n, "status": "pending", "message": "Moderation request accepted"})


def test_the_overload_profile_judges_each_phase_against_the_goal(tmp_path: Path):
    """`make load PROFILE=overload`, two short phases: shedding is an answer, a 429 without Retry-After is not."""
    with http_server(SheddingAPI) as url:
        proc = load_tool(url, tmp_path / "overload.json", "--profile", "overload", "--phases", "3,6",
                         "--duration", "1", "--drain-timeout", "5")
    report = proc.stdout + proc.stderr
    assert proc.returncode == 1, report
    results = json.loads((tmp_path / "overload.json").read_text())
    assert results["profile"] == "overload" and not results["ok"]
    assert [p["config"]["users"] for p in results["phases"]] == [3, 6]
    for phase in results["phases"]:
        statuses = phase["by_kind"]["submit"]["statuses"]
        assert set(statuses) == {"202", "429", "503"}, statuses
        assert phase["refusals"]["without_retry_after"] == statuses["429"] > 0
        assert phase["tasks"]["accepted"] == statuses["202"] == phase["tasks"]["completed"]
        assert phase["problems"] == [f"{statuses['429']} answers 429/503 without Retry-After"]
    assert "REQUESTS FAILED ON THE SERVER SIDE" not in proc.stdout  # a 503 is shed load, not a failure
    assert "FAILED: the goal was missed" in proc.stdout
