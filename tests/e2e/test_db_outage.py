"""PostgreSQL goes away for ~20 s while tasks flow through the running stack.

Meanwhile the API answers 503 JSON (never a 500, never a stack trace); after the
restart every accepted task ends completed, or failed with a reason (tasks
whose three attempts all fell into the outage are parked in the DLQ by the
redrive policy and failed by the reconciler's stuck sweep).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

from tests.e2e.e2e_stack import http, make_run
from tests.helpers import execute
from toolkit.postgres import EmbeddedPostgres

pytestmark = pytest.mark.e2e
OUTAGE_SECONDS = 20


def test_database_outage(tmp_path_factory):
    env = {"RETRY_BASE_SECONDS": "2", "STUCK_AFTER_SECONDS": "45", "RESEND_GRACE_SECONDS": "5",
           "DB_CONNECT_TIMEOUT_SECONDS": "1"}
    with make_run(tmp_path_factory, env) as stack:
        pg = EmbeddedPostgres(stack.state_dir / "pg", port=int(stack.env["EMBEDDED_PG_PORT"]))
        db_url = stack.database_url
        accepted: list[int] = []
        refused: list[tuple[int, dict]] = []
        stop = threading.Event()
        rng = random.Random(7)

        def submit() -> None:
            while not stop.is_set():
                url = f"{stack.api}/moderation/async_predict?item_id={rng.randint(1, 300)}"
                status, body = http("POST", url, key=stack.api_key)
                if status == 202:
                    accepted.append(body["task_id"])
                else:
                    refused.append((status, body))
                time.sleep(0.05)

        submitter = threading.Thread(target=submit, daemon=True)
        submitter.start()
        time.sleep(3)
        pg.stop()
        down_at = time.monotonic()
        time.sleep(2)
        health_status, health = http("GET", f"{stack.api}/health")
        read_status, read = http("GET", f"{stack.api}/moderation/moderation_result/1", key=stack.api_key)
        time.sleep(OUTAGE_SECONDS - 2)
        pg.start()
        up_at = time.monotonic()
        time.sleep(5)
        stop.set()
        submitter.join(15)

        assert health_status == 503 and health["checks"]["database"]["ok"] is False
        assert read_status == 503 and read["code"] == "dependency_unavailable"
        assert refused, "no request was refused while the database was down"
        assert {s for s, _ in refused} == {503}, Counter(s for s, _ in refused)
        assert all(b["code"] == "dependency_unavailable" and "Traceback" not in str(b) for _, b in refused)
        assert accepted, "nothing was accepted"

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = execute(db_url, "SELECT id, status, error_message FROM moderation_results WHERE id = ANY(%s)",
                           (accepted,))
            if len(rows) == len(accepted) and all(r[1] in ("completed", "failed") for r in rows):
                break
            time.sleep(1)
        assert len(rows) == len(set(accepted)), "an accepted task is missing"
        statuses = Counter(r[1] for r in rows)
        assert set(statuses) <= {"completed", "failed"}, statuses
        assert all(r[2] for r in rows if r[1] == "failed"), "a failed task has no reason"
        print(f"\noutage {up_at - down_at:.1f} s: accepted {len(accepted)}, refused {len(refused)} (503), "
              f"final {dict(statuses)}, settled {time.monotonic() - up_at:.1f} s after restart")
