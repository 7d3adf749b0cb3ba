"""The review loop's SQL (issue 21; migrations/V10): the queue, leases, verdicts, appeals,
the backlog, statements and labels.

Every claim, verdict and appeal locks the task's row first (`SELECT ... FOR UPDATE`), so two
moderators acting on one task take turns and the second sees the first's lease or verdict: no
task is decided twice. The rules themselves are pure (chalicelib/domain/reviews.py); the time
they are judged at is the database's `now()`, one clock for every API container.

The scorer never reads or writes what this module writes, except the task row's final-decision
columns, and only for completed tasks, which the scorer no longer touches.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chalicelib.domain import events
from chalicelib.domain import reviews as rules
from chalicelib.domain.events import Due
from chalicelib.domain.reviews import QueuedState
from chalicelib.storage.db import Cursor, Database
from chalicelib.storage.webhooks import record_events

# The ad and seller facts a moderator sees beside each queued task.
_QUEUE_COLUMNS = """
    q.id AS task_id, q.kind, q.waiting_since, m.item_id, m.probability, m.model_version,
    COALESCE(m.model_decision, m.decision) AS model_decision, m.decision, m.decided_by, m.reviewed_by,
    m.review_reason, m.client_id, a.name, a.description, a.category, a.images_qty, a.seller_id,
    u.is_verified AS is_verified_seller, h.appeal_reason, h.lease_holder, h.lease_expires_at
"""


class ReviewStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- the queue ----------------------------------------------------------------------

    def queue(self, *, kind: str | None, after_id: int | None, limit: int, moderator: str) -> list[dict[str, Any]]:
        """Up to `limit` tasks waiting for a person, oldest (lowest task id) first, above `after_id`:
        a keyset page. A task under another moderator's live lease is not waiting; nor is an
        appeal `moderator` may not decide (four eyes). Each kind walks its partial index."""
        parts = []
        if kind in (None, rules.REVIEW):
            parts.append("""(SELECT r.id, 'review' AS kind, r.processed_at AS waiting_since
                FROM moderation_results r
                WHERE r.decision = 'review' AND r.status = 'completed' AND r.id > %(after)s
                AND NOT EXISTS (SELECT 1 FROM human_reviews l WHERE l.task_id = r.id AND l.kind = 'review'
                                AND l.lease_holder <> %(me)s AND l.lease_expires_at > now())
                ORDER BY r.id LIMIT %(limit)s)""")
        if kind in (None, rules.APPEAL):
            parts.append("""(SELECT m.id, 'appeal' AS kind, l.queued_at AS waiting_since
                FROM moderation_results m JOIN human_reviews l ON l.task_id = m.id AND l.kind = 'appeal'
                WHERE m.appeal = 'pending' AND m.id > %(after)s
                AND NOT (l.lease_holder IS NOT NULL AND l.lease_holder <> %(me)s AND l.lease_expires_at > now())
                AND l.prior_reviewer IS DISTINCT FROM %(me)s
                ORDER BY m.id LIMIT %(limit)s)""")
        sql = f"""
            WITH q AS (SELECT * FROM ({" UNION ALL ".join(parts)}) u ORDER BY id LIMIT %(limit)s)
            SELECT {_QUEUE_COLUMNS}
            FROM q JOIN moderation_results m ON m.id = q.id
            LEFT JOIN human_reviews h ON h.task_id = q.id AND h.kind = q.kind
            LEFT JOIN advertisements a ON a.id = m.item_id
            LEFT JOIN users u ON u.id = a.seller_id
            ORDER BY q.id
        """
        with self._db.transaction() as cur:
            cur.execute(sql, {"after": after_id or 0, "limit": limit, "me": moderator})
            return [dict(r) for r in cur.fetchall()]

    def backlog(self) -> dict[str, Any]:
        """Queue depth by kind and the oldest waiting age (seconds; None: empty), leased tasks
        included: they wait for a verdict. Reads the two partial indexes."""
        with self._db.transaction() as cur:
            cur.execute("""
                SELECT
                  (SELECT count(*) FROM moderation_results WHERE decision = 'review' AND status = 'completed') AS review,
                  (SELECT count(*) FROM moderation_results WHERE appeal = 'pending') AS appeal,
                  extract(epoch FROM now() - LEAST(
                    (SELECT min(processed_at) FROM moderation_results WHERE decision = 'review' AND status = 'completed'),
                    (SELECT min(l.queued_at) FROM moderation_results m JOIN human_reviews l
                       ON l.task_id = m.id AND l.kind = 'appeal' WHERE m.appeal = 'pending')))::float8 AS oldest
            """)
            row = cur.fetchone() or {}
        oldest = row.get("oldest")
        return {"review": int(row.get("review") or 0), "appeal": int(row.get("appeal") or 0),
                "oldest_seconds": None if oldest is None else float(oldest)}

    # --- claim and decide -----------------------------------------------------------------

    def claim(self, task_id: int, moderator: str, lease_seconds: int) -> dict[str, Any] | None:
        """Give `moderator` the task's lease; None: no such task. ReviewConflict when the rules
        refuse (another's live lease: lease_held; nothing to review: not_in_queue; four_eyes)."""
        with self._db.transaction() as cur:
            state, now = self._locked(cur, task_id)
            if state is None:
                return None
            kind = rules.check_claim(state, moderator, now)
            renewal = rules.lease_live(state, now) and state.lease_holder == moderator
            if state.lease_holder is not None and not renewal:
                # The previous lease ran out unused: the trail says so, then the new one starts.
                self._event(cur, task_id, "lease_expired", state.lease_holder, outcome=kind)
            cur.execute(
                """
                INSERT INTO human_reviews (task_id, kind, lease_holder, lease_expires_at, claims)
                VALUES (%(id)s, %(kind)s, %(me)s, now() + make_interval(secs => %(secs)s), 1)
                ON CONFLICT (task_id, kind) DO UPDATE SET lease_holder = EXCLUDED.lease_holder,
                    lease_expires_at = EXCLUDED.lease_expires_at,
                    claims = human_reviews.claims + CASE WHEN %(renewal)s THEN 0 ELSE 1 END
                RETURNING lease_expires_at
                """,
                {"id": task_id, "kind": kind, "me": moderator, "secs": lease_seconds, "renewal": renewal},
            )
            expires = cur.fetchone()["lease_expires_at"]
            if not renewal:
                self._event(cur, task_id, "claimed", moderator, outcome=kind)
        return {"task_id": task_id, "kind": kind, "lease_holder": moderator, "lease_expires_at": expires}

    def expire_leases(self, limit: int = 500) -> list[int]:
        """Give back the leases that ran out unused, each with its `lease_expired` trail row, when they
        run out rather than when someone next claims the task (the reconciler calls it every run).
        Each task row is locked first, as a claim or a verdict locks it; a task a request holds is
        skipped, and its claim writes the event itself. The tasks whose lease was given back."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                WITH expired AS (
                    SELECT h.task_id, h.kind, h.lease_holder, m.request_id
                    FROM human_reviews h JOIN moderation_results m ON m.id = h.task_id
                    WHERE h.decided_at IS NULL AND h.lease_holder IS NOT NULL AND h.lease_expires_at < now()
                    ORDER BY h.task_id LIMIT %(limit)s
                    FOR UPDATE OF m SKIP LOCKED
                ), cleared AS (
                    UPDATE human_reviews h SET lease_holder = NULL, lease_expires_at = NULL
                    FROM expired e WHERE h.task_id = e.task_id AND h.kind = e.kind
                    RETURNING h.task_id, h.kind, e.lease_holder, e.request_id
                )
                INSERT INTO task_events (task_id, kind, outcome, actor, request_id)
                SELECT task_id, 'lease_expired', kind, lease_holder, request_id FROM cleared
                RETURNING task_id
                """,
                {"limit": limit},
            )
            return [int(r["task_id"]) for r in cur.fetchall()]

    def decide(self, task_id: int, moderator: str, decision: str, reason: str,
               note: str | None) -> tuple[str, list[Due]] | None:
        """Record the lease holder's verdict: THE place a human decision is committed (review or
        appeal), with its trail event and its webhook event (`moderation.reviewed` or
        `moderation.appeal_decided`, in the outbox: docs/webhooks.md#events), in one transaction.
        The kind decided and the webhook deliveries to send once committed; None: no such task.
        ReviewConflict unless `moderator` holds the task's live lease."""
        with self._db.transaction() as cur:
            state, now = self._locked(cur, task_id)
            if state is None:
                return None
            kind = rules.check_verdict(state, moderator, now)
            cur.execute(
                """
                UPDATE human_reviews SET decision = %(decision)s, reason = %(reason)s, note = %(note)s,
                    decided_by = %(me)s, decided_at = now(), lease_expires_at = now()
                WHERE task_id = %(id)s AND kind = %(kind)s
                """,
                {"id": task_id, "kind": kind, "decision": decision, "reason": reason, "note": note, "me": moderator},
            )
            outcome = rules.appeal_outcome(decision) if kind == rules.APPEAL else decision
            cur.execute(
                """
                UPDATE moderation_results SET model_decision = COALESCE(model_decision, decision),
                    decision = %(decision)s, is_violation = %(decision)s = 'block', decided_by = 'human',
                    reviewed_by = %(me)s, review_reason = %(reason)s, reviewed_at = now(), updated_at = now(),
                    appeal = CASE WHEN %(kind)s = 'appeal' THEN %(outcome)s ELSE appeal END
                WHERE id = %(id)s
                """,
                {"id": task_id, "kind": kind, "decision": decision, "reason": reason, "me": moderator,
                 "outcome": outcome},
            )
            self._event(cur, task_id, "appeal_decided" if kind == rules.APPEAL else "reviewed", moderator,
                        outcome=f"{outcome}:{reason}")
            due = record_events(cur, [(events.APPEAL_DECIDED if kind == rules.APPEAL else events.REVIEWED, task_id)])
        return kind, due

    def appeal(self, task_id: int, client: str, reason: str, window: timedelta) -> bool:
        """`client`'s appeal of its task's block enters the queue; False: no such task of
        `client`'s. ReviewConflict: not a block, already appealed, or the window closed."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT id, decision, decided_by, reviewed_by, appeal, COALESCE(reviewed_at, processed_at) AS decided_at,
                       now() AS now
                FROM moderation_results WHERE id = %s AND client_id = %s FOR UPDATE
                """,
                (task_id, client),
            )
            row = cur.fetchone()
            if row is None:
                return False
            rules.check_appeal(row["decision"], row["appeal"], row["decided_at"], row["now"], window, task_id)
            cur.execute("UPDATE moderation_results SET appeal = 'pending', updated_at = now() WHERE id = %s", (task_id,))
            cur.execute(
                """
                INSERT INTO human_reviews (task_id, kind, appeal_reason, prior_reviewer) VALUES (%s, 'appeal', %s, %s)
                ON CONFLICT (task_id, kind) DO NOTHING
                """,
                (task_id, reason, row["reviewed_by"] if row["decided_by"] == rules.HUMAN else None),
            )
            self._event(cur, task_id, "appealed", client, outcome="pending")
        return True

    def _locked(self, cur: Cursor, task_id: int) -> tuple[QueuedState | None, datetime]:
        """The task row, locked, with the lease of the kind it waits for, and the database's now."""
        cur.execute(
            """
            SELECT m.id, m.status, m.decision, m.decided_by, m.reviewed_by, m.appeal, now() AS now
            FROM moderation_results m WHERE m.id = %s FOR UPDATE
            """,
            (task_id,),
        )
        row = cur.fetchone()
        if row is None:
            return None, datetime.min
        state = QueuedState(row["id"], row["status"], row["decision"], row["decided_by"], row["reviewed_by"],
                            row["appeal"])
        kind = rules.pending_kind(state)
        if kind is not None:
            cur.execute("SELECT lease_holder, lease_expires_at FROM human_reviews WHERE task_id = %s AND kind = %s "
                        "AND decided_at IS NULL", (task_id, kind))
            lease = cur.fetchone()
            if lease is not None:
                state = QueuedState(state.task_id, state.status, state.decision, state.decided_by, state.reviewed_by,
                                    state.appeal, lease["lease_holder"], lease["lease_expires_at"])
        return state, row["now"]

    @staticmethod
    def _event(cur: Cursor, task_id: int, kind: str, actor: str, *, outcome: str | None = None) -> None:
        cur.execute(
            "INSERT INTO task_events (task_id, kind, outcome, actor, request_id) "
            "SELECT %s, %s, %s, %s, request_id FROM moderation_results WHERE id = %s",
            (task_id, kind, outcome, actor, task_id),
        )

    # --- reads for statements and labels ------------------------------------------------

    def statement_task(self, task_id: int, *, owner: str | None) -> dict[str, Any] | None:
        """What a statement of reasons needs of a task (the ad's category too); None: not `owner`'s."""
        with self._db.transaction() as cur:
            cur.execute(
                f"SELECT {_STATEMENT_COLUMNS} FROM moderation_results m LEFT JOIN advertisements a ON a.id = m.item_id "
                "WHERE m.id = %(id)s AND (%(owner)s::text IS NULL OR m.client_id = %(owner)s)",
                {"id": task_id, "owner": owner},
            )
            row = cur.fetchone()
        return dict(row) if row else None

    def blocks_since(self, since: datetime, *, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Blocked tasks whose decision was made at or after `since`, by task id (for make statements)."""
        with self._db.transaction() as cur:
            cur.execute(
                f"SELECT {_STATEMENT_COLUMNS} FROM moderation_results m LEFT JOIN advertisements a ON a.id = m.item_id "
                "WHERE m.decision = 'block' AND m.status = 'completed' AND m.id > %(after)s "
                "AND COALESCE(m.reviewed_at, m.processed_at) >= %(since)s ORDER BY m.id LIMIT %(limit)s",
                {"since": since, "after": after_id, "limit": limit},
            )
            return [dict(r) for r in cur.fetchall()]

    def human_labels(self) -> list[dict[str, Any]]:
        """Every task a person decided, with its ad: training labels (training/labels.py)."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT m.id AS task_id, m.item_id, m.decision, m.probability, m.model_version, m.reviewed_at,
                       COALESCE(m.model_decision, m.decision) AS model_decision, u.is_verified AS is_verified_seller,
                       a.name, a.description, a.category, a.images_qty
                FROM moderation_results m JOIN advertisements a ON a.id = m.item_id JOIN users u ON u.id = a.seller_id
                WHERE m.decided_by = 'human' ORDER BY m.id
                """
            )
            return [dict(r) for r in cur.fetchall()]

    def human_agreement(self, shadow_version: str | None) -> list[dict[str, Any]]:
        """Per task a person decided: the human's decision, the live model's, and the shadow's (null where the
        shadow, or `shadow_version` if given, did not score it). For make model-compare."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT m.id AS task_id, m.decision AS human, COALESCE(m.model_decision, m.decision) AS live,
                       s.shadow_decision AS shadow, s.shadow_version
                FROM moderation_results m
                LEFT JOIN LATERAL (SELECT shadow_decision, shadow_version FROM shadow_verdicts v WHERE v.task_id = m.id
                                   AND (%(v)s::text IS NULL OR v.shadow_version = %(v)s)
                                   ORDER BY scored_at DESC LIMIT 1) s ON true
                WHERE m.decided_by = 'human' ORDER BY m.id
                """,
                {"v": shadow_version},
            )
            return [dict(r) for r in cur.fetchall()]


_STATEMENT_COLUMNS = """
    m.id AS task_id, m.item_id, m.status, m.decision, m.probability, m.model_version, m.created_at, m.processed_at,
    COALESCE(m.model_decision, m.decision) AS model_decision, COALESCE(m.decided_by, 'model') AS decided_by,
    m.reviewed_by, m.review_reason, m.reviewed_at, m.appeal, a.category
"""
