"""Every accepted task ends completed or failed: the scheduled safety net.

Three sweeps, each idempotent:
- re-send tasks whose send to SQS was lost (the API stored them but
  `enqueued_at` stayed NULL past a grace period);
- re-send, and report loudly, tasks sent long ago that no scorer ever
  received (attempts 0): their message went to another consumer of the same
  queue (e.g. a deployed stack's event source mapping on a shared LocalStack)
  or was lost after the API recorded the send. Each re-send restarts the
  clock, so a task is re-sent at most once per `unreceived_after_seconds`;
- fail tasks that outlived every retry the queue could still make;
it forgets Idempotency-Keys older than their time to live (24 h), and deletes
finished tasks, with their trails, older than the retention (RETENTION_DAYS,
default 30; 0 keeps everything): in batches of `purge_batch`, each its own
short transaction, until none is left or the run's `purge_budget_seconds` is
spent (the next run goes on), so submits never wait behind one long delete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chalicelib import metrics
from chalicelib.domain.tasks import STUCK
from chalicelib.logs import logger
from chalicelib.queue import TaskQueue
from chalicelib.storage.maintenance import MaintenanceStore
from chalicelib.storage.tasks import TaskStore

STUCK_REASON = "no result within {seconds} s: the message was lost or exhausted while the database was down"


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    resent: list[int]
    unreceived: list[int]
    failed_stuck: list[int]
    purged: int = 0  # finished tasks deleted by retention


class Reconciler:
    def __init__(
        self,
        tasks: TaskStore,
        maintenance: MaintenanceStore,
        queue: TaskQueue,
        *,
        resend_grace_seconds: int,
        stuck_after_seconds: int,
        unreceived_after_seconds: int = 300,
        idempotency_key_ttl_seconds: int = 24 * 60 * 60,
        limit: int = 500,
        retention_days: int = 0,
        purge_batch: int = 1000,
        purge_budget_seconds: float = 20.0,
    ) -> None:
        self._tasks = tasks
        self._store = maintenance
        self._queue = queue
        self._grace = resend_grace_seconds
        self._stuck_after = stuck_after_seconds
        self._unreceived_after = unreceived_after_seconds
        self._key_ttl = idempotency_key_ttl_seconds
        self._limit = limit
        self._retention_days = retention_days
        self._purge_batch = purge_batch
        self._purge_budget = purge_budget_seconds

    def run(self) -> ReconcileReport:
        unsent = self._store.unsent_tasks(self._grace, self._limit)
        unreceived = self._store.unreceived_tasks(self._unreceived_after, self._limit)
        if unreceived:
            logger.warning(
                "tasks were sent but never received; is another consumer reading the queue?",
                extra={
                    "tasks": len(unreceived),
                    "task_ids": [t.task_id for t in unreceived[:20]],
                    "request_ids": [t.request_id for t in unreceived[:20]],
                    "older_than_seconds": self._unreceived_after,
                },
            )
        todo = unsent + unreceived
        resent = self._queue.send_tasks(todo) if todo else {}
        self._tasks.mark_enqueued(resent, kind="resent")
        for task in todo:
            if task.task_id in resent:
                logger.info(
                    "message outcome",
                    extra={"outcome": "resent", "task_id": task.task_id, "request_id": task.request_id},
                )
        stuck = self._store.fail_stuck(self._stuck_after, STUCK_REASON.format(seconds=self._stuck_after))
        for task_id, request_id in stuck.items():
            logger.info(
                "message outcome",
                extra={"outcome": "failed_stuck", "task_id": task_id, "request_id": request_id, "error_kind": STUCK},
            )
        purged = self._store.purge_idempotency_keys(self._key_ttl)
        if purged:
            logger.info("idempotency keys purged", extra={"keys": purged, "older_than_seconds": self._key_ttl})
        tasks_purged, events_purged = self.purge() if self._retention_days else (0, 0)
        metrics.emit(
            "reconcile",
            {metrics.RESENT: len(resent), metrics.PURGED: tasks_purged, metrics.EVENTS_PURGED: events_purged},
            failed_by_kind={STUCK: len(stuck)},
        )
        unreceived_ids = {t.task_id for t in unreceived}
        return ReconcileReport(
            resent=list(resent),
            unreceived=[i for i in resent if i in unreceived_ids],
            failed_stuck=list(stuck),
            purged=tasks_purged,
        )

    def purge(self) -> tuple[int, int]:
        """Retention: delete finished tasks created and last changed more than
        `retention_days` ago, and their trails; (tasks, trail rows) deleted."""
        started = time.monotonic()
        bounds = self._store.retention_bounds(self._retention_days)
        tasks = events = batches = 0
        done = True
        if bounds is not None:
            cutoff, up_to = bounds
            after = 0
            while True:
                batch = self._store.purge_finished(cutoff, after, up_to, self._purge_batch)
                tasks, events, batches = tasks + batch.tasks, events + batch.events, batches + 1
                if batch.last_id is None or batch.tasks < self._purge_batch:
                    break
                after = batch.last_id
                if time.monotonic() - started >= self._purge_budget:
                    done = False  # the next run goes on from the oldest
                    break
        if tasks:
            logger.info(
                "retention: old finished tasks deleted",
                extra={"tasks": tasks, "task_events": events, "batches": batches, "older_than_days": self._retention_days,
                       "seconds": round(time.monotonic() - started, 3), "more_left": not done},
            )
        return tasks, events
