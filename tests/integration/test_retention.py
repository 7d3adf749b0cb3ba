"""Retention: the reconciler deletes finished tasks, and their trails, older than
RETENTION_DAYS, in bounded batches (docs/operations/retention.md), on real PostgreSQL.

The big test purges 100,000 old tasks (and their 200,000 trail rows) while
threads keep submitting through the API's use case: every submit must succeed,
and exactly the old finished tasks must be gone. The figures (rows purged, submit
latency during the purge) are printed, never asserted.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import pytest

from chalicelib import deps
from chalicelib.operations.reconcile import Reconciler
from tests.helpers import execute, insert_ad

OLD = 100_000
SUBMITTERS = 4


def add_tasks(db: str, n: int, *, created: str, processed: str | None = None, status: str = "completed") -> None:
    """n finished tasks (two trail rows each) created `created` ago, finished (and last changed) `processed`
    ago (default: then)."""
    completed = status == "completed"
    execute(db, """
        WITH t AS (
            INSERT INTO moderation_results (item_id, status, is_violation, probability, model_version, error_message,
                                            created_at, processed_at, updated_at, client_id)
            SELECT 1 + g %% 300, %(status)s, %(verdict)s, %(probability)s, %(version)s, %(error)s,
                   now() - %(created)s::interval + g * interval '1 ms', now() - %(processed)s::interval + g * interval '1 ms',
                   now() - %(processed)s::interval + g * interval '1 ms', 'tester'
            FROM generate_series(1, %(n)s) AS g
            RETURNING id, status
        ), a AS (INSERT INTO task_events (task_id, kind) SELECT id, 'accepted' FROM t)
        INSERT INTO task_events (task_id, kind, attempt, outcome) SELECT id, 'attempt', 1, status FROM t
    """, {"n": n, "created": created, "processed": processed or created, "status": status,
          "verdict": False if completed else None, "probability": 0.25 if completed else None,
          "version": "lr-old" if completed else None, "error": None if completed else "boom"})


def counts(db: str) -> dict[str, int]:
    # Statistics first: just after 100,000 rows went in, before autovacuum has looked, the planner
    # takes the tables for empty and runs the anti-join as a nested loop of sequential scans
    # (minutes; seen once in CI). A production table has its statistics.
    execute(db, "ANALYZE moderation_results; ANALYZE task_events")
    return dict(execute(db, """
        SELECT 'tasks', count(*) FROM moderation_results UNION ALL SELECT 'events', count(*) FROM task_events
        UNION ALL SELECT 'orphan_events', count(*) FROM task_events e
                  WHERE NOT EXISTS (SELECT 1 FROM moderation_results m WHERE m.id = e.task_id)"""))


def reconciler(**kwargs) -> Reconciler:
    # Stuck tasks are another sweep's business: this test's old unfinished tasks must stay as they are.
    return Reconciler(deps.task_store(), deps.maintenance_store(), deps.queue(),
                      resend_grace_seconds=60, stuck_after_seconds=100 * 86400, **kwargs)


def test_purging_100k_old_tasks_keeps_submits_answering(app_env, monkeypatch, capsys):
    monkeypatch.setenv("DB_POOL_SIZE", str(SUBMITTERS + 1))
    deps.reset()
    item_id = insert_ad(app_env)
    add_tasks(app_env, OLD * 9 // 10, created="40 days")
    add_tasks(app_env, OLD // 10, created="35 days", status="failed")
    keep = {  # what must survive: unfinished, finished recently, or young
        "old_unfinished": execute(app_env, "INSERT INTO moderation_results (item_id, status, created_at, client_id) "
                                           "SELECT 1, 'processing', now() - interval '40 days', 'tester' "
                                           "FROM generate_series(1, 20) RETURNING id"),
    }
    add_tasks(app_env, 50, created="40 days", processed="1 day")  # e.g. failed as stuck only yesterday
    add_tasks(app_env, 500, created="29 days")
    before = counts(app_env)
    assert before["tasks"] == OLD + 20 + 50 + 500 and before["orphan_events"] == 0

    service, purging = deps.service(), threading.Event()
    latencies: list[list[float]] = [[] for _ in range(SUBMITTERS)]
    submitted: list[list[int]] = [[] for _ in range(SUBMITTERS)]
    errors: list[BaseException] = []

    def submit(n: int) -> None:
        while not purging.is_set():  # until the purge starts
            time.sleep(0.001)
        while purging.is_set() or not submitted[n]:
            started = time.perf_counter()
            try:
                submitted[n].append(service.submit(item_id, client="tester")["task_id"])
            except BaseException as exc:  # reported below
                errors.append(exc)
                return
            latencies[n].append(time.perf_counter() - started)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(SUBMITTERS)]
    for t in threads:
        t.start()
    purging.set()
    started = time.perf_counter()
    report = reconciler(retention_days=30, purge_batch=1000, purge_budget_seconds=600).run()
    seconds = time.perf_counter() - started
    purging.clear()
    for t in threads:
        t.join()

    assert errors == []
    assert report.purged == OLD
    after = counts(app_env)
    new_ids = [i for ids in submitted for i in ids]
    assert after["orphan_events"] == 0
    assert after["tasks"] == before["tasks"] - OLD + len(new_ids)
    assert after["events"] == before["events"] - 2 * OLD + 2 * len(new_ids)  # accepted + enqueued each
    assert all(ids for ids in submitted)
    left = dict(execute(app_env, """
        SELECT CASE WHEN id = ANY(%s) THEN 'new'
                    WHEN status = 'processing' THEN 'old_unfinished'
                    WHEN created_at > now() - interval '30 days' THEN 'young'
                    WHEN updated_at > now() - interval '30 days' THEN 'finished_recently' ELSE 'old' END, count(*)
        FROM moderation_results GROUP BY 1""", (new_ids,)))
    assert left == {"new": len(new_ids), "old_unfinished": len(keep["old_unfinished"]), "young": 500, "finished_recently": 50}
    flat = sorted(x * 1000 for ms in latencies for x in ms)
    with capsys.disabled():
        print(f"\n[retention] purged {report.purged:,} tasks in {seconds:.1f} s ({report.purged / seconds:,.0f}/s); "
              f"{len(flat)} submits from {SUBMITTERS} threads meanwhile, latency p50 {statistics.median(flat):.1f} ms, "
              f"p99 {flat[int(len(flat) * 0.99) - 1]:.1f} ms, max {flat[-1]:.1f} ms")


def test_a_run_stops_at_its_budget_and_the_next_goes_on(app_env):
    add_tasks(app_env, 2500, created="40 days")
    first = reconciler(retention_days=30, purge_batch=1000, purge_budget_seconds=0)
    assert first.purge() == (1000, 2000)  # one batch, then the budget is spent
    assert reconciler(retention_days=30, purge_batch=1000).purge() == (1500, 3000)
    assert counts(app_env) == {"tasks": 0, "events": 0, "orphan_events": 0}


def test_zero_keeps_everything_and_the_default_is_30_days(app_env, monkeypatch, capsys, caplog):
    add_tasks(app_env, 10, created="400 days")
    add_tasks(app_env, 10, created="29 days")
    assert reconciler().run().purged == 0  # Reconciler's own default: nothing configured, nothing deleted
    monkeypatch.setenv("RETENTION_DAYS", "0")
    deps.reset()
    assert deps.reconciler().run().purged == 0
    monkeypatch.delenv("RETENTION_DAYS")
    deps.reset()
    capsys.readouterr()
    assert deps.reconciler().run().purged == 10
    assert counts(app_env)["tasks"] == 10
    [log] = [r for r in caplog.records if r.getMessage() == "retention: old finished tasks deleted"]
    assert (log.tasks, log.task_events, log.older_than_days, log.more_left) == (10, 20, 30, False)  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [emf] = [line for line in lines if "TasksPurged" in line]
    assert (emf["TasksPurged"], emf["TaskEventsPurged"], emf["function"]) == ([10.0], [20.0], "reconcile")


def test_a_negative_retention_is_a_configuration_error(app_env, monkeypatch):
    from chalicelib.config import ConfigurationError

    monkeypatch.setenv("RETENTION_DAYS", "-1")
    deps.reset()
    with pytest.raises(ConfigurationError, match="RETENTION_DAYS must be 0 or more"):
        deps.reconciler()
