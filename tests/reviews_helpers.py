"""Tasks in the states the review loop starts from, written as the scorer writes them (tests only)."""

from __future__ import annotations

from tests.helpers import execute, insert_ad


def scored_task(url: str, client: str, decision: str, *, probability: float = 0.2, item_id: int | None = None,
                days_ago: float = 0) -> int:
    """A completed task of `client` whose model decision is `decision` (allow | review | block)."""
    item = item_id if item_id is not None else insert_ad(url)
    rows = execute(
        url,
        "INSERT INTO moderation_results (item_id, status, is_violation, probability, model_version, decision, client_id, "
        "created_at, processed_at, attempts) VALUES (%s, 'completed', %s, %s, 'v-test', %s, %s, "
        "now() - make_interval(secs => %s), now() - make_interval(secs => %s), 1) RETURNING id",
        (item, decision == "block", probability, decision, client, days_ago * 86400 + 1, days_ago * 86400),
    )
    task_id = int(rows[0][0])
    execute(url, "INSERT INTO task_events (task_id, kind) VALUES (%s, 'accepted')", (task_id,))
    return task_id


def review_tasks(url: str, client: str, n: int) -> list[int]:
    """n tasks in the review band, one ad shared (fast to write)."""
    item = insert_ad(url)
    rows = execute(
        url,
        "WITH t AS (INSERT INTO moderation_results (item_id, status, is_violation, probability, model_version, decision, "
        "client_id, processed_at, attempts) SELECT %s, 'completed', false, 0.3, 'v-test', 'review', %s, now(), 1 "
        "FROM generate_series(1, %s) RETURNING id) SELECT id FROM t ORDER BY id",
        (item, client, n),
    )
    return [int(r[0]) for r in rows]
