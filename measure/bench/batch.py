"""Scorer throughput by batch size, against real PostgreSQL, with SQS stubbed.

For each batch size: insert N pending tasks for the seeded demo ads, build
Lambda-shaped SQS records for them and call `Scorer.handle` batch after batch,
exactly as the `score` function does. SQS is a stub (the scorer only asks it
for maxReceiveCount, DLQ sends and visibility changes, and a healthy run makes
none of the last two), so the figures are scorer + PostgreSQL.

"PostgreSQL alone" runs the same claim + write transaction through
`ModerationStore.claim` and `.write`, marking every claimed task
completed: no parsing, no model, no logging. It is the ceiling the scorer can
approach at that batch size.

Logs (Powertools, JSON on stdout) are off for the throughput runs; one extra
run at batch 100 has them on, written to /dev/null, to price them. The
profiled batch-100 run also has them on, as in production (INFO).
"""

from __future__ import annotations

import contextlib
import cProfile
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg2

from measure.bench import profiles
from measure.bench.common import OUT_DIR, ROOT, Percentiles, Progress, free_port, stdout_to_devnull

BATCH_SIZES = (1, 10, 100)
# Every timed run does at least this many batches, then stops at its time budget.
MIN_BATCHES = 10
# Each batch size is measured this many times, interleaved with the others.
ROUNDS = 3
TARGET_RATIOS = {10: 6.0, 100: 14.0}
BENCH_DB = f"moderation_bench_{os.getpid()}"
T = TypeVar("T")


class StubQueue:
    """Stands in for chalicelib.queue.TaskQueue: the scorer's three calls, no SQS."""

    def __init__(self, max_receive_count: int = 3) -> None:
        self._max_receive = max_receive_count
        self.dlq_sent = 0
        self.visibility_changes = 0

    def max_receive_count(self, default: int) -> int:
        return self._max_receive

    def send_to_dlq(self, envelopes: Sequence[dict[str, Any]]) -> set[int]:
        self.dlq_sent += len(envelopes)
        return set(range(len(envelopes)))

    def change_visibility(self, changes: Sequence[Any]) -> None:
        self.visibility_changes += len(changes)


# --- the database ---------------------------------------------------------------


@contextlib.contextmanager
def bench_database() -> Iterator[tuple[str, str]]:
    """(url, where) of a fresh, migrated database with the demo ads; removed afterwards.

    On DATABASE_URL's server a scratch database is created and dropped;
    otherwise an embedded server runs on a free port in a temp dir.
    """
    if os.environ.get("DATABASE_URL"):
        server = os.environ["DATABASE_URL"]
        url = _create_database(server)
        try:
            yield _prepare(url), f"scratch database {BENCH_DB} on DATABASE_URL's server"
        finally:
            _drop_database(server)
        return
    from toolkit.postgres import EmbeddedPostgres

    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    pg = EmbeddedPostgres(root / "data", port=free_port(), database="moderation")
    try:
        url = pg.start()
        yield _prepare(url), f"embedded PostgreSQL on port {pg.port} (temp dir)"
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _maintenance_connection(server_url: str) -> Any:
    conn = psycopg2.connect(server_url.rsplit("/", 1)[0] + "/postgres")
    conn.autocommit = True
    return conn


def _create_database(server_url: str) -> str:
    conn = _maintenance_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        cur.execute(f"CREATE DATABASE {BENCH_DB}")
    conn.close()
    return server_url.rsplit("/", 1)[0] + "/" + BENCH_DB


def _drop_database(server_url: str) -> None:
    conn = _maintenance_connection(server_url)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    conn.close()


def _prepare(url: str) -> str:
    from chalicelib.migrate import apply_migrations
    from toolkit.seed import seed_demo_data

    apply_migrations(url)
    seed_demo_data(url)
    return url


def server_settings(url: str) -> dict[str, str]:
    """Settings that move commit cost (a reader comparing with RDS wants them)."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        out = {}
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            cur.execute(f"SHOW {name}")
            out[name] = str(cur.fetchone()[0])
    conn.close()
    return out


def insert_tasks(url: str, n: int) -> list[tuple[int, int]]:
    """n pending, already-enqueued tasks over the demo ads 1..300; (task_id, item_id)."""
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO moderation_results (item_id, status, enqueued_at) "
            "SELECT g %% 300 + 1, 'pending', now() FROM generate_series(0, %s) g RETURNING id, item_id",
            (n - 1,),
        )
        rows = [(int(a), int(b)) for a, b in cur.fetchall()]
    conn.close()
    return rows


def count_completed(url: str, task_ids: Sequence[int]) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM moderation_results WHERE id = ANY(%s) AND status = 'completed'",
                    (list(task_ids),))
        n = int(cur.fetchone()[0])
    conn.close()
    return n


def sqs_records(tasks: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Lambda SQS event records, as the event source mapping would hand them over."""
    now = str(int(time.time() * 1000))
    return [
        {
            "messageId": str(uuid.uuid4()),
            "receiptHandle": f"bench-{uuid.uuid4()}",
            "body": json.dumps({"task_id": tid, "item_id": iid, "timestamp": "2026-01-01T00:00:00Z"}),
            "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now,
                           "ApproximateFirstReceiveTimestamp": now, "SenderId": "BENCH"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:moderation",
            "awsRegion": "us-east-1",
        }
        for tid, iid in tasks
    ]


# --- the runs -------------------------------------------------------------------


def set_app_log_level(level: str) -> None:
    """INFO (production) or WARNING (silent) for the app's Powertools logger."""
    from chalicelib.logs import logger

    if hasattr(logger, "setLevel"):
        logger.setLevel(level)
    else:  # the app switched loggers: fall back to the stdlib one of its service
        logging.getLogger("ad-moderation").setLevel(level)


@dataclass
class Rig:
    """What every run needs: the database URL, the scorer, its store and stub queue."""

    url: str
    scorer: Any
    store: Any
    queue: StubQueue


def build_rig(url: str) -> Rig:
    from chalicelib.db import Database
    from chalicelib.model import load_model
    from chalicelib.queue import TaskQueue
    from chalicelib.scoring import Scorer
    from chalicelib.storage import ModerationStore

    store = ModerationStore(Database(url))
    queue = StubQueue()
    # cast: the stub has exactly the methods Scorer calls on a TaskQueue.
    scorer = Scorer(store, cast(TaskQueue, queue), load_model(), retry_base_seconds=5, default_max_receive_count=3)
    return Rig(url, scorer, store, queue)


def _complete_all(store: Any, task_ids: Sequence[int]) -> None:
    """The scorer's transaction with a trivial decide: claim, complete every claimed task."""
    from chalicelib.domain import COMPLETED, BatchWrite, TaskUpdate

    with store.transaction() as cur:
        claimed = store.claim(cur, task_ids).tasks
        updates = [TaskUpdate(tid, COMPLETED, 1, is_violation=False, probability=0.5) for tid in claimed]
        store.write(cur, BatchWrite(updates, []), model_version="bench")


class KeptConnection:
    """A Database stand-in that keeps one connection open for good.

    ModerationStore only asks its database for `transaction()` (a cursor inside
    one transaction) and `ping()`. Running the store over this shows what the
    SQL costs without any per-transaction connection handling: the ceiling.
    """

    def __init__(self, url: str) -> None:
        import psycopg2.extras

        self._conn = psycopg2.connect(url)
        self._factory = psycopg2.extras.RealDictCursor

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._conn, self._conn.cursor(cursor_factory=self._factory) as cur:
            yield cur

    def ping(self) -> None:
        with self.transaction() as cur:
            cur.execute("SELECT 1")

    def close(self) -> None:
        self._conn.close()


@dataclass
class Timing:
    messages: int
    seconds: float
    cpu_seconds: float  # of this process only: what the scorer's Python costs, whoever else wants the cores
    per_batch_ms: list[float]
    failures: int


def _drive(batches: Sequence[T], handle: Callable[[T], int], size: int, budget_s: float,
           profiler: cProfile.Profile | None = None) -> Timing:
    """Run `handle` over the batches until done, or past the time budget with at least 10 batches run.

    `handle` returns how many messages of its batch failed.
    """
    per_batch: list[float] = []
    failures = 0
    if profiler is not None:
        profiler.enable()
    started, cpu_started = time.perf_counter(), time.process_time()
    for batch in batches:
        t = time.perf_counter()
        failures += handle(batch)
        per_batch.append((time.perf_counter() - t) * 1000)
        if len(per_batch) >= MIN_BATCHES and time.perf_counter() - started > budget_s:
            break
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if profiler is not None:
        profiler.disable()
    return Timing(len(per_batch) * size, elapsed, cpu, per_batch, failures)


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def time_scorer(rig: Rig, size: int, n: int, budget_s: float, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    """Up to n messages through Scorer.handle, `size` at a time (after one untimed warm-up batch)."""
    tasks = insert_tasks(rig.url, n + size)
    records = sqs_records(tasks)
    rig.scorer.handle(records[:size])  # warm-up: connection, pydantic, caches

    def handle(batch: Sequence[dict[str, Any]]) -> int:
        return len(rig.scorer.handle(batch)["batchItemFailures"])

    timing = _drive(_chunks(records[size:], size), handle, size, budget_s, profiler)
    done = [t for t, _ in tasks[size : size + timing.messages]]
    return _figures(size, timing, completed=count_completed(rig.url, done))


def time_postgres(rig: Rig, store: Any, size: int, n: int, budget_s: float) -> dict[str, Any]:
    """The scorer's transaction alone: claim + write, with a trivial decide."""
    ids = [t for t, _ in insert_tasks(rig.url, n + size)]
    _complete_all(store, ids[:size])

    def handle(batch: Sequence[int]) -> int:
        _complete_all(store, batch)
        return 0

    timing = _drive(_chunks(ids[size:], size), handle, size, budget_s)
    done = ids[size : size + timing.messages]
    return _figures(size, timing, completed=count_completed(rig.url, done))


def commit_latency_ms(url: str, n: int = 30) -> float:
    """Median time of a one-row UPDATE + COMMIT on a kept connection: the fixed cost of any transaction here."""
    task_id = insert_tasks(url, 1)[0][0]
    conn = psycopg2.connect(url)
    times = []
    with conn.cursor() as cur:
        for _ in range(n):
            t = time.perf_counter()
            cur.execute("UPDATE moderation_results SET updated_at = now() WHERE id = %s", (task_id,))
            conn.commit()
            times.append((time.perf_counter() - t) * 1000)
    conn.close()
    return statistics.median(times)


def _figures(size: int, timing: Timing, *, completed: int) -> dict[str, Any]:
    lat = Percentiles.of(timing.per_batch_ms)
    return {
        "batch": size,
        "messages": timing.messages,
        "seconds": timing.seconds,
        "msg_per_s": timing.messages / timing.seconds,
        "ms_per_batch_p50": lat.p50,
        "ms_per_batch_p95": lat.p95,
        "ms_per_message": timing.seconds * 1000 / timing.messages,
        "cpu_ms_per_message": timing.cpu_seconds * 1000 / timing.messages,
        "completed": completed,
        "batch_item_failures": timing.failures,
        "per_batch_ms": timing.per_batch_ms,
    }


def _merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rounds of a series at one batch size: median rate, pooled batch latencies."""
    per_batch = [ms for r in rounds for ms in r["per_batch_ms"]]
    lat = Percentiles.of(per_batch)
    rate = statistics.median(r["msg_per_s"] for r in rounds)
    return {
        "batch": rounds[0]["batch"],
        "messages": sum(r["messages"] for r in rounds),
        "seconds": sum(r["seconds"] for r in rounds),
        "msg_per_s": rate,
        "msg_per_s_rounds": [r["msg_per_s"] for r in rounds],
        "ms_per_batch_p50": lat.p50,
        "ms_per_batch_p95": lat.p95,
        "ms_per_message": 1000 / rate,
        "cpu_ms_per_message": statistics.median(r["cpu_ms_per_message"] for r in rounds),
        "completed": sum(r["completed"] for r in rounds),
        "batch_item_failures": sum(r["batch_item_failures"] for r in rounds),
    }


def steps() -> int:
    return 2 + ROUNDS * len(BATCH_SIZES) + 2


def run(messages: int, budget_s: float, progress: Progress) -> dict[str, Any]:
    progress.set_description_str("scorer: starting PostgreSQL")
    with bench_database() as (url, where), stdout_to_devnull():
        rig = build_rig(url)
        kept = KeptConnection(url)
        settings = server_settings(url)
        progress.update(1)
        progress.set_description_str("scorer: commit latency")
        commit_ms = commit_latency_ms(url)
        progress.update(1)
        set_app_log_level("WARNING")
        # Rounds over every size and series, interleaved: a noisy neighbour
        # then hits batch 1 and batch 100 alike instead of skewing their ratio.
        kept_store = _store_over(kept)
        series: dict[str, Callable[[int, int, float], dict[str, Any]]] = {
            "scorer": lambda b, n, t: time_scorer(rig, b, n, t),
            "postgres_alone": lambda b, n, t: time_postgres(rig, rig.store, b, n, t),
            "postgres_kept_connection": lambda b, n, t: time_postgres(rig, kept_store, b, n, t),
        }
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in range(ROUNDS):
            for b in BATCH_SIZES:
                progress.set_description_str(f"scorer and PostgreSQL alone: batch {b}, round {r + 1}/{ROUNDS}")
                for name, timed in series.items():
                    runs.setdefault((name, b), []).append(timed(b, _messages_for(b, messages // ROUNDS), budget_s / ROUNDS))
                progress.update(1)
        rows = {name: [_merge(runs[(name, b)]) for b in BATCH_SIZES] for name in series}

        progress.set_description_str("scorer: batch 100, logs off/on (/dev/null)")
        logging_cost = _price_logging(rig, _messages_for(100, messages), budget_s)
        progress.update(1)

        set_app_log_level("INFO")
        progress.set_description_str("scorer: cProfile of batch 100 (logs on)")
        profiler = cProfile.Profile()
        profiled = time_scorer(rig, 100, _messages_for(100, messages), budget_s, profiler)
        set_app_log_level("WARNING")
        progress.update(1)
        kept.close()
        stub = {"dlq_sent": rig.queue.dlq_sent, "visibility_changes": rig.queue.visibility_changes}

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    prof_path = OUT_DIR / "scorer_batch100.prof"
    profiler.dump_stats(str(prof_path))
    for sizes in rows.values():
        for row in sizes:
            row["ratio_to_batch1"] = row["msg_per_s"] / sizes[0]["msg_per_s"]
    return {
        "database": where,
        "postgres_settings": settings,
        "commit_ms_p50": commit_ms,
        "sqs": "stubbed: max_receive_count, send_to_dlq, change_visibility are in-process no-ops",
        "stub_calls": stub,
        **rows,
        "logging": logging_cost,
        "targets": {str(k): v for k, v in TARGET_RATIOS.items()},
        "profile": profiles.scorer_breakdown(profiler, batches=profiled["messages"] // 100) | {
            "file": str(prof_path.relative_to(ROOT)),
            "msg_per_s_under_profiler": profiled["msg_per_s"],
        },
    }


def _price_logging(rig: Rig, n: int, budget_s: float, rounds: int = 3) -> dict[str, Any]:
    """Batch 100 with the app's logs off and on, alternated; medians of the bench process's CPU time
    per message, which other tenants of the machine do not inflate the way they do wall time."""
    cpu_ms: dict[str, list[float]] = {"WARNING": [], "INFO": []}
    rates: dict[str, list[float]] = {"WARNING": [], "INFO": []}
    for _ in range(rounds):
        for level in cpu_ms:
            set_app_log_level(level)
            figures = time_scorer(rig, 100, n, budget_s / rounds)
            cpu_ms[level].append(figures["cpu_ms_per_message"])
            rates[level].append(figures["msg_per_s"])
    set_app_log_level("WARNING")
    off, on = statistics.median(cpu_ms["WARNING"]), statistics.median(cpu_ms["INFO"])
    return {
        "batch": 100,
        "rounds": rounds,
        "msg_per_s_logs_off": statistics.median(rates["WARNING"]),
        "msg_per_s_logs_on": statistics.median(rates["INFO"]),
        "cpu_ms_per_message_logs_off": off,
        "cpu_ms_per_message_logs_on": on,
        "ms_per_message_cost": on - off,
        "share_of_cpu_logs_on": 1 - off / on,
    }


def _store_over(db: KeptConnection) -> Any:
    from chalicelib.storage import ModerationStore

    # cast: KeptConnection offers the two methods ModerationStore uses.
    return ModerationStore(cast(Any, db))


def _messages_for(batch: int, messages: int) -> int:
    """At least MIN_BATCHES batches at every size, and a whole number of them."""
    n = max(messages, MIN_BATCHES * batch)
    return n - n % batch
