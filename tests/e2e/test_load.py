"""`make load`, small: 16 concurrent clients, 300 submits, on both local topologies.

(a) the `make run` stack, started as `make run` starts it (chalice local serves
    requests on threads: the case of the connection pool);
(b) the packaged stack deployed to LocalStack (API key, API Gateway, Lambda,
    LocalStack's own event source mapping).

The load tool runs as `make load` runs it, in a subprocess (locust patches the
standard library with gevent, which must not happen inside pytest). Then: no
response >= 500, every accepted task terminal, no verdict written twice (a
trigger counts every transition into 'completed'), and the results file holds
the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deployed_stack import deployed_stack
from e2e_stack import make_run
from helpers import execute, install_verdict_audit

from devstack.postgres import EmbeddedPostgres

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
USERS, SUBMITS = 16, 300


def run_load(url: str, out: Path, *, items: str, api_key: str = "") -> dict[str, Any]:
    cmd = [sys.executable, "-m", "load.run", "--url", url, "--users", str(USERS), "--submits", str(SUBMITS),
           "--items", items, "--out", str(out), "--drain-timeout", "120"]
    # The key goes the way `make load` passes it: through the environment.
    env = {k: v for k, v in os.environ.items() if k != "LOAD_API_KEY"}
    if api_key:
        env["LOAD_API_KEY"] = api_key
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    report = proc.stdout + proc.stderr
    assert out.exists(), report
    results = json.loads(out.read_text())
    # The report is the first thing to read when this fails.
    assert proc.returncode == 0 and results["ok"], report
    assert "req/s" in proc.stdout and "tasks/s" in proc.stdout
    return results


def check_results(results: dict[str, Any], database_url: str) -> None:
    assert results["responses_5xx"] == 0 and results["no_response"] == 0, results["server_errors"]
    assert results["load_phase"]["submits_sent"] == SUBMITS
    tasks = results["tasks"]
    assert tasks["accepted"] == SUBMITS, results["status_counts"]
    assert tasks["not_terminal"] == 0 and tasks["completed"] + tasks["failed"] == SUBMITS, tasks
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
        print(f"\n[load {label}] {USERS} clients x {SUBMITS} submits: {results['load_phase']['req_per_s']} req/s, "
              f"submit p50/p95/p99 {by_kind['submit']['p50_ms']}/{by_kind['submit']['p95_ms']}/"
              f"{by_kind['submit']['p99_ms']} ms, submit->completed p50/p99 "
              f"{tasks['submit_to_completed']['p50_ms']}/{tasks['submit_to_completed']['p99_ms']} ms, "
              f"{tasks['tasks_per_s']} tasks/s, statuses {results['status_counts']}")


def test_load_on_make_run(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with make_run(tmp_path_factory) as stack:
        database_url = EmbeddedPostgres(stack.pg_data, port=stack.pg_port).url
        install_verdict_audit(database_url)
        results = run_load(stack.api, tmp_path / "results.json", items="1-300")
        check_results(results, database_url)
    show("make run", results, capsys)


def test_load_on_the_deployed_stack(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]):
    with deployed_stack(tmp_path_factory, n_ads=20) as deployed:
        install_verdict_audit(deployed.database_url)
        # The write routes need the key there; without it every submit would be a 403.
        results = run_load(deployed.d.api_url, tmp_path / "results.json", items="1-20", api_key=deployed.d.api_key)
        assert results["config"]["api_key_sent"]
        check_results(results, deployed.database_url)
    show("deployed", results, capsys)
