"""SQL for ads and moderation tasks: a plain data-access object. Returns plain
data; knows no HTTP or SQS, and no use case.

A method that is one transaction on its own (the API's and the reconciler's)
opens it itself. The scorer's transaction spans a claim, the model and a write,
so its use case (chalicelib.scoring.scorer) opens the unit of work with
`transaction()` and passes the cursor to `claim`, `write` and `add_events`.
Driver errors become TransientError in `Database.transaction` (chalicelib.storage.db).

Task state changes are conditional UPDATEs (only unfinished tasks move), so a
duplicate delivery can never overwrite a finished result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import psycopg2.errors

from chalicelib.domain.tasks import (
    Ad,
    BatchWrite,
    Claim,
    ClaimedTask,
    EventRow,
    KeyedTask,
    PendingTask,
    Purged,
    ShadowVerdict,
    Task,
    TaskEvent,
)
from chalicelib.errors import TransientError
from chalicelib.storage.db import Cursor, Database

# How long the scorer waits for a task row another transaction holds.
CLAIM_LOCK_WAIT_MS = 1000

# The single definition of "may still be scored": unfinished tasks, and tasks
# that failed for a passing reason (so a message redriven from the DLQ is
# scored again). Permanent failures and completed tasks never move again.
# (Written against the alias `m`; ClaimedTask.claimable is the Python twin.)
_CLAIMABLE = "(m.status IN ('pending', 'processing') OR (m.status = 'failed' AND m.error_kind IN ('transient', 'stuck')))"


_TASK_COLUMNS = """
    id AS task_id, item_id, status, is_violation, probability, model_version,
    error_message, error_kind, attempts, last_error, created_at, enqueued_at,
    started_at, processed_at, request_id, decision
"""

_AD_SELECT = """
    SELECT a.id AS item_id, a.seller_id, u.is_verified AS is_verified_seller,
           a.name, a.description, a.category, a.images_qty
    FROM advertisements a JOIN users u ON u.id = a.seller_id
"""


class ModerationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def oldest_unfinished_seconds(self) -> float | None:
        """Age of the oldest pending or processing task; None when there is none.

        The health check's one query (it also proves the database answers): the
        first entry of moderation_results_unfinished_idx, so it costs the same
        on a table of millions and stays cheap for a database that is struggling.
        """
        with self._db.transaction() as cur:
            cur.execute(
                "SELECT extract(epoch FROM now() - min(created_at))::float8 AS age FROM moderation_results "
                "WHERE status IN ('pending', 'processing')"
            )
            row = cur.fetchone()
        return None if row is None or row["age"] is None else float(row["age"])

    # --- ads -----------------------------------------------------------------

    def get_ad(self, item_id: int) -> Ad | None:
        with self._db.transaction() as cur:
            cur.execute(_AD_SELECT + " WHERE a.id = %s AND NOT a.is_closed", (item_id,))
            row = cur.fetchone()
        return Ad(**row) if row else None

    def close_ad(self, item_id: int) -> bool:
        """Close an open ad; False when there is no such ad or it is already closed."""
        with self._db.transaction() as cur:
            cur.execute("UPDATE advertisements SET is_closed = TRUE WHERE id = %s AND NOT is_closed RETURNING id", (item_id,))
            return cur.fetchone() is not None

    # --- tasks: API side -------------------------------------------------------

    def create_task(self, item_id: int, *, request_id: str | None = None) -> int | None:
        """Insert a pending task for a live ad, and its `accepted` event, in one
        statement; None when the ad does not exist."""
        return self.create_tasks([item_id], request_id=request_id)[0]

    def create_task_once(self, item_id: int, key: str, *, request_id: str | None = None) -> KeyedTask:
        """create_task under an Idempotency-Key: the key, the task and its
        `accepted` event are written by one statement, so they commit together.

        The key row is inserted first with `ON CONFLICT DO NOTHING`: of
        concurrent requests with the same key, one inserts it and the others
        wait on the unique index until it commits, then insert nothing (no task
        either) and read the winner's row. The task id is drawn from the
        sequence up front so the key row can name it in the same statement.

        Why a table of our own and not Powertools' idempotency utility: it has
        no PostgreSQL store (DynamoDB, Redis, a cache), and any store of its
        own is a second system written before or after our transaction, never
        in it. A crash between the two leaves a key without a task (a retry is
        refused or answered with nothing) or a task without a key (a retry
        makes a second task). Here the key commits with the task or not at all.
        """
        with self._db.transaction() as cur:
            cur.execute(
                """
                WITH ad AS (
                    SELECT id FROM advertisements WHERE id = %(item_id)s AND NOT is_closed
                ), claimed AS (
                    INSERT INTO idempotency_keys (key, item_id, task_id)
                    SELECT %(key)s, id, nextval(pg_get_serial_sequence('moderation_results', 'id')) FROM ad
                    ON CONFLICT (key) DO NOTHING
                    RETURNING task_id, item_id
                ), task AS (
                    INSERT INTO moderation_results (id, item_id, status, request_id)
                    SELECT task_id, item_id, 'pending', %(request_id)s FROM claimed
                    RETURNING id
                ), event AS (
                    INSERT INTO task_events (task_id, kind, request_id)
                    SELECT id, 'accepted', %(request_id)s FROM task
                )
                SELECT id FROM task
                """,
                {"item_id": item_id, "key": key, "request_id": request_id},
            )
            row = cur.fetchone()
            if row:
                return KeyedTask(int(row["id"]), item_id, replayed=False)
            # Nothing inserted: the key was used before (by a transaction that
            # has committed by now), or the ad does not exist.
            cur.execute("SELECT task_id, item_id FROM idempotency_keys WHERE key = %s", (key,))
            used = cur.fetchone()
        if used is None:
            return KeyedTask(None, item_id, replayed=False)
        return KeyedTask(int(used["task_id"]), int(used["item_id"]), replayed=True)

    def create_tasks(self, item_ids: Sequence[int], *, request_id: str | None = None) -> list[int | None]:
        """Batch create_task: one task (and `accepted` event) per live ad, in
        one statement; the task id for each requested item, in request order,
        None where the ad does not exist. A repeated item gets a task each time.

        Task ids are drawn in request order before the inserts, so each
        requested position keeps its own id even when items repeat.
        """
        if not item_ids:
            return []
        with self._db.transaction() as cur:
            cur.execute(
                """
                WITH live AS (
                    SELECT r.item_id, r.pos
                    FROM unnest(%(item_ids)s::bigint[]) WITH ORDINALITY AS r(item_id, pos)
                    JOIN advertisements a ON a.id = r.item_id AND NOT a.is_closed
                    ORDER BY r.pos
                ), numbered AS (
                    SELECT item_id, pos, nextval(pg_get_serial_sequence('moderation_results', 'id')) AS task_id FROM live
                ), task AS (
                    INSERT INTO moderation_results (id, item_id, status, request_id)
                    SELECT task_id, item_id, 'pending', %(request_id)s FROM numbered
                ), event AS (
                    INSERT INTO task_events (task_id, kind, request_id)
                    SELECT task_id, 'accepted', %(request_id)s FROM numbered
                )
                SELECT pos, task_id FROM numbered
                """,
                {"item_ids": list(item_ids), "request_id": request_id},
            )
            created = {int(r["pos"]): int(r["task_id"]) for r in cur.fetchall()}
        return [created.get(pos) for pos in range(1, len(item_ids) + 1)]

    def purge_idempotency_keys(self, older_than_seconds: int) -> int:
        """Forget Idempotency-Keys older than this (the reconciler: 24 h); how many."""
        with self._db.transaction() as cur:
            cur.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %s)",
                (older_than_seconds,),
            )
            return int(cur.rowcount)

    def mark_enqueued(self, sent: Mapping[int, str], *, kind: str = "enqueued") -> None:
        """Record successful sends ({task_id: SQS message id}) and their events.

        Committed with synchronous_commit off: this marker is advisory. If a
        crash loses it, the reconciler sends the task once more and the
        scorer acknowledges the duplicate; in exchange the API's second
        transaction does not wait for a WAL flush on every submit.
        """
        if not sent:
            return
        try:
            self._mark_enqueued(sent, kind)
        except TransientError as exc:
            # The scorer's claim locks what it can at once (SKIP LOCKED), then waits for the
            # rest: against this transaction's id-ordered locks that can still deadlock, and
            # PostgreSQL may pick this side. The scorer has moved on by then: try once more.
            if not isinstance(exc.__cause__, psycopg2.errors.DeadlockDetected):
                raise
            self._mark_enqueued(sent, kind)

    def _mark_enqueued(self, sent: Mapping[int, str], kind: str) -> None:
        ids = list(sent)
        with self._db.transaction() as cur:
            cur.execute("SET LOCAL synchronous_commit = off")
            cur.execute(
                """
                WITH locked AS (
                    -- Rows locked in id order, as the scorer's claim locks them:
                    -- two transactions that lock in one order cannot deadlock.
                    SELECT id FROM moderation_results WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE
                ), marked AS (
                    UPDATE moderation_results m SET enqueued_at = now(), updated_at = now()
                    FROM locked WHERE m.id = locked.id RETURNING m.id, m.request_id
                )
                INSERT INTO task_events (task_id, kind, message_id, request_id)
                SELECT m.id, %(kind)s, s.message_id, m.request_id
                FROM marked m JOIN unnest(%(ids)s::bigint[], %(mids)s::text[]) AS s(id, message_id) ON s.id = m.id
                """,
                {"ids": ids, "mids": [sent[i] for i in ids], "kind": kind},
            )

    def mark_send_failed(self, task_ids: Sequence[int], error: str) -> None:
        """The API's send failed: record it in the trail. enqueued_at is still
        NULL (only a successful send sets it), so the reconciler re-sends it."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                INSERT INTO task_events (task_id, kind, error, request_id)
                SELECT id, 'send_failed', %s, request_id FROM moderation_results WHERE id = ANY(%s)
                """,
                (error, list(task_ids)),
            )

    def get_task(self, task_id: int) -> Task | None:
        with self._db.transaction() as cur:
            cur.execute(f"SELECT {_TASK_COLUMNS} FROM moderation_results WHERE id = %s", (task_id,))
            row = cur.fetchone()
        return Task(**row) if row else None

    def list_tasks(self, *, item_id: int | None, status: str | None, before_id: int | None, limit: int) -> list[Task]:
        """Up to `limit` tasks, newest first (id DESC), below `before_id` if given:
        one page of a keyset walk, so tasks submitted meanwhile never shift it.
        One query, on an index (task_page_query)."""
        with self._db.transaction() as cur:
            cur.execute(*task_page_query(item_id=item_id, status=status, before_id=before_id, limit=limit))
            return [Task(**row) for row in cur.fetchall()]

    def task_events(self, task_id: int) -> list[TaskEvent] | None:
        """The task's trail, oldest first; None when the task does not exist."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT e.at, e.kind, e.attempt, e.outcome, e.error, e.message_id, e.request_id
                FROM moderation_results m LEFT JOIN task_events e ON e.task_id = m.id
                WHERE m.id = %s ORDER BY e.id
                """,
                (task_id,),
            )
            rows = cur.fetchall()
        if not rows:
            return None
        return [TaskEvent(**r) for r in rows if r["kind"] is not None]

    # --- tasks: scorer side (the caller's transaction) -----------------------------

    def transaction(self) -> AbstractContextManager[Cursor]:
        """The unit of work: committed when the block ends, rolled back if it raises."""
        return self._db.transaction()

    def claim(self, cur: Cursor, task_ids: Sequence[int]) -> Claim:
        """Lock the tasks and load their ads, with one query.

        `FOR UPDATE ... SKIP LOCKED` first, so a concurrent delivery of the
        same task skips it instead of blocking; then a short wait for the rest
        (`_claim_waiting`). The locks last until the caller's transaction ends,
        so what it writes with `write` is the only write of these tasks.
        """
        ids = sorted(set(task_ids))
        claimed = self._claim(cur, ids, skip_locked=True)
        missing = [i for i in ids if i not in claimed]
        if missing:
            claimed.update(self._claim_waiting(cur, missing))
            missing = [i for i in missing if i not in claimed]
        locked_elsewhere: set[int] = set()
        if missing:
            # A row we still could not lock exists but belongs to a
            # concurrent delivery; tell it apart from a task that does not exist.
            cur.execute("SELECT id FROM moderation_results WHERE id = ANY(%s)", (missing,))
            locked_elsewhere = {int(r["id"]) for r in cur.fetchall()}
        return Claim(claimed, locked_elsewhere)

    def _claim_waiting(self, cur: Cursor, ids: list[int]) -> dict[int, ClaimedTask]:
        """Wait briefly for rows another transaction holds, then claim them.

        Most such locks are momentary: the API's `enqueued_at` update right
        after its send, which the scorer can beat to the row, or a concurrent
        delivery about to commit (after it, the row reads as finished, so this
        delivery is a duplicate: still one writer). A lock held longer than
        the wait (a dying connection) leaves the task "busy" for a later
        retry instead of stalling or failing its batch-mates.
        """
        cur.execute("SAVEPOINT claim_waiting")
        cur.execute("SET LOCAL lock_timeout = %s", (f"{CLAIM_LOCK_WAIT_MS}ms",))
        try:
            claimed = self._claim(cur, ids, skip_locked=False)
        except (psycopg2.errors.LockNotAvailable, psycopg2.errors.DeadlockDetected):
            # Only this statement failed; the rows claimed so far stay ours.
            cur.execute("ROLLBACK TO SAVEPOINT claim_waiting")  # also undoes SET LOCAL
            return {}
        cur.execute("RELEASE SAVEPOINT claim_waiting")
        cur.execute("SET LOCAL lock_timeout = DEFAULT")
        return claimed

    @staticmethod
    def _claim(cur: Cursor, ids: list[int], *, skip_locked: bool) -> dict[int, ClaimedTask]:
        if not ids:
            return {}
        # A plain tuple cursor: building a dict per row (RealDictCursor) was
        # a visible share of the scorer's time at batch 100.
        with cur.connection.cursor() as plain:
            plain.execute(
                """
                SELECT m.id, m.item_id, m.status, m.error_kind, m.request_id, m.error_message,
                       -- failed permanently, and no envelope recorded as parked (chalicelib.scoring.scorer)
                       m.status = 'failed' AND m.error_kind = 'permanent' AND NOT EXISTS (
                           SELECT 1 FROM task_events e WHERE e.task_id = m.id AND e.kind = 'dlq_parked'),
                       a.id, a.seller_id, u.is_verified, a.name, a.description, a.category, a.images_qty
                FROM moderation_results m
                LEFT JOIN advertisements a ON a.id = m.item_id AND NOT a.is_closed
                LEFT JOIN users u ON u.id = a.seller_id
                WHERE m.id = ANY(%s)
                ORDER BY m.id
                FOR UPDATE OF m"""
                + (" SKIP LOCKED" if skip_locked else ""),
                (ids,),
            )
            rows = plain.fetchall()
        claimed: dict[int, ClaimedTask] = {}
        for task_id, item_id, status, error_kind, request_id, error, pending, ad_id, seller_id, verified, *rest in rows:
            ad = None
            if ad_id is not None:
                name, description, category, images_qty = rest
                ad = Ad(ad_id, seller_id, bool(verified), name, description, category, images_qty)
            claimed[task_id] = ClaimedTask(task_id, item_id, status, error_kind, ad, request_id, error, bool(pending))
        return claimed

    @staticmethod
    def write(cur: Cursor, batch: BatchWrite, *, model_version: str | None) -> dict[int, float]:
        """Write every outcome and every trail row of a batch with ONE statement.

        The WHERE clause keeps finished tasks finished even if a caller got the
        state machine wrong. Returns submit->completed seconds per completed task.
        """
        updates, events = batch.updates, batch.events
        if not updates and not events:
            return {}
        cur.execute(
            """
            WITH written AS (
                UPDATE moderation_results m SET
                    status        = v.status,
                    is_violation  = v.is_violation,
                    probability   = v.probability,
                    decision      = v.decision,
                    model_version = CASE WHEN v.status = 'completed' THEN %(model_version)s ELSE m.model_version END,
                    error_message = CASE WHEN v.status = 'failed' THEN v.error_message ELSE NULL END,
                    error_kind    = v.error_kind,
                    last_error    = COALESCE(v.error_message, m.last_error),
                    attempts      = GREATEST(m.attempts, v.attempt),
                    started_at    = COALESCE(m.started_at, now()),
                    processed_at  = CASE WHEN v.status IN ('completed', 'failed') THEN now() ELSE NULL END,
                    updated_at    = now()
                FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(attempts)s::int[], %(violations)s::boolean[],
                            %(probabilities)s::float8[], %(errors)s::text[], %(kinds)s::text[], %(decisions)s::text[])
                     AS v(id, status, attempt, is_violation, probability, error_message, error_kind, decision)
                WHERE m.id = v.id AND """
            + _CLAIMABLE
            + """
                RETURNING m.id, m.status, extract(epoch FROM now() - m.created_at)::float8 AS age
            ), trail AS (
                INSERT INTO task_events (task_id, kind, attempt, outcome, error, message_id, request_id)
                SELECT * FROM unnest(%(e_ids)s::bigint[], %(e_kinds)s::text[], %(e_attempts)s::int[], %(e_outcomes)s::text[],
                                     %(e_errors)s::text[], %(e_messages)s::text[], %(e_requests)s::text[])
            )
            SELECT id, age FROM written WHERE status = 'completed'
            """,
            {
                "model_version": model_version,
                "ids": [u.task_id for u in updates],
                "statuses": [u.status for u in updates],
                "attempts": [u.attempt for u in updates],
                "violations": [u.is_violation for u in updates],
                "probabilities": [u.probability for u in updates],
                "errors": [u.error_message for u in updates],
                "kinds": [u.error_kind for u in updates],
                "decisions": [u.decision for u in updates],
                **_event_params(events),
            },
        )
        return {int(r["id"]): float(r["age"]) for r in cur.fetchall()}

    @staticmethod
    def add_shadow_verdicts(cur: Cursor, verdicts: Sequence[ShadowVerdict]) -> None:
        """Record the shadow's verdicts (one statement). Advisory data, so no WAL
        flush is waited for; a redelivered task keeps its first shadow verdict."""
        if not verdicts:
            return
        cur.execute("SET LOCAL synchronous_commit = off")
        cur.execute(
            """
            INSERT INTO shadow_verdicts (task_id, shadow_version, live_version, live_probability, shadow_probability,
                                         live_decision, shadow_decision)
            SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::float8[], %s::float8[], %s::text[], %s::text[])
            ON CONFLICT (task_id, shadow_version) DO NOTHING
            """,
            # Columns by attribute: dataclasses.astuple deep-copies, ~9 µs a row.
            tuple([getattr(v, f) for v in verdicts] for f in ShadowVerdict.__dataclass_fields__),
        )

    def shadow_verdicts(self, limit: int, shadow_version: str | None = None) -> list[ShadowVerdict]:
        """The latest `limit` shadow verdicts (of one shadow version, else of the
        latest one), newest first (make model-compare)."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT task_id, shadow_version, live_version, live_probability, shadow_probability,
                       live_decision, shadow_decision
                FROM shadow_verdicts
                WHERE shadow_version = COALESCE(%s, (SELECT shadow_version FROM shadow_verdicts ORDER BY scored_at DESC LIMIT 1))
                ORDER BY scored_at DESC, task_id DESC LIMIT %s
                """,
                (shadow_version, limit),
            )
            return [ShadowVerdict(**r) for r in cur.fetchall()]

    @staticmethod
    def add_events(cur: Cursor, events: Sequence[EventRow]) -> None:
        """Write trail rows (one statement), e.g. `dlq_parked` once the DLQ has the envelopes."""
        _insert_events(cur, events)

    def fail_unfinished(self, task_ids: Sequence[int], *, reason: str, kind: str, attempt: int) -> int:
        """Mark unfinished tasks failed (last attempt of a whole-batch failure)."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                UPDATE moderation_results m SET status = 'failed', error_message = %s, error_kind = %s,
                       last_error = %s, attempts = GREATEST(m.attempts, %s),
                       processed_at = now(), updated_at = now()
                WHERE m.id = ANY(%s) AND """
                + _CLAIMABLE
                + " RETURNING m.id, m.request_id",
                (reason, kind, reason, attempt, list(task_ids)),
            )
            rows = cur.fetchall()
            _insert_events(
                cur,
                [EventRow(r["id"], "dlq_parked", attempt, "exhausted", reason, None, r["request_id"]) for r in rows],
            )
            return len(rows)

    # --- reconciler --------------------------------------------------------------

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

    # --- retention (the reconciler) ------------------------------------------------

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
                    ORDER BY id LIMIT %(limit)s
                    FOR UPDATE SKIP LOCKED
                ), events AS (
                    DELETE FROM task_events WHERE task_id IN (SELECT id FROM doomed) RETURNING 1
                ), shadow AS (  -- the shadow's verdicts go with their task (migration V7)
                    DELETE FROM shadow_verdicts WHERE task_id IN (SELECT id FROM doomed)
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


def task_page_query(
    *, item_id: int | None, status: str | None, before_id: int | None, limit: int
) -> tuple[str, dict[str, Any]]:
    """ModerationStore.list_tasks's statement and parameters.

    A filter is written as a range (`>= v AND <= v`) and leads the ORDER BY. With
    `= v`, PostgreSQL drops the column from the ORDER BY and may walk the primary
    key backwards, filtering, on the guess that matching tasks are spread evenly
    over the ids: for an ad whose tasks are all old, or a status last seen a week
    ago, that reads the table back to them. As a range, only the (item_id, id) or
    (status, id) index (migrations/V6) gives the order, and a page reads about
    `limit` entries wherever the tasks are. Both filters: the ad's index, the
    status filtered among the ad's tasks.
    """
    where, order = [], ["id DESC"]
    if item_id is not None:
        where.append("item_id >= %(item_id)s AND item_id <= %(item_id)s")
        order.insert(0, "item_id DESC")
        if status is not None:
            where.append("status = %(status)s")
    elif status is not None:
        where.append("status >= %(status)s AND status <= %(status)s")
        order.insert(0, "status DESC")
    if before_id is not None:
        where.append("id < %(before_id)s")
    sql = f"SELECT {_TASK_COLUMNS} FROM moderation_results"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {', '.join(order)} LIMIT %(limit)s"
    return sql, {"item_id": item_id, "status": status, "before_id": before_id, "limit": limit}


def _event_params(events: Sequence[EventRow]) -> dict[str, list[Any]]:
    return {
        "e_ids": [e.task_id for e in events],
        "e_kinds": [e.kind for e in events],
        "e_attempts": [e.attempt for e in events],
        "e_outcomes": [e.outcome for e in events],
        "e_errors": [e.error for e in events],
        "e_messages": [e.message_id for e in events],
        "e_requests": [e.request_id for e in events],
    }


def _insert_events(cur: Cursor, events: Sequence[EventRow]) -> None:
    """Write a batch of trail rows with one statement."""
    if events:
        cur.execute(
            """
            INSERT INTO task_events (task_id, kind, attempt, outcome, error, message_id, request_id)
            SELECT * FROM unnest(%(e_ids)s::bigint[], %(e_kinds)s::text[], %(e_attempts)s::int[], %(e_outcomes)s::text[],
                                 %(e_errors)s::text[], %(e_messages)s::text[], %(e_requests)s::text[])
            """,
            _event_params(events),
        )
