"""The deployed topology for end-to-end tests: the packaged template and zip,
deployed to a real LocalStack (host mode, no Docker) the way `make
deploy-localstack` does it, with the functions running as local processes
against an embedded PostgreSQL:

    API Gateway -> API Lambda -> SQS -> event source mapping -> scoring Lambda -> PostgreSQL

Everything gets its own free ports and temp dirs, so it runs beside a
developer's `make run` / `make deploy-localstack`. Used by test_deployed.py
and test_load.py.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import urllib3

from infra import deploy_localstack as dl
from tests.helpers import free_port
from toolkit import names

# How long the session's `deployed` fixture (tests/conftest.py) took, by step; test_deployed.py prints it.
FIXTURE_TIMINGS: dict[str, Any] = {}


def http_json(method: str, url: str, *, api_key: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    """Status and JSON body (or text) of one request, with the x-api-key header if given."""
    headers = {"Content-Type": "application/json", **({"x-api-key": api_key} if api_key else {})}
    body = b"" if method == "POST" else None
    resp = urllib3.request(method, url, body=body, headers=headers, timeout=timeout, retries=False)
    try:
        return resp.status, json.loads(resp.data or b"null")
    except ValueError:
        return resp.status, resp.data.decode(errors="replace")


@dataclass
class Deployed:
    d: dl.Deployment
    endpoint: str
    database_url: str  # the superuser's, for the tests' own queries
    function_url: str  # the functions' login role (names.APP_DB_ROLE), by password: the secret's value

    def client(self, service: str) -> Any:
        return dl.client(self.endpoint, service)

    def post(self, path: str, *, api_key: str | None = None) -> tuple[int, Any]:
        return http_json("POST", self.d.api_url + path, api_key=api_key)

    def get(self, path: str, *, api_key: str | None = "") -> tuple[int, Any]:
        """A read, with the deployment's API key unless api_key says otherwise (None: no key)."""
        return http_json("GET", self.d.api_url + path, api_key=self.d.api_key if api_key == "" else api_key)

    def sql(self, query: str, params: Any = None) -> list[tuple]:
        conn = psycopg2.connect(self.database_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()


@contextmanager
def deployed_stack(tmp_path_factory: pytest.TempPathFactory, *, n_ads: int = 20,
                   timings: dict[str, Any] | None = None) -> Iterator[Deployed]:
    """Embedded PostgreSQL + LocalStack with the local-process executor + the deployed stack, seeded with n_ads ads."""
    from toolkit.localstack import HostLocalStack
    from toolkit.postgres import EmbeddedPostgres
    from toolkit.seed import seed_demo_data

    timings = {} if timings is None else timings
    base = tmp_path_factory.mktemp("deployed")
    endpoint = names.endpoint(free_port())
    # Not under tmp_path_factory (see tests/conftest.py's pg_server): every pytest process, each xdist
    # worker included, chmods /tmp/pytest-of-<user> back to 0700, and initdb, run as another user, fails.
    pg_root = Path(tempfile.mkdtemp(prefix="moderation-deployed-pg-"))
    pg = EmbeddedPostgres(pg_root / "pg", port=free_port())
    stack = HostLocalStack(data_dir=base / "localstack", endpoint=endpoint)
    t0 = time.monotonic()
    database_url = pg.start()
    try:
        dl.ensure_executor_installed(stack)
        t1 = time.monotonic()
        stack.start(extra_env=dl.executor_env())
        timings["localstack_start_s"] = time.monotonic() - t1
        function_url = dl.app_database_url(pg)
        d = dl.deploy(endpoint=endpoint, database_url=function_url, package_dir=base / "package")
        timings.update({f"{k}_s": v for k, v in d.timings.items()})
        assert seed_demo_data(database_url, n_ads=n_ads) == n_ads
        timings["fixture_total_s"] = time.monotonic() - t0
        yield Deployed(d, endpoint, database_url, function_url)
    finally:
        stack.stop()
        pg.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


_REPORT = re.compile(r"REPORT RequestId: \S+\s+Duration: ([\d.]+) ms.*?(?:Init Duration: ([\d.]+) ms)?\s*$")


def cold_starts(deployed: Deployed) -> dict[str, list[dict[str, float]]]:
    """Per function: the invocations that had an Init Duration (cold starts), from the REPORT lines in CloudWatch Logs."""
    logs = deployed.client("logs")
    out: dict[str, list[dict[str, float]]] = {}
    for fn in names.functions():
        group = f"/aws/lambda/{deployed.d.function_name(fn)}"
        try:
            events = logs.filter_log_events(logGroupName=group, filterPattern="REPORT")["events"]
        except logs.exceptions.ResourceNotFoundException:  # never invoked
            events = []
        matches = [_REPORT.search(e["message"].strip()) for e in events]
        out[fn] = [{"init_ms": float(m.group(2)), "duration_ms": float(m.group(1))} for m in matches if m and m.group(2)]
    return out


def poll_result(deployed: Deployed, task_id: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = deployed.get(f"/moderation/moderation_result/{task_id}")
        assert status == 200, body
        if body["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.25)
