"""Webhooks' SQL (issue 22; docs/webhooks.md): the outbox any transaction writes to, a client's
endpoints, the deliveries and their attempts.

`record_events(cur, events)` is the one way to emit a task event: called with the cursor of the
transaction that changes the task, so the event exists if and only if the change does (the outbox).
One statement for a whole batch, joined to the endpoints that subscribe: a batch whose clients
have none inserts nothing and costs one index probe per client.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib.domain.events import MAX_BODY_BYTES, Due
from chalicelib.errors import EndpointNotFound
from chalicelib.storage.db import Cursor, Database

# The event id (`webhook-id`): fixed when the event is written, the same on every retry.
_EVENT_ID = "'msg_' || replace(gen_random_uuid()::text, '-', '')"
_NOW_ISO = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
_ENDPOINT_COLUMNS = "id, url, events, enabled, disabled_reason, failing_since, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the sender needs for one attempt (the secrets still sealed)."""

    delivery_id: int
    event_id: str
    event_type: str
    body: str
    status: str
    attempts: int
    created_at: datetime
    endpoint_id: str
    client_id: str
    url: str
    enabled: bool
    secret: str
    previous_secret: str | None


def record_events(cur: Cursor, events: Sequence[tuple[str, int]]) -> list[Due]:
    """Write `(event type, task id)` events to the outbox, one delivery per subscribed endpoint
    of the task's client, in the caller's transaction; the deliveries to send once it commits.

    The payload is read from the task row as the transaction sees it (after its own update):
    `{"type", "timestamp", "data": {"task_id", "item_id", "status", "decision"}}`.
    """
    if not events:
        return []
    cur.execute(
        f"""
        INSERT INTO webhook_deliveries (event_id, endpoint_id, client_id, event_type, task_id, enqueued_at, body)
        SELECT {_EVENT_ID}, e.id, e.client_id, ev.type, m.id, now(),
               -- json, not jsonb: the text is built once and signed as it is; jsonb would parse it again
               json_build_object('type', ev.type, 'timestamp', {_NOW_ISO},
                                 'data', json_build_object('task_id', m.id, 'item_id', m.item_id,
                                                           'status', m.status, 'decision', m.decision))::text
        FROM unnest(%s::text[], %s::bigint[]) AS ev(type, task_id)
        JOIN moderation_results m ON m.id = ev.task_id
        JOIN webhook_endpoints e ON e.client_id = m.client_id AND e.enabled AND ev.type = ANY(e.events)
        -- a completion or failure the transaction's own update did not make (a finished task) reports nothing
        WHERE ev.type NOT IN ('moderation.completed', 'moderation.failed') OR m.status = split_part(ev.type, '.', 2)
        RETURNING id
        """,
        ([t for t, _ in events], [task_id for _, task_id in events]),
    )
    return [Due(int(r["id"]), 0, 0) for r in cur.fetchall()]


def record_client_event(cur: Cursor, client: str, event_type: str, data: dict[str, Any], *,
                        endpoint_id: str | None = None) -> list[Due]:
    """An event about a client's endpoints rather than a task: to `endpoint_id` alone (whatever it
    subscribes to: a test), else to the client's enabled endpoints that subscribe to it."""
    body = json.dumps({"type": event_type, "data": data}, separators=(",", ":"))
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"a webhook payload is {len(body)} bytes, over {MAX_BODY_BYTES}")
    cur.execute(
        f"""
        INSERT INTO webhook_deliveries (event_id, endpoint_id, client_id, event_type, enqueued_at, body)
        SELECT {_EVENT_ID}, e.id, e.client_id, %(type)s, now(),
               jsonb_build_object('type', %(type)s::text, 'timestamp', {_NOW_ISO}, 'data', %(data)s::jsonb)::text
        FROM webhook_endpoints e
        WHERE e.client_id = %(client)s AND CASE WHEN %(endpoint)s::text IS NULL
                                                THEN e.enabled AND %(type)s = ANY(e.events) ELSE e.id = %(endpoint)s END
        RETURNING id
        """,
        {"type": event_type, "data": json.dumps(data), "client": client, "endpoint": endpoint_id},
    )
    return [Due(int(r["id"]), 0, 0) for r in cur.fetchall()]


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- endpoints (a client sees only its own: another's answers EndpointNotFound) ----------

    def create_endpoint(self, client: str, endpoint_id: str, url: str, events: Sequence[str], secret: str) -> dict[str, Any]:
        with self._db.transaction() as cur:
            cur.execute(
                f"INSERT INTO webhook_endpoints (id, client_id, url, events, secret) VALUES (%s, %s, %s, %s, %s) "
                f"RETURNING {_ENDPOINT_COLUMNS}",
                (endpoint_id, client, url, list(events), secret),
            )
            return dict(cur.fetchone())

    def endpoints(self, client: str) -> list[dict[str, Any]]:
        with self._db.transaction() as cur:
            cur.execute(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE client_id = %s ORDER BY created_at, id",
                        (client,))
            return [dict(r) for r in cur.fetchall()]

    def delete_endpoint(self, client: str, endpoint_id: str) -> None:
        with self._db.transaction() as cur:
            cur.execute("DELETE FROM webhook_endpoints WHERE id = %s AND client_id = %s", (endpoint_id, client))
            if cur.rowcount == 0:
                raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")

    def rotate(self, client: str, endpoint_id: str, secret: str, overlap_seconds: int) -> dict[str, Any]:
        """The new secret signs from now on; the old one too, for `overlap_seconds`."""
        with self._db.transaction() as cur:
            cur.execute(
                f"""
                UPDATE webhook_endpoints SET previous_secret = secret, secret = %s,
                       previous_until = now() + make_interval(secs => %s), updated_at = now()
                WHERE id = %s AND client_id = %s RETURNING {_ENDPOINT_COLUMNS}, previous_until
                """,
                (secret, overlap_seconds, endpoint_id, client),
            )
            row = cur.fetchone()
            if row is None:
                raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
            return dict(row)

    def enable(self, client: str, endpoint_id: str, event_type: str) -> tuple[dict[str, Any], list[Due]]:
        """Enable again; the endpoint is sent `event_type` (the recovered notice) if it was disabled."""
        with self._db.transaction() as cur:
            cur.execute(
                f"""
                UPDATE webhook_endpoints SET enabled = true, disabled_reason = NULL, failing_since = NULL,
                       updated_at = now()
                WHERE id = %s AND client_id = %s RETURNING {_ENDPOINT_COLUMNS},
                      (SELECT NOT enabled FROM webhook_endpoints WHERE id = %s) AS was_disabled
                """,
                (endpoint_id, client, endpoint_id),
            )
            row = cur.fetchone()
            if row is None:
                raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")
            due: list[Due] = []
            if row.pop("was_disabled"):
                due = record_client_event(cur, client, event_type, {"endpoint_id": endpoint_id}, endpoint_id=endpoint_id)
            return dict(row), due

    def send_test(self, client: str, endpoint_id: str, event_type: str) -> list[Due]:
        with self._db.transaction() as cur:
            self._own(cur, client, endpoint_id)
            return record_client_event(cur, client, event_type, {"endpoint_id": endpoint_id}, endpoint_id=endpoint_id)

    def attempts(self, client: str, endpoint_id: str, limit: int) -> list[dict[str, Any]]:
        """The endpoint's latest attempts, newest first."""
        with self._db.transaction() as cur:
            self._own(cur, client, endpoint_id)
            cur.execute(
                """
                SELECT a.id AS attempt_id, d.event_id, d.event_type, d.task_id, a.attempt, a.at, a.status_code,
                       a.latency_ms, a.error, a.outcome
                FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
                WHERE a.endpoint_id = %s ORDER BY a.id DESC LIMIT %s
                """,
                (endpoint_id, limit),
            )
            return [dict(r) for r in cur.fetchall()]

    def replay(self, client: str, endpoint_id: str, since: datetime) -> list[Due]:
        """Deliver again every event of the endpoint since `since`, delivered or not: the same
        `webhook-id` and body (a receiver dedupes), the schedule started over."""
        with self._db.transaction() as cur:
            self._own(cur, client, endpoint_id)
            cur.execute(
                """
                UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
                       enqueued_at = now(), last_error = NULL
                WHERE endpoint_id = %s AND created_at >= %s RETURNING id
                """,
                (endpoint_id, since),
            )
            return [Due(int(r["id"]), 0, 0) for r in cur.fetchall()]

    @staticmethod
    def _own(cur: Cursor, client: str, endpoint_id: str) -> None:
        cur.execute("SELECT 1 FROM webhook_endpoints WHERE id = %s AND client_id = %s", (endpoint_id, client))
        if cur.fetchone() is None:
            raise EndpointNotFound(f"no webhook endpoint {endpoint_id}")

    # --- the sender -------------------------------------------------------------------------

    def deliveries(self, ids: Sequence[int]) -> dict[int, Delivery]:
        """The deliveries and their endpoints, the previous secret only while it still signs."""
        if not ids:
            return {}
        with self._db.transaction() as cur:
            cur.execute(
                """
                SELECT d.id AS delivery_id, d.event_id, d.event_type, d.body, d.status, d.attempts, d.created_at,
                       e.id AS endpoint_id, e.client_id, e.url, e.enabled, e.secret,
                       CASE WHEN e.previous_until > now() THEN e.previous_secret END AS previous_secret
                FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
                WHERE d.id = ANY(%s)
                """,
                (list(ids),),
            )
            return {int(r["delivery_id"]): Delivery(**r) for r in cur.fetchall()}

    def record_attempt(self, delivery: Delivery, *, status: str, status_code: int | None, latency_ms: int | None,
                       error: str | None, outcome: str, delay: int | None, disable_after_seconds: int,
                       gone: bool, disabled_event: str) -> tuple[bool, list[Due]]:
        """One attempt's outcome, in one transaction: the attempt row, the delivery's new state
        (`delay`: seconds to the next attempt, sent now when SQS can hold it, else by the
        reconciler), the endpoint's failing streak. Returns whether the endpoint was disabled
        now (410, or failing for `disable_after_seconds`) and the notices that emitted."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                INSERT INTO webhook_attempts (delivery_id, endpoint_id, attempt, status_code, latency_ms, error, outcome)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                """,
                (delivery.delivery_id, delivery.endpoint_id, delivery.attempts + 1, status_code, latency_ms, error, outcome),
            )
            cur.execute(
                """
                UPDATE webhook_deliveries SET status = %s, attempts = attempts + 1, last_error = %s,
                       next_attempt_at = now() + make_interval(secs => COALESCE(%s, 0)),
                       enqueued_at = CASE WHEN %s::int IS NOT NULL AND %s::int <= %s THEN now() END,
                       delivered_at = CASE WHEN %s = 'delivered' THEN now() END
                WHERE id = %s AND attempts = %s
                """,
                (status, error, delay, delay, delay, _SQS_HOLD, status, delivery.delivery_id, delivery.attempts),
            )
            if status == "delivered":
                cur.execute("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = %s AND failing_since IS NOT NULL",
                            (delivery.endpoint_id,))
                return False, []
            cur.execute(
                """
                UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, now()),
                       enabled = CASE WHEN %(gone)s OR COALESCE(failing_since, now()) <= now() - make_interval(secs => %(after)s)
                                      THEN false ELSE enabled END,
                       disabled_reason = CASE WHEN %(gone)s THEN 'the endpoint answered 410 Gone'
                                              WHEN COALESCE(failing_since, now()) <= now() - make_interval(secs => %(after)s)
                                              THEN 'failing continuously for ' || %(after)s || ' s' ELSE disabled_reason END,
                       updated_at = now()
                WHERE id = %(id)s
                RETURNING enabled, (SELECT enabled FROM webhook_endpoints WHERE id = %(id)s) AS was_enabled, disabled_reason
                """,
                {"gone": gone, "after": disable_after_seconds, "id": delivery.endpoint_id},
            )
            row = cur.fetchone()
            if row is None or row["enabled"] or not row["was_enabled"]:
                return False, []
            notices = record_client_event(cur, delivery.client_id, disabled_event,
                                          {"endpoint_id": delivery.endpoint_id, "reason": row["disabled_reason"]})
            return True, notices

    def drop(self, delivery_id: int, attempts: int, reason: str) -> None:
        """A delivery not attempted (its endpoint disabled): kept, to be replayed."""
        with self._db.transaction() as cur:
            cur.execute("UPDATE webhook_deliveries SET status = 'dropped', last_error = %s, enqueued_at = NULL "
                        "WHERE id = %s AND attempts = %s AND status = 'pending'", (reason, delivery_id, attempts))

    def unsent(self, ids: Sequence[int]) -> None:
        """Sends that failed: left to the reconciler."""
        if ids:
            with self._db.transaction() as cur:
                cur.execute("UPDATE webhook_deliveries SET enqueued_at = NULL WHERE id = ANY(%s) AND status = 'pending'",
                            (list(ids),))

    def claim_due(self, *, stale_seconds: int, limit: int) -> list[Due]:
        """Pending deliveries to send a message for, marked as sent (the caller sends them, and
        `unsent` what it could not): those without a message whose attempt is due within SQS's
        longest delay (a retry held in the database, a send that failed), and those whose attempt
        was due `stale_seconds` ago and has not happened (the writer died between its commit and
        its send, or the message was lost). A duplicate message is harmless: the sender skips a
        message whose attempt count the delivery has passed."""
        with self._db.transaction() as cur:
            cur.execute(
                """
                UPDATE webhook_deliveries d SET enqueued_at = now()
                FROM (SELECT id FROM webhook_deliveries
                      WHERE status = 'pending'
                        AND ((enqueued_at IS NULL AND next_attempt_at <= now() + make_interval(secs => %s))
                             OR (next_attempt_at <= now() - make_interval(secs => %s)
                                 AND enqueued_at <= now() - make_interval(secs => %s)))
                      ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) due
                WHERE d.id = due.id
                RETURNING d.id, d.attempts, GREATEST(0, ceil(extract(epoch FROM d.next_attempt_at - now())))::int AS delay
                """,
                (_SQS_HOLD, stale_seconds, stale_seconds, limit),
            )
            return [Due(int(r["id"]), int(r["attempts"]), int(r["delay"])) for r in cur.fetchall()]

    def oldest_pending_seconds(self) -> int:
        """Age of the oldest undelivered event (a pending delivery); 0 when none."""
        with self._db.transaction() as cur:
            cur.execute("SELECT COALESCE(extract(epoch FROM now() - min(created_at)), 0)::int AS age "
                        "FROM webhook_deliveries WHERE status = 'pending'")
            return int(cur.fetchone()["age"])


_SQS_HOLD = 900  # SQS's longest DelaySeconds (chalicelib/domain/webhooks.py SQS_MAX_DELAY)
