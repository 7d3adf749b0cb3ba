"""The scorer's SQL: claim a batch's tasks, write every outcome and trail row
with one statement, record the shadow's verdicts. The use case
(chalicelib.scoring.scorer) opens the unit of work with `transaction()` and
passes its cursor to `claim`, `write` and `add_events`: its transaction spans a
claim, the model and a write.

Task state changes are conditional UPDATEs (only claimable tasks move), so a
duplicate delivery can never overwrite a finished result.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from chalicelib.domain.tasks import Ad, BatchWrite, Claim, ClaimedTask, EventRow, ShadowVerdict
from chalicelib.storage.db import Cursor, Database, LockContention, lock_wait

CLAIM_LOCK_WAIT_MS = 1000

_CLAIMABLE = "(m.status IN ('pending', 'processing') OR (m.status = 'failed' AND m.error_kind IN ('transient', 'stuck')))"


class ScoringStore:
    def __init__(self, db: Database) -> None:
        self._db = db

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
        try:
            with lock_wait(cur, CLAIM_LOCK_WAIT_MS):
                return self._claim(cur, ids, skip_locked=False)
        except LockContention:
            return {}  # only this statement was undone; the rows claimed so far stay ours

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
