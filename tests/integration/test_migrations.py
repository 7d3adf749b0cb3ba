"""Migrations apply in order, are recorded, and are safe to run twice."""

from __future__ import annotations

import json

import psycopg2

from chalicelib.storage.migrations import MIGRATIONS_DIR, apply_migrations
from tests.helpers import execute


def test_second_run_applies_nothing(pg_url):
    assert apply_migrations(pg_url) == []
    applied = {r[0] for r in execute(pg_url, "SELECT migration_id FROM _yoyo_migration")}
    assert {"V1__users_and_advertisements", "V2__moderation_results"} <= applied


def test_ops_query_columns_exist(db):
    # The query ops run, verbatim.
    execute(db, "SELECT id, item_id, status, is_violation, probability, created_at, processed_at "
                "FROM moderation_results ORDER BY id DESC LIMIT 10")


def test_v6_keeps_indexes_ops_built_concurrently_beforehand(empty_db, tmp_path):
    """docs/operations/migrations.md: on a big table the V6 indexes are built by hand without
    blocking writes; V6 then records them, builds nothing, and drops V2's index."""
    for f in MIGRATIONS_DIR.glob("V[1-5]__*.sql"):
        (tmp_path / f.name).write_text(f.read_text())
    apply_migrations(empty_db, tmp_path)
    conn = psycopg2.connect(empty_db)
    conn.autocommit = True  # CONCURRENTLY cannot run in a transaction
    with conn.cursor() as cur:
        cur.execute("CREATE INDEX CONCURRENTLY moderation_results_item_id_id_idx ON moderation_results (item_id, id)")
        cur.execute("CREATE INDEX CONCURRENTLY moderation_results_status_id_idx ON moderation_results (status, id)")
        cur.execute("SELECT indexrelid FROM pg_index WHERE indrelid = 'moderation_results'::regclass")
        built = {r[0] for r in cur.fetchall()}
    conn.close()
    assert "V6__task_list_indexes" in apply_migrations(empty_db)  # with any later ones
    indexes = dict(execute(empty_db, "SELECT indexrelid::regclass::text, indexrelid FROM pg_index "
                                     "WHERE indrelid = 'moderation_results'::regclass"))
    assert set(indexes) == {"moderation_results_pkey", "moderation_results_unfinished_idx",
                            "moderation_results_item_id_id_idx", "moderation_results_status_id_idx",
                            # V8's, per client
                            "moderation_results_client_id_idx", "moderation_results_client_status_id_idx",
                            # V10's partial indexes: the review queue and the appeals
                            "moderation_results_review_queue_idx", "moderation_results_appeal_queue_idx"}
    v6 = {"moderation_results_item_id_id_idx", "moderation_results_status_id_idx"}
    assert {indexes[name] for name in v6} <= built  # the same indexes: none rebuilt


def test_a_clients_page_reads_its_own_index_however_many_tasks_others_have(app_env):
    """migrations/V8: GET /moderation/tasks for one client walks (client_id, ...) indexes (by ad:
    the ad's), so its page reads about `limit` entries when other clients own almost every task."""
    from chalicelib.storage.tasks import task_page_query

    execute(app_env, "INSERT INTO moderation_results (item_id, status, error_message, client_id) "
                     "SELECT 1 + g % 500, CASE WHEN g % 7 = 0 THEN 'failed' ELSE 'pending' END, "
                     "CASE WHEN g % 7 = 0 THEN 'boom' END, "
                     "CASE WHEN g % 1000 = 0 THEN 'small' ELSE 'big' END FROM generate_series(1, 60000) g; "
                     "ANALYZE moderation_results")
    for filters in ({}, {"item_id": 1}, {"status": "failed"}, {"item_id": 1, "status": "failed"}):
        sql, params = task_page_query(before_id=None, limit=21, owner="small", **{"item_id": None, "status": None,
                                                                                  **filters})
        plan = execute(app_env, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)[0][0][0]["Plan"]
        text = json.dumps(plan)
        index = "moderation_results_item_id_id_idx" if "item_id" in filters else "moderation_results_client"
        assert index in text, (filters, text[:400])
        assert plan["Shared Hit Blocks"] + plan.get("Shared Read Blocks", 0) < 200, (filters, plan)
