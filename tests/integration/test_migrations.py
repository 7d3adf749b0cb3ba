"""Migrations apply in order, are recorded, and are safe to run twice."""

from __future__ import annotations

from chalicelib.migrate import apply_migrations
from tests.helpers import execute


def test_second_run_applies_nothing(pg_url):
    assert apply_migrations(pg_url) == []
    applied = {r[0] for r in execute(pg_url, "SELECT migration_id FROM _yoyo_migration")}
    assert {"V1__users_and_advertisements", "V2__moderation_results"} <= applied


def test_ops_query_columns_exist(db):
    # The query ops run, verbatim.
    execute(db, "SELECT id, item_id, status, is_violation, probability, created_at, processed_at "
                "FROM moderation_results ORDER BY id DESC LIMIT 10")
