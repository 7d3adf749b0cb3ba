"""The API's SQL: ads, submitting tasks (with their Idempotency-Keys), reading
and listing them, their trails. A plain data-access object: each method is one
transaction of its own and returns plain data; it knows no HTTP and no SQS.

Driver errors become domain errors in `Database.transaction` (chalicelib.storage.db).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.domain.tasks import Ad, KeyedTask, Task, TaskEvent
from chalicelib.storage.db import Database, LockContention

_TASK_COLUMNS = """
    id AS task_id, item_id, status, is_violation, probability, model_version,
    error_message, error_kind, attempts, last_error, created_at, enqueued_at,
    started_at, processed_at, request_id, decision,
    decided_by, model_decision, reviewed_by, review_reason, reviewed_at, appeal
"""

_AD_SELECT = """
    SELECT a.id AS item_id, a.seller_id, u.is_verified AS is_verified_seller,
           a.name, a.description, a.category, a.images_qty
    FROM advertisements a JOIN users u ON u.id = a.seller_id
"""


class TaskStore:
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

    def create_task(self, item_id: int, *, client: str, request_id: str | None = None) -> int | None:
        """Insert a pending task of `client` for a live ad, and its `accepted` event,
        in one statement; None when the ad does not exist."""
        return self.create_tasks([item_id], client=client, request_id=request_id)[0]

    def create_task_once(self, item_id: int, key: str, *, client: str, request_id: str | None = None) -> KeyedTask:
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

        Keys are the client's own (primary key (client_id, key), migrations/V8): another
        client's key is never replayed, nor answered 409 (docs/clients.md).

        One statement, committed on its own (Database.statement: one round trip, not three).
        """
        with self._db.statement() as cur:
            cur.execute(
                """
                WITH ad AS (
                    SELECT id FROM advertisements WHERE id = %(item_id)s AND NOT is_closed
                ), claimed AS (
                    INSERT INTO idempotency_keys (client_id, key, item_id, task_id)
                    SELECT %(client)s, %(key)s, id, nextval(pg_get_serial_sequence('moderation_results', 'id')) FROM ad
                    ON CONFLICT (client_id, key) DO NOTHING
                    RETURNING task_id, item_id
                ), task AS (
                    INSERT INTO moderation_results (id, item_id, status, request_id, client_id)
                    SELECT task_id, item_id, 'pending', %(request_id)s, %(client)s FROM claimed
                    RETURNING id
                ), event AS (
                    INSERT INTO task_events (task_id, kind, request_id)
                    SELECT id, 'accepted', %(request_id)s FROM task
                )
                SELECT id FROM task
                """,
                {"item_id": item_id, "key": key, "request_id": request_id, "client": client},
            )
            row = cur.fetchone()
            if row:
                return KeyedTask(int(row["id"]), item_id, replayed=False)
            # Nothing inserted: the key was used before (by a transaction that
            # has committed by now), or the ad does not exist.
            cur.execute("SELECT task_id, item_id FROM idempotency_keys WHERE client_id = %s AND key = %s", (client, key))
            used = cur.fetchone()
        if used is None:
            return KeyedTask(None, item_id, replayed=False)
        return KeyedTask(int(used["task_id"]), int(used["item_id"]), replayed=True)

    def create_tasks(self, item_ids: Sequence[int], *, client: str, request_id: str | None = None) -> list[int | None]:
        """Batch create_task: one task (and `accepted` event) per live ad, in
        one statement; the task id for each requested item, in request order,
        None where the ad does not exist. A repeated item gets a task each time.

        Task ids are drawn in request order before the inserts, so each
        requested position keeps its own id even when items repeat.
        """
        if not item_ids:
            return []
        with self._db.statement() as cur:  # one statement: one round trip, committed before any send
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
                    INSERT INTO moderation_results (id, item_id, status, request_id, client_id)
                    SELECT task_id, item_id, 'pending', %(request_id)s, %(client)s FROM numbered
                ), event AS (
                    INSERT INTO task_events (task_id, kind, request_id)
                    SELECT task_id, 'accepted', %(request_id)s FROM numbered
                )
                SELECT pos, task_id FROM numbered
                """,
                {"item_ids": list(item_ids), "request_id": request_id, "client": client},
            )
            created = {int(r["pos"]): int(r["task_id"]) for r in cur.fetchall()}
        return [created.get(pos) for pos in range(1, len(item_ids) + 1)]

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
        except LockContention:
            # The scorer's claim locks what it can at once (SKIP LOCKED), then waits for the
            # rest: against this transaction's id-ordered locks that can still deadlock, and
            # PostgreSQL may pick this side. The scorer has moved on by then: try once more.
            self._mark_enqueued(sent, kind)

    def _mark_enqueued(self, sent: Mapping[int, str], kind: str) -> None:
        ids = list(sent)
        with self._db.statement() as cur:  # one round trip: the SET LOCAL and the statement, one implicit transaction
            cur.execute(
                """
                SET LOCAL synchronous_commit = off;
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

    def get_task(self, task_id: int, *, owner: str | None = None) -> Task | None:
        """The task; None when there is none, or it is not `owner`'s (None: anyone's).
        One answer for both: another client's task does not exist for this one."""
        with self._db.transaction() as cur:
            cur.execute(
                f"SELECT {_TASK_COLUMNS} FROM moderation_results WHERE id = %(id)s"
                " AND (%(owner)s::text IS NULL OR client_id = %(owner)s)",
                {"id": task_id, "owner": owner},
            )
            row = cur.fetchone()
        return Task(**row) if row else None

    def list_tasks(self, *, item_id: int | None, status: str | None, before_id: int | None, limit: int,
                   owner: str | None = None) -> list[Task]:
        """Up to `limit` tasks of `owner` (None: every client's), newest first (id DESC),
        below `before_id` if given: one page of a keyset walk, so tasks submitted
        meanwhile never shift it. One query, on an index (task_page_query)."""
        with self._db.transaction() as cur:
            cur.execute(*task_page_query(item_id=item_id, status=status, before_id=before_id, limit=limit, owner=owner))
            return [Task(**row) for row in cur.fetchall()]

    def task_events(self, task_id: int, *, owner: str | None = None) -> list[TaskEvent] | None:
        """The task's trail, oldest first; None when the task does not exist or is
        not `owner`'s (None: anyone's)."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT e.at, e.kind, e.attempt, e.outcome, e.error, e.message_id, e.request_id, e.actor
                FROM moderation_results m LEFT JOIN task_events e ON e.task_id = m.id
                WHERE m.id = %(id)s AND (%(owner)s::text IS NULL OR m.client_id = %(owner)s) ORDER BY e.id
                """,
                {"id": task_id, "owner": owner},
            )
            rows = cur.fetchall()
        if not rows:
            return None
        return [TaskEvent(**r) for r in rows if r["kind"] is not None]


def task_page_query(
    *, item_id: int | None, status: str | None, before_id: int | None, limit: int, owner: str | None = None
) -> tuple[str, dict[str, Any]]:
    """TaskStore.list_tasks's statement and parameters.

    A filter is written as a range (`>= v AND <= v`) and leads the ORDER BY. With
    `= v`, PostgreSQL drops the column from the ORDER BY and may walk the primary
    key backwards, filtering, on the guess that matching tasks are spread evenly
    over the ids: for an ad whose tasks are all old, or a status last seen a week
    ago, that reads the table back to them. As a range, only the (item_id, id) or
    (status, id) index (migrations/V6) gives the order, and a page reads about
    `limit` entries wherever the tasks are. Both filters: the ad's index, the
    status filtered among the ad's tasks.

    One client's page (`owner`): the client leads too (migrations/V8's (client_id, id) and
    (client_id, status, id)), written as a range for the same reason; by ad, the ad's index,
    the client filtered among the ad's few tasks.
    """
    # (column, parameter) that lead the index walked, in its order; each is a range.
    lead = [("client_id", "owner")] if owner is not None and item_id is None else []
    where = []
    if item_id is not None:
        lead.append(("item_id", "item_id"))
        if owner is not None:
            where.append("client_id = %(owner)s")
        if status is not None:
            where.append("status = %(status)s")
    elif status is not None:
        lead.append(("status", "status"))
    where[:0] = [f"{column} >= %({param})s AND {column} <= %({param})s" for column, param in lead]
    order = [f"{column} DESC" for column, _ in lead] + ["id DESC"]
    if before_id is not None:
        where.append("id < %(before_id)s")
    sql = f"SELECT {_TASK_COLUMNS} FROM moderation_results"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {', '.join(order)} LIMIT %(limit)s"
    return sql, {"item_id": item_id, "status": status, "before_id": before_id, "limit": limit, "owner": owner}
