"""Fault injection on LocalStack + PostgreSQL: nothing is lost, nothing is written twice.

2,000 tasks are submitted through the service, then three scorer "containers"
(each its own database connection, like Lambda) drain the queue through the
runner, which plays the event source mapping. Seeded faults:

- ~10 % of database transactions fail transiently (connection refused),
- ~1 % of ads are deleted after submit (permanent failure),
- ~1 % extra messages are malformed (permanent failure),
- ~2 % of sends at submit time fail (the reconciler must re-send them),
- ~5 % of tasks are delivered twice (duplicates),
- ~3 % of batches crash the handler mid-batch (after its work, before it
  answers: the whole batch is redelivered; or before its work),
- ~0.5 % of ads crash the model every time (transient, so they exhaust their
  three attempts and the redrive policy parks them).

Then: every task is terminal, none lost, no verdict written twice, attempts
≤ 3, and the DLQ holds exactly the permanent and the exhausted ones.
Bounded: fails if the system has not settled within 150 s.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from contextlib import contextmanager

import boto3
import pytest

from chalicelib.errors import TransientError
from chalicelib.moderation.service import ModerationService
from chalicelib.operations.reconcile import Reconciler
from chalicelib.queue import TaskQueue
from chalicelib.scoring.scorer import Scorer
from chalicelib.serving.model import load_model
from chalicelib.storage.db import Database
from chalicelib.storage.maintenance import MaintenanceStore
from chalicelib.storage.scoring import ScoringStore
from chalicelib.storage.tasks import TaskStore
from devstack.runner import Runner
from tests.helpers import drop_verdict_audit, execute, install_verdict_audit
from toolkit.seed import seed_demo_data
from toolkit.template import ensure_queues

pytestmark = pytest.mark.e2e

SEED = 20261123
N_TASKS = 2000
POISON = "\u2620 poison"
SCORERS = 3
DEADLINE_SECONDS = 150


class PoisonSensitiveModel:
    """The real model, except that it raises on ads whose name is marked."""

    def __init__(self) -> None:
        self._model = load_model()
        self.version, self.thresholds = self._model.version, self._model.thresholds

    def predict_proba(self, ads):
        if any(POISON in ad.name for ad in ads):
            raise RuntimeError("model crashed (injected)")
        return self._model.predict_proba(ads)


class FlakyDatabase(Database):
    """A real Database whose transactions fail transiently at a seeded rate."""

    def __init__(self, url: str, rate: float, rng: random.Random) -> None:
        super().__init__(url)
        self._rate, self._rng, self._lock = rate, rng, threading.Lock()
        self.injected = 0

    @contextmanager
    def transaction(self):  # type: ignore[override]
        with self._lock:
            fail = self._rng.random() < self._rate
        if fail:
            self.injected += 1
            raise TransientError("database unavailable (injected)")
        with super().transaction() as cur:
            yield cur


def stores(db: Database) -> tuple[TaskStore, MaintenanceStore]:
    """The reconciler's two stores over one pool."""
    return TaskStore(db), MaintenanceStore(db)


def drain_dlq(sqs, url: str) -> list[dict]:
    out, seen = [], set()
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=120, WaitTimeSeconds=1)
        new = [m for m in msgs.get("Messages", []) if m["MessageId"] not in seen]
        if not new:
            return out
        for m in new:
            seen.add(m["MessageId"])
            out.append(json.loads(m["Body"]) if m["Body"].startswith("{") else {"raw": m["Body"]})


def queue_depth(sqs, url: str) -> int:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"])
    return sum(int(v) for v in a["Attributes"].values())


def test_fault_injection(localstack_endpoint, db, monkeypatch):
    url = db
    rng = random.Random(SEED)
    monkeypatch.setenv("AWS_ENDPOINT_URL", localstack_endpoint)
    sqs = boto3.client("sqs", endpoint_url=localstack_endpoint, region_name="us-east-1")
    # The real definition, with a short visibility timeout so that crashed
    # batches come back within the test's time bound.
    urls = ensure_queues(sqs, overrides={"moderation": {"VisibilityTimeout": "6", "ReceiveMessageWaitTimeSeconds": "1"}})
    for u in urls.values():
        sqs.purge_queue(QueueUrl=u)
    # As make run seeds: explicit ids, then the sequences moved past them (the next module may insert ads).
    assert seed_demo_data(url, N_TASKS, SEED) == N_TASKS
    install_verdict_audit(url)
    started = time.monotonic()
    try:
        # --- submit, with ~2 % of sends lost ---------------------------------
        queue = TaskQueue(sqs, queue_name="moderation", dlq_name="moderation_dlq")
        real_send = queue.send_task
        lost_sends = 0

        def lossy_send(task):
            nonlocal lost_sends
            if rng.random() < 0.02:
                lost_sends += 1
                raise TransientError("could not send (injected)")
            return real_send(task)

        queue.send_task = lossy_send  # type: ignore[method-assign]
        service = ModerationService(TaskStore(Database(url)), queue, load_model())
        task_ids = [service.submit(item_id, client="tester")["task_id"] for item_id in range(1, N_TASKS + 1)]
        queue.send_task = real_send  # type: ignore[method-assign]
        submitted_at = time.monotonic()

        # --- permanent faults: deleted ads, malformed messages ---------------
        deleted = rng.sample(range(1, N_TASKS + 1), N_TASKS // 100)
        execute(url, "UPDATE advertisements SET is_closed = true WHERE id = ANY(%s)", (deleted,))
        poisoned = rng.sample(sorted(set(range(1, N_TASKS + 1)) - set(deleted)), N_TASKS // 200)
        execute(url, "UPDATE advertisements SET name = name || %s WHERE id = ANY(%s)", (POISON, poisoned))
        malformed = [f"garbage-{i}" if i % 2 else json.dumps({"task_id": "x", "i": i}) for i in range(N_TASKS // 100)]
        duplicates = rng.sample(task_ids, N_TASKS * 5 // 100)
        extra = malformed + [json.dumps({"task_id": t, "item_id": t, "timestamp": "2026-11-23T00:00:00Z"})
                             for t in duplicates]  # item_id == task_id: ads and tasks were created in order
        for i in range(0, len(extra), 10):
            sqs.send_message_batch(QueueUrl=urls["moderation"], Entries=[
                {"Id": str(j), "MessageBody": b} for j, b in enumerate(extra[i:i + 10])])

        # --- drain with flaky databases and crashing handlers -----------------
        stop = threading.Event()
        crashes = Counter()
        flaky: list[FlakyDatabase] = []

        def scorer_loop(n: int) -> None:
            local_rng = random.Random(SEED + n)
            fdb = FlakyDatabase(url, 0.10, local_rng)
            flaky.append(fdb)
            scorer = Scorer(ScoringStore(fdb), TaskQueue(boto3.client("sqs", endpoint_url=localstack_endpoint,
                                                                         region_name="us-east-1"),
                                                            queue_name="moderation", dlq_name="moderation_dlq"),
                            PoisonSensitiveModel(), retry_base_seconds=1, default_max_receive_count=3)

            def handler(event, context):
                roll = local_rng.random()
                if roll < 0.015:
                    crashes["before work"] += 1
                    raise RuntimeError("crash before work (injected)")
                response = scorer.handle(event["Records"])
                if roll < 0.03:
                    crashes["after work"] += 1
                    raise RuntimeError("crash after work, before answering (injected)")
                return response

            runner = Runner(boto3.client("sqs", endpoint_url=localstack_endpoint, region_name="us-east-1"),
                            urls["moderation"], handler, wait_seconds=1)
            while not stop.is_set():
                runner.poll_once()

        threads = [threading.Thread(target=scorer_loop, args=(n,), daemon=True) for n in range(SCORERS)]
        for t in threads:
            t.start()
        reconciler = Reconciler(*stores(Database(url)), TaskQueue(sqs, queue_name="moderation",
                                                                          dlq_name="moderation_dlq"),
                                resend_grace_seconds=2, stuck_after_seconds=3600)
        while time.monotonic() - started < DEADLINE_SECONDS:
            reconciler.run()
            unfinished = execute(url, "SELECT count(*) FROM moderation_results WHERE status IN ('pending','processing')")
            if unfinished[0][0] == 0 and queue_depth(sqs, urls["moderation"]) == 0:
                break
            if queue_depth(sqs, urls["moderation"]) == 0:
                # Queue drained: what is left was exhausted while the database
                # could not record it. The reconciler's stuck sweep owns those.
                Reconciler(*stores(Database(url)), queue, resend_grace_seconds=2,
                           stuck_after_seconds=0).run()
            time.sleep(1)
        stop.set()
        for t in threads:
            t.join(10)
        settled = time.monotonic()

        # --- the promises ------------------------------------------------------
        rows = execute(url, "SELECT id, status, error_kind, attempts FROM moderation_results ORDER BY id")
        by_status = Counter(r[1] for r in rows)
        assert len(rows) == N_TASKS == len(set(task_ids)), "a submitted task is missing"
        assert set(by_status) <= {"completed", "failed"}, f"not every task is terminal: {by_status}"
        assert max(r[3] for r in rows) <= 3, "a task was attempted more than maxReceiveCount times"
        writes = execute(url, "SELECT task_id, count(*) FROM verdict_writes GROUP BY task_id HAVING count(*) > 1")
        assert writes == [], f"verdicts written twice: {writes[:5]}"
        completed = {r[0] for r in rows if r[1] == "completed"}
        assert {r[0] for r in execute(url, "SELECT DISTINCT task_id FROM verdict_writes")} == completed

        # The DLQ, held to the contract: every failed task has its record there
        # (nothing lost), and every record there is explained. SQS delivers at
        # least once, so a record may come twice, and a message that keeps
        # meeting injected database failures is redriven even if another
        # delivery of it already finished its task.
        permanent = {r[0] for r in rows if r[1] == "failed" and r[2] == "permanent"}
        exhausted = {r[0] for r in rows if r[1] == "failed" and r[2] in ("transient", "stuck")}
        assert permanent <= set(deleted), "only the deleted ads fail permanently"  # item_id == task_id
        assert set(deleted) <= permanent | exhausted, "a deleted ad was scored"
        assert set(poisoned) <= exhausted
        dlq = drain_dlq(sqs, urls["moderation_dlq"])
        envelopes = [m for m in dlq if "original_message" in m]
        raw = [m for m in dlq if "original_message" not in m]
        originals = [e["original_message"] for e in envelopes] + [m.get("raw", m) for m in raw]
        parked_tasks = {o["task_id"] for o in originals if isinstance(o, dict) and isinstance(o.get("task_id"), int)}
        assert permanent <= {e["task_id"] for e in envelopes}, "a permanent failure has no envelope"
        assert permanent | exhausted <= parked_tasks, "a failed task left no record in the DLQ"
        assert parked_tasks - permanent - exhausted <= completed, "the DLQ names a task that neither failed nor completed"
        task_less = [json.dumps(o, sort_keys=True) for o in originals
                     if not (isinstance(o, dict) and isinstance(o.get("task_id"), int))]
        expected = [json.dumps(json.loads(b) if b.startswith("{") else b, sort_keys=True) for b in malformed]
        assert set(expected) <= set(task_less), "a malformed message was lost"
        assert set(task_less) <= set(expected), "the DLQ holds a task-less message nobody sent"

        print(f"\nfault injection: {N_TASKS} tasks, submit {submitted_at - started:.1f} s, "
              f"settled {settled - submitted_at:.1f} s after submit; statuses {dict(by_status)}; "
              f"lost sends {lost_sends}, deleted ads {len(deleted)}, malformed {len(malformed)}, "
              f"duplicates {len(duplicates)}, injected DB errors {sum(f.injected for f in flaky)}, "
              f"crashes {dict(crashes)}, poisoned {len(poisoned)}; DLQ {len(dlq)} messages ({len(envelopes)} envelopes, "
              f"{len(raw)} raw) for {len(permanent)} permanent + {len(exhausted)} exhausted tasks, {len(malformed)} malformed; "
              f"duplicate DLQ records {len(dlq) - len(set(map(str, originals)))}")
    finally:
        drop_verdict_audit(url)
