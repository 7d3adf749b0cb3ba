"""The reconciler's SQL: tasks whose send was lost or never received, tasks
stuck beyond the retry horizon, and retention (finished tasks and old
Idempotency-Keys purged). Each method is one short transaction.
"""

from __future__ import annotations

from datetime import datetime

from chalicelib.domain.tasks import PendingTask, Purged
from chalicelib.storage.db import Database


class MaintenanceStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def unsent_tasks(self, older_than_seconds: int, limit: int) -> list[PendingTask]:
        """Pending tasks whose send to SQS never succeeded, oldest first."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT id, item_id, request_id FROM moderation_results
                WHERE status = 'pending' AND enqueued_at IS NULL
                  AND created_at < now() - make_interval(secs => %s)
                ORDER BY created_at LIMIT %s
                """,
                (older_than_seconds, limit),
            )
            return [PendingTask(int(r["id"]), int(r["item_id"]), r["request_id"]) for r in cur.fetchall()]

    def unreceived_tasks(self, older_than_seconds: int, limit: int) -> list[PendingTask]:
        """Tasks sent long ago that no scorer ever received (attempts 0, never
        started): the message went to another consumer of the queue, or a send
        the API believed in was lost. Oldest first."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT id, item_id, request_id FROM moderation_results
                WHERE status = 'pending' AND attempts = 0 AND started_at IS NULL
                  AND enqueued_at < now() - make_interval(secs => %s)
                ORDER BY created_at LIMIT %s
                """,
                (older_than_seconds, limit),
            )
            return [PendingTask(int(r["id"]), int(r["item_id"]), r["request_id"]) for r in cur.fetchall()]

    def fail_stuck(self, older_than_seconds: int, reason: str) -> dict[int, str | None]:
        """Fail tasks that outlived every retry the queue could still make."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                WITH stuck AS (
                    UPDATE moderation_results SET status = 'failed', error_message = %(reason)s,
                           error_kind = 'stuck', processed_at = now(), updated_at = now()
                    WHERE status IN ('pending', 'processing')
                      AND created_at < now() - make_interval(secs => %(secs)s)
                    RETURNING id, request_id
                ), events AS (
                    INSERT INTO task_events (task_id, kind, error, request_id)
                    SELECT id, 'failed_stuck', %(reason)s, request_id FROM stuck
                )
                SELECT id, request_id FROM stuck
                """,
                {"reason": reason, "secs": older_than_seconds},
            )
            return {int(r["id"]): r["request_id"] for r in cur.fetchall()}

    def purge_idempotency_keys(self, older_than_seconds: int) -> int:
        """Forget Idempotency-Keys older than this (the reconciler: 24 h); how many."""
        with self._db.transaction() as cur:
            cur.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %s)",
                (older_than_seconds,),
            )
            return int(cur.rowcount)

    def retention_bounds(self, older_than_days: int) -> tuple[datetime, int] | None:
        """The purge's cutoff (database time) and the highest task id it looks at:
        just below the first task created after the cutoff, since ids grow with
        created_at. None when there are no tasks.

        The walk along the primary key stops there, so no index on created_at is
        needed (every submit would pay to maintain one for a sweep a minute).
        """
        with self._db.transaction() as cur:
            cur.execute(
                """
                WITH c AS (SELECT now() - make_interval(days => %s) AS cutoff)
                SELECT c.cutoff, coalesce((SELECT min(id) - 1 FROM moderation_results WHERE created_at >= c.cutoff),
                                          (SELECT max(id) FROM moderation_results)) AS up_to
                FROM c
                """,
                (older_than_days,),
            )
            row = cur.fetchone()
        return None if row is None or row["up_to"] is None else (row["cutoff"], int(row["up_to"]))

    def purge_finished(self, cutoff: datetime, after_id: int, up_to_id: int, limit: int) -> Purged:
        """Delete up to `limit` finished tasks created and last changed before
        `cutoff` (ids in (after_id, up_to_id], lowest first) and their trails, in
        one short transaction. Last changed: a task failed as stuck yesterday is
        kept, and so is the history adopted from an older service (its rows
        changed at the move). Rows another transaction holds (a redriven task
        being scored) are skipped, never waited for. Unfinished tasks are never
        touched.
        """
        with self._db.transaction() as cur:
            cur.execute(
                """
                WITH doomed AS (
                    SELECT id FROM moderation_results
                    WHERE id > %(after)s AND id <= %(up_to)s AND status IN ('completed', 'failed')
                      AND created_at < %(cutoff)s AND updated_at < %(cutoff)s
                      -- a task waiting for a person is kept until one decides it (migrations/V10)
                      AND decision IS DISTINCT FROM 'review' AND appeal IS DISTINCT FROM 'pending'
                    ORDER BY id LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                ), events AS (
                    DELETE FROM task_events WHERE task_id IN (SELECT id FROM doomed) RETURNING 1
                ), shadow AS (  -- the shadow's verdicts go with their task (migration V7)
                    DELETE FROM shadow_verdicts WHERE task_id IN (SELECT id FROM doomed)
                ), reviews AS (  -- and its leases and human verdicts (migration V10)
                    DELETE FROM human_reviews WHERE task_id IN (SELECT id FROM doomed)
                ), tasks AS (
                    DELETE FROM moderation_results WHERE id IN (SELECT id FROM doomed) RETURNING 1
                )
                SELECT (SELECT count(*) FROM tasks) AS tasks, (SELECT count(*) FROM events) AS events,
                       (SELECT max(id) FROM doomed) AS last_id
                """,
                {"after": after_id, "up_to": up_to_id, "cutoff": cutoff, "limit": limit},
            )
            row = cur.fetchone()
        return Purged(int(row["tasks"]), int(row["events"]), row["last_id"])
