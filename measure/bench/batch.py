"""Scorer throughput by batch size, against real PostgreSQL, with SQS stubbed.

For each batch size: insert N pending tasks for the seeded demo ads, build
Lambda-shaped SQS records for them and call `Scorer.handle` batch after batch,
exactly as the `score` function does. SQS is a stub (the scorer only asks it
for maxReceiveCount, DLQ sends and visibility changes, and a healthy run makes
none of the last two), so the figures are scorer + PostgreSQL. The app logs as
in production (INFO), to /dev/null.

"PostgreSQL alone" runs the same claim + write transaction through the store
with every claimed task marked completed: no parsing, no model, no logging.
It is the ceiling the scorer can approach at that batch size. It writes the
outcomes only; "PostgreSQL alone + trail" also writes the `attempt` trail row
per task that the scorer's one write statement carries (issue 24: both shown).

"scorer + shadow" is the scorer with a `shadow` version set (chalicelib/scoring/scorer.py):
every completed task is scored again by another version (the packaged model with
other thresholds: the same work as any version of its size) and its verdict
written to shadow_verdicts after the commit. Its rate against the scorer's, at
batch 100, is what shadow scoring costs (target: keep at least 0.6 of it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg2

from toolkit import names, stats
from toolkit.seed import DEMO_ADS

BATCH_SIZES = (1, 10, 100)
# Every run does at least this many batches, then stops at its time budget.
MIN_BATCHES = 10
# Each batch size is measured this many times, interleaved with the others.
ROUNDS = 3
TARGET_RATIOS = {10: 6.0, 100: 14.0}
TARGET_SHADOW_KEEPS = 0.6  # scorer + shadow / scorer, at batch 100
TARGET_OF_CEILING = 0.6  # scorer / PostgreSQL alone, at batch 100 (issue 24)
T = TypeVar("T")


class StubQueue:
    """Stands in for chalicelib.queue.TaskQueue: the scorer's three calls, no SQS."""

    def max_receive_count(self, default: int) -> int:
        return default

    def send_to_dlq(self, envelopes: Sequence[dict[str, Any]]) -> set[int]:
        return set(range(len(envelopes)))  # every one stored

    def change_visibility(self, changes: Sequence[Any]) -> None:
        pass


def _free_port() -> int:
    # TODO(issue 12): toolkit.procs.free_port once h-stack's toolkit/procs.py lands.
    with socket.socket() as s:
        s.bind((names.HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def database() -> Iterator[str]:
    """The URL of a fresh, migrated database with the demo ads, on an embedded
    server in a temp dir on a free port; removed afterwards."""
    from chalicelib.storage.migrations import apply_migrations
    from toolkit.postgres import EmbeddedPostgres
    from toolkit.seed import seed_demo_data

    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    pg = EmbeddedPostgres(root / "data", port=_free_port(), database=names.DATABASE)
    try:
        url = pg.start()
        apply_migrations(url)
        seed_demo_data(url)
        yield url
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def stdout_to_devnull(path: str = os.devnull) -> Iterator[None]:
    """File descriptor 1 to /dev/null (or to `path`): the app's JSON logs and metrics (Powertools)
    hold the stream in their own ways; the progress bar draws on stderr."""
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def insert_tasks(url: str, n: int) -> list[tuple[int, int]]:
    """n pending, already-enqueued tasks over the demo ads: (task_id, item_id)."""
    return _sql(url, "INSERT INTO moderation_results (item_id, status, enqueued_at, client_id) "
                     "SELECT g %% %s + 1, 'pending', now(), 'bench' FROM generate_series(1, %s) g RETURNING id, item_id",
                DEMO_ADS, n)


def count_completed(url: str, task_ids: Sequence[int]) -> int:
    return int(_sql(url, "SELECT count(*) FROM moderation_results WHERE id = ANY(%s) AND status = 'completed'",
                    list(task_ids))[0][0])


def sqs_records(tasks: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Lambda SQS event records of the app's own messages, as the local event source mapping builds them."""
    from chalicelib.queue import task_message
    from devstack.runner import lambda_record

    arn = f"arn:aws:sqs:{names.REGION}:{names.LOCAL_ACCOUNT_ID}:{names.queues().main}"
    return [lambda_record({"MessageId": str(uuid.uuid4()), "ReceiptHandle": f"bench-{uuid.uuid4()}",
                           "Body": json.dumps(task_message(tid, iid)), "Attributes": {"ApproximateReceiveCount": "1"}},
                          arn, names.REGION) for tid, iid in tasks]


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _printed() -> int:
    """Bytes written so far to file descriptor 1 (0 unless it is a regular file: stdout_to_devnull(path))."""
    sys.stdout.flush()
    return os.fstat(1).st_size


def _timed(url: str, size: int, n: int, budget_s: float, batches_of: Callable[[list[tuple[int, int]]], list[Any]],
           handle: Callable[[Any], int]) -> dict[str, Any]:
    """n fresh tasks through `handle`, `size` at a time, after one untimed warm-up batch; stops
    past the time budget once MIN_BATCHES are done. `handle` returns how many messages failed.
    log_bytes: what the timed batches printed (logs and EMF metrics: CloudWatch Logs' bill)."""
    n = max(n, MIN_BATCHES * size)
    tasks = insert_tasks(url, n - n % size + size)
    batches = _chunks(batches_of(tasks), size)
    handle(batches[0])  # warm-up: connection, caches
    per_batch_ms: list[float] = []
    failures = 0
    printed = _printed()
    started = time.perf_counter()
    for batch in batches[1:]:
        t = time.perf_counter()
        failures += handle(batch)
        per_batch_ms.append((time.perf_counter() - t) * 1000)
        if len(per_batch_ms) >= MIN_BATCHES and time.perf_counter() - started > budget_s:
            break
    seconds = time.perf_counter() - started
    log_bytes = _printed() - printed
    messages = len(per_batch_ms) * size
    completed = count_completed(url, [t for t, _ in tasks[size : size + messages]])
    return {"messages": messages, "seconds": seconds, "per_batch_ms": per_batch_ms, "completed": completed,
            "batch_item_failures": failures, "log_bytes": log_bytes}


def _merge(size: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rounds at one batch size: the median rate, the batch latencies pooled."""
    rates = [r["messages"] / r["seconds"] for r in rounds]
    return {
        "batch": size,
        "msg_per_s": stats.percentile(rates, 50),
        "msg_per_s_rounds": rates,
        "ms_per_batch": stats.summary([ms for r in rounds for ms in r["per_batch_ms"]]),
        **{k: sum(r[k] for r in rounds) for k in ("messages", "seconds", "completed", "batch_item_failures")},
        "log_bytes_per_message": sum(r.get("log_bytes", 0) for r in rounds) / max(1, sum(r["messages"] for r in rounds)),
    }


def steps() -> int:
    return 1 + ROUNDS * len(BATCH_SIZES)


def run(messages: int, budget_s: float, progress: Any) -> dict[str, Any]:
    from chalicelib.domain.tasks import COMPLETED, BatchWrite, EventRow, TaskUpdate
    from chalicelib.queue import TaskQueue
    from chalicelib.scoring.scorer import Scorer
    from chalicelib.serving.aliases import Pinned
    from chalicelib.serving.model import load_model
    from chalicelib.storage.db import Database
    from chalicelib.storage.scoring import ScoringStore

    def postgres_alone(batch: Sequence[int]) -> int:
        with store.transaction() as cur:
            claimed = store.claim(cur, batch).tasks
            done = [TaskUpdate(tid, COMPLETED, 1, is_violation=False, probability=0.5) for tid in claimed]
            store.write(cur, BatchWrite(done, []), model_version="bench")
        return 0

    def postgres_alone_trail(batch: Sequence[int]) -> int:
        # The write the scorer makes: every outcome and its `attempt` trail row (chalicelib.scoring.dispositions.trail).
        with store.transaction() as cur:
            claimed = store.claim(cur, batch).tasks
            done = [TaskUpdate(tid, COMPLETED, 1, is_violation=False, probability=0.5) for tid in claimed]
            trail = [EventRow(tid, "attempt", 1, COMPLETED, None, str(uuid.uuid4()), None) for tid in claimed]
            store.write(cur, BatchWrite(done, trail), model_version="bench")
        return 0

    def scorer(batch: Sequence[dict[str, Any]]) -> int:
        return len(score.handle(batch)["batchItemFailures"])

    def scorer_shadow(batch: Sequence[dict[str, Any]]) -> int:
        return len(shadowed.handle(batch)["batchItemFailures"])

    progress.set_description_str("scorer: starting PostgreSQL")
    # The app's output goes to a scratch file, not /dev/null, so its bytes can be counted (measure/bench/cost.py).
    with tempfile.NamedTemporaryFile(prefix="bench-logs-") as printed, database() as url, stdout_to_devnull(printed.name):
        settings = dict(_sql(url, "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                             ["server_version", "fsync", "synchronous_commit"]))
        store = ScoringStore(Database(url))
        # cast: the stub has exactly the methods Scorer calls on a TaskQueue.
        score = Scorer(store, cast(TaskQueue, StubQueue()), load_model(), retry_base_seconds=5, default_max_receive_count=3)
        shadow = dataclasses.replace(load_model(), version="bench-shadow", threshold=0.9, review_threshold=None)
        shadowed = Scorer(store, cast(TaskQueue, StubQueue()), Pinned(load_model(), shadow), retry_base_seconds=5,
                          default_max_receive_count=3)
        progress.update(1)
        series: dict[str, tuple[Callable[[list[tuple[int, int]]], list[Any]], Callable[[Any], int]]] = {
            "scorer": (sqs_records, scorer), "scorer_shadow": (sqs_records, scorer_shadow),
            "postgres_alone": (lambda ts: [t for t, _ in ts], postgres_alone),
            "postgres_alone_trail": (lambda ts: [t for t, _ in ts], postgres_alone_trail)}
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        # Rounds over every size and series, interleaved: a noisy neighbour on the
        # machine then hits batch 1 and batch 100 alike instead of skewing their ratio.
        for r in range(ROUNDS):
            for size in BATCH_SIZES:
                progress.set_description_str(f"scorer, + shadow, PostgreSQL alone: batch {size}, round {r + 1}/{ROUNDS}")
                for name, (batches_of, handle) in series.items():
                    runs.setdefault((name, size), []).append(
                        _timed(url, size, messages // ROUNDS, budget_s / ROUNDS, batches_of, handle))
                progress.update(1)
    rows = {name: [_merge(size, runs[(name, size)]) for size in BATCH_SIZES] for name in series}
    for sizes in rows.values():
        for row in sizes:
            row["ratio_to_batch1"] = row["msg_per_s"] / sizes[0]["msg_per_s"]
    for plain, shadowed_row, alone, alone_trail in zip(rows["scorer"], rows["scorer_shadow"], rows["postgres_alone"],
                                                       rows["postgres_alone_trail"], strict=True):
        shadowed_row["keeps_of_scorer"] = shadowed_row["msg_per_s"] / plain["msg_per_s"]
        plain["of_postgres_alone"] = plain["msg_per_s"] / alone["msg_per_s"]
        plain["of_postgres_alone_trail"] = plain["msg_per_s"] / alone_trail["msg_per_s"]
    return {
        "database": "embedded PostgreSQL, " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())),
        "sqs": "stubbed: max_receive_count, send_to_dlq, change_visibility are in-process no-ops",
        **rows,
        "targets": {str(k): v for k, v in TARGET_RATIOS.items()},
        "target_shadow_keeps": TARGET_SHADOW_KEEPS,
        "target_of_ceiling": TARGET_OF_CEILING,
    }
