"""Every accepted task ends completed or failed: the scheduled safety net.

Two sweeps, each idempotent: re-send tasks whose send to SQS was lost (the
API stored them but `enqueued_at` stayed NULL past a grace period), and fail
tasks that outlived every retry the queue could still make.
"""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.logs import logger
from chalicelib.queue import TaskQueue
from chalicelib.storage import ModerationStore

STUCK_REASON = "no result within {seconds} s: the message was lost or exhausted while the database was down"


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    resent: list[int]
    failed_stuck: list[int]


class Reconciler:
    def __init__(
        self,
        store: ModerationStore,
        queue: TaskQueue,
        *,
        resend_grace_seconds: int,
        stuck_after_seconds: int,
        limit: int = 500,
    ) -> None:
        self._store = store
        self._queue = queue
        self._grace = resend_grace_seconds
        self._stuck_after = stuck_after_seconds
        self._limit = limit

    def run(self) -> ReconcileReport:
        unsent = self._store.unsent_tasks(self._grace, self._limit)
        resent = self._queue.send_tasks(unsent) if unsent else []
        if resent:
            self._store.mark_enqueued(resent)
        for task_id in resent:
            logger.info("message outcome", extra={"outcome": "resent", "task_id": task_id})
        stuck = self._store.fail_stuck(self._stuck_after, STUCK_REASON.format(seconds=self._stuck_after))
        for task_id in stuck:
            logger.info("message outcome", extra={"outcome": "failed_stuck", "task_id": task_id, "error_kind": "stuck"})
        return ReconcileReport(resent=resent, failed_stuck=stuck)
