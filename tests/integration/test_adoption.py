"""`make migrate` adopts the older services' databases in place (docs/moving-over.md),
on real PostgreSQL: each fixture database of tests/fixtures/seeds/ is built in an empty database, then migrated with the code
`make migrate` and the deployed migrate function run.

What must hold: every row kept; old tasks read through both result routes with
their values; new task ids continue after the old ones (and past int4); old
pending tasks failed with a reason; the schema is exactly a fresh one; a second
run changes nothing; a database it cannot adopt is refused before any change.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from chalice.test import Client

from chalicelib import deps
from chalicelib.storage.migrations import MIGRATIONS_DIR, MigrationError, SchemaNotRecognised, apply_migrations, status
from tests.helpers import execute, insert_ad, register_test_clients, with_keys

SEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "seeds"
OURS = ("users", "advertisements", "moderation_results", "task_events", "idempotency_keys")
STUCK = "accepted by the older moderation service but not finished before the move to ad-moderation: submit the ad again"
NO_REASON = "failed in the older moderation service, which recorded no reason"


def seeded(url: str, seed: str) -> str:
    """Build a seed's database (tests/fixtures/seeds/seed_<seed>.sql) in the empty database `url`."""
    execute(url, (SEEDS / f"seed_{seed}.sql").read_text())
    return url


def old_tasks(url: str) -> dict[int, dict]:
    """The fixture's tasks as the older service stored them; times read as UTC."""
    rows = execute(url, "SELECT id, item_id, status, is_violation, probability, error_message, created_at, processed_at "
                        "FROM moderation_results ORDER BY id")
    keys = ("item_id", "status", "is_violation", "probability", "error_message", "created_at", "processed_at")
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}


def instant(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def snapshot(url: str) -> tuple:
    """Every table's rows and the whole schema of the database: equal snapshots, nothing changed."""
    tables = [r[0] for r in execute(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    data = {t: execute(url, f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x")[0][0]
            for t in tables}
    return data, schema(url, None), execute(url, "SELECT sequencename, last_value FROM pg_sequences ORDER BY 1")


def schema(url: str, tables: tuple[str, ...] | None = OURS) -> list[tuple]:
    """Columns, constraints, indexes and sequences, by name."""
    only = "" if tables is None else " AND {col} = ANY(%(t)s)"
    return execute(url, f"""
        SELECT 'column', table_name::text, column_name::text, data_type || ' ' || is_nullable || ' ' ||
               coalesce(column_default, '')
        FROM information_schema.columns WHERE table_schema = 'public'{only.format(col='table_name')}
        UNION ALL
        SELECT 'constraint', conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace{only.format(col='conrelid::regclass::text')}
        UNION ALL
        SELECT 'index', tablename::text, indexname::text, indexdef
        FROM pg_indexes WHERE schemaname = 'public'{only.format(col='tablename')}
        UNION ALL
        SELECT 'sequence', sequencename::text, data_type::text, max_value::text FROM pg_sequences WHERE schemaname = 'public'
        ORDER BY 1, 2, 3""", {"t": list(tables or ())})


@pytest.fixture()
def client_for(sqs: object, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A Chalice test client of the API on a given database (moto SQS)."""
    from app import app

    def make(url: str) -> Client:
        monkeypatch.setenv("DATABASE_URL", url)
        deps.reset()
        register_test_clients(url)
        return with_keys(Client(app), app)

    yield make
    deps.reset()


@pytest.mark.parametrize(("seed", "stand_ins"), [("002", 2), ("000_001", 1)])
def test_status_names_what_it_found_and_changes_nothing(empty_db: str, seed: str, stand_ins: int) -> None:
    url = seeded(empty_db, seed)
    before = snapshot(url)
    found = status(url)
    assert found.applied == [] and "older service's database" in found.found
    assert [s.migration for s in found.pending][:2] == ["V1__users_and_advertisements", "V2__moderation_results"]
    assert sum(s.adoption is not None for s in found.pending) == stand_ins
    assert ("pgmigrate schema_version: 1, 2, 4, 5" in found.found) == (seed == "002")
    assert snapshot(url) == before


@pytest.mark.parametrize("seed", ["002", "000_001"])
def test_migrate_adopts_every_row_into_exactly_the_fresh_schema(pg_url: str, empty_db: str, seed: str) -> None:
    url = seeded(empty_db, seed)
    before = old_tasks(url)
    ads_before = execute(url, "SELECT id, seller_id, name, description, category, images_qty, is_closed FROM advertisements "
                              "ORDER BY id") if seed == "002" else []
    users_before = execute(url, "SELECT id, is_verified_seller FROM users ORDER BY id") if seed == "002" else []

    plan = status(url).pending
    applied = apply_migrations(url)

    assert applied == [str(step) for step in plan] and len(applied) == len(list(MIGRATIONS_DIR.glob("*.sql")))
    assert sum("(adopting" in a for a in applied) == (2 if seed == "002" else 1)
    assert schema(url) == schema(pg_url)  # the session database: migrated from nothing
    after = execute(url, "SELECT id, item_id, status, is_violation, probability, error_message, created_at, processed_at, "
                         "model_version, error_kind, attempts FROM moderation_results ORDER BY id")
    assert [r[0] for r in after] == list(before)
    for task_id, item_id, status_, violation, probability, error, created, processed, version, kind, attempts in after:
        old = before[task_id]
        assert item_id == old["item_id"] and attempts == 0
        assert created == old["created_at"].replace(tzinfo=UTC)  # read as UTC
        if old["status"] == "completed":
            assert (status_, violation, probability, version, kind) == (
                "completed", old["is_violation"], old["probability"], "legacy", None)
            assert processed == old["processed_at"].replace(tzinfo=UTC)
        elif old["status"] == "failed":
            assert (status_, error, kind) == ("failed", old["error_message"] or NO_REASON, None)
            assert processed == old["processed_at"].replace(tzinfo=UTC)
        else:  # pending: its message was in the old service's queue
            assert (status_, error, kind, violation, probability) == ("failed", STUCK, "stuck", None, None)
            assert processed is not None
    if seed == "002":
        assert execute(url, "SELECT id, seller_id, name, description, category, images_qty, is_closed FROM advertisements "
                            "ORDER BY id") == ads_before
        assert execute(url, "SELECT id, is_verified FROM users ORDER BY id") == users_before
        assert execute(url, "SELECT version FROM schema_version ORDER BY 1") == [(1,), (2,), (4,), (5,)]  # left as it was
    else:
        assert execute(url, "SELECT count(*) FROM advertisements") == [(0,)]


@pytest.mark.parametrize("seed", ["002", "000_001"])
def test_a_second_run_changes_nothing(empty_db: str, seed: str) -> None:
    url = seeded(empty_db, seed)
    assert apply_migrations(url)
    before = snapshot(url)
    assert apply_migrations(url) == []
    assert status(url).pending == [] and snapshot(url) == before


@pytest.mark.parametrize("seed", ["002", "000_001"])
def test_old_tasks_read_the_same_through_both_result_routes(empty_db: str, seed: str, client_for) -> None:
    url = seeded(empty_db, seed)
    before = old_tasks(url)
    apply_migrations(url)
    with client_for(url) as client:
        for task_id, old in before.items():
            answers = [json.loads(client.http.get(path).body)
                       for path in (f"/moderation/moderation_result/{task_id}", f"/moderation_result/{task_id}")]
            assert answers[0] == answers[1]
            got = answers[0]
            assert (got["task_id"], got["item_id"]) == (task_id, old["item_id"])
            assert instant(got["created_at"]) == old["created_at"].replace(tzinfo=UTC)
            if old["status"] == "pending":
                assert (got["status"], got["error_kind"], got["error_message"]) == ("failed", "stuck", STUCK)
            else:
                assert (got["status"], got["is_violation"], got["probability"]) == (
                    old["status"], old["is_violation"], old["probability"])
                assert got["error_message"] == (old["error_message"] or NO_REASON if old["status"] == "failed" else None)
                assert instant(got["processed_at"]) == old["processed_at"].replace(tzinfo=UTC)
            events = client.http.get(f"/moderation/moderation_result/{task_id}/events")
            assert events.status_code == 200 and json.loads(events.body)["events"] == []  # they kept no trail


@pytest.mark.parametrize("seed", ["002", "000_001"])
def test_new_task_ids_continue_after_the_old_ones_and_past_int4(empty_db: str, seed: str, client_for, sqs) -> None:
    url = seeded(empty_db, seed)
    highest = max(old_tasks(url))
    apply_migrations(url)
    item_id = 1 if seed == "002" else insert_ad(url)  # 000/001 documented no ads: the marketplace loads them
    with client_for(url) as client:
        first = json.loads(client.http.post(f"/moderation/async_predict?item_id={item_id}").body)["task_id"]
        assert first > highest
        execute(url, "SELECT setval('moderation_results_id_seq', 2147483646)")
        ids = [json.loads(client.http.post(f"/async_predict?item_id={item_id}").body)["task_id"] for _ in range(3)]
        assert ids == [2**31 - 1, 2**31, 2**31 + 1]
        got = json.loads(client.http.get(f"/moderation_result/{2**31 + 1}").body)
        assert (got["status"], got["item_id"]) == ("pending", item_id)
    # The reconciler has nothing to re-send or fail among the old tasks: they are all finished.
    assert execute(url, "SELECT count(*) FROM moderation_results WHERE id <= %s AND status IN ('pending', 'processing')",
                   (highest,)) == [(0,)]


def test_the_adopted_history_is_kept_for_the_retention_after_the_move(empty_db: str, client_for) -> None:
    """The fixtures' tasks are older than 30 days; retention counts from their last
    change, which was the move, so clients can read them for RETENTION_DAYS more."""
    url = seeded(empty_db, "002")
    apply_migrations(url)
    with client_for(url):
        assert deps.reconciler().purge() == (0, 0)
        execute(url, "UPDATE moderation_results SET updated_at = updated_at - interval '31 days'")
        assert deps.reconciler().purge() == (395, 0)  # no trail: the old service kept none


def test_seed_002s_closed_ads_stay_closed(empty_db: str, client_for) -> None:
    url = seeded(empty_db, "002")
    first = "SELECT min(id) FROM advertisements WHERE is_closed = %s"
    closed, open_ = (execute(url, first, (flag,))[0][0] for flag in (True, False))
    apply_migrations(url)
    with client_for(url) as client:
        assert client.http.post(f"/moderation/async_predict?item_id={closed}").status_code == 404
        assert client.http.post(f"/moderation/simple_predict?item_id={closed}").status_code == 404
        assert client.http.post(f"/moderation/async_predict?item_id={open_}").status_code == 202


def test_an_unknown_database_is_refused_before_any_change(empty_db: str) -> None:
    execute(empty_db, "CREATE TABLE users (id SERIAL PRIMARY KEY, email TEXT NOT NULL); INSERT INTO users (email) VALUES ('a@b')")
    before = snapshot(empty_db)
    with pytest.raises(SchemaNotRecognised) as refused:
        apply_migrations(empty_db)
    message = str(refused.value)
    assert "Nothing was changed" in message and "table users exists (id integer, email text)" in message
    assert "users has columns ad-moderation does not know: email" in message and "users lacks is_verified_seller" in message
    assert "What to do" in message
    assert snapshot(empty_db) == before  # not even yoyo's tables
    with pytest.raises(SchemaNotRecognised):
        status(empty_db)


@pytest.mark.parametrize(
    ("seed", "damage", "refusal"),
    [("000_001", "UPDATE moderation_results SET status = 'queued' WHERE id IN (1, 2)",
      r"2 row\(s\) with a status other than pending"),
     ("002", "DELETE FROM schema_version WHERE version = 5", r"records versions 1, 2, 4, not the last release's 1, 2, 4, 5")],
    ids=["rows it cannot take", "seed 002 before its last release"],
)
def test_a_seed_it_cannot_take_is_refused_before_any_change(empty_db: str, seed: str, damage: str, refusal: str) -> None:
    url = seeded(empty_db, seed)
    execute(url, damage)
    before = snapshot(url)
    with pytest.raises(SchemaNotRecognised, match=refusal):
        apply_migrations(url)
    assert snapshot(url) == before


def test_concurrent_runs_adopt_once(empty_db: str) -> None:
    url = seeded(empty_db, "002")
    with ThreadPoolExecutor(3) as pool:  # an error in any run is raised here
        results = list(pool.map(lambda _: apply_migrations(url), range(3)))
    every = len(list(MIGRATIONS_DIR.glob("V*.sql")))
    assert sorted(len(r) for r in results) == [0, 0, every]
    assert execute(url, "SELECT count(*) FROM _yoyo_migration") == [(every,)]


def test_a_failing_migration_is_rolled_back_and_the_ones_before_it_stay(empty_db: str, tmp_path: Path) -> None:
    url = seeded(empty_db, "000_001")
    for f in MIGRATIONS_DIR.glob("*.sql"):
        (tmp_path / f.name).write_text(f.read_text())
    broken = tmp_path / "V3__task_events.sql"
    broken.write_text(broken.read_text() + "\nSELECT 1 / 0;\n")
    with pytest.raises(MigrationError, match=r"V3__task_events failed and was rolled back; applied before it, and kept"):
        apply_migrations(url, tmp_path)
    assert [r[0] for r in execute(url, "SELECT migration_id FROM _yoyo_migration ORDER BY 1")] == [
        "V1__users_and_advertisements", "V2__moderation_results"]
    assert execute(url, "SELECT to_regclass('task_events')") == [(None,)]
    rest = sorted(f.stem for f in MIGRATIONS_DIR.glob("V*.sql") if f.stem not in ("V1__users_and_advertisements",
                                                                                  "V2__moderation_results"))
    assert sorted(apply_migrations(url)) == rest


@pytest.mark.parametrize("seed", ["002", "000_001"])
def test_in_flight_tasks_younger_than_the_horizon_are_handed_to_the_pipeline(empty_db: str, seed: str, client_for,
                                                                              sqs) -> None:
    """A cutover: the old service stopped minutes before `make migrate`. Its unfinished
    tasks younger than STUCK_AFTER_SECONDS become pending and unsent, so the reconciler
    re-sends them like a task whose send was lost; older ones fail as stuck."""
    url = seeded(empty_db, seed)
    rows = execute(url, """
        INSERT INTO moderation_results (item_id, status, created_at)
        VALUES (1, 'pending', now() AT TIME ZONE 'UTC' - INTERVAL '3 minutes'),
               (2, 'processing', now() AT TIME ZONE 'UTC' - INTERVAL '10 minutes'),
               (3, 'pending', now() AT TIME ZONE 'UTC' - INTERVAL '2 hours')
        RETURNING id""")
    young_pending, young_processing, old = (r[0] for r in rows)
    apply_migrations(url)
    got = dict((r[0], r[1:]) for r in execute(
        url, "SELECT id, status, enqueued_at, error_kind, error_message FROM moderation_results WHERE id = ANY(%s)",
        ([young_pending, young_processing, old],)))
    assert got[young_pending] == got[young_processing] == ("pending", None, None, None)
    assert got[old] == ("failed", None, "stuck", STUCK)
    with client_for(url) as client:
        report = deps.reconciler().run()
        assert set(report.resent) >= {young_pending, young_processing} and old not in report.resent
        # The fixtures' own unfinished tasks are months old: none of them is re-sent.
        assert set(report.resent) == {young_pending, young_processing}
        for task_id in (young_pending, young_processing):
            polled = json.loads(client.http.get(f"/moderation_result/{task_id}", headers={"x-api-key": "key-legacy"}).body)
            assert (polled["status"], polled["error_message"]) == ("pending", None)
    queue_url = sqs.get_queue_url(QueueName=deps.get_settings().queue_name)["QueueUrl"]
    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]]
    assert {b["task_id"] for b in bodies} == {young_pending, young_processing}


@pytest.mark.parametrize(("named", "key"), [(None, "key-legacy"), ("older-clients", "key-older")])
def test_adopted_tasks_belong_to_the_client_named_at_migrate_time(empty_db: str, client_for, named, key) -> None:
    """make migrate ARGS="--client NAME" (default `legacy`, docs/clients.md): that client's key reads
    the older services' tasks, through both result paths; any other client's key gets 404."""
    url = seeded(empty_db, "002")
    before = old_tasks(url)
    apply_migrations(url, default_client=named)
    assert {owner for (owner,) in execute(url, "SELECT DISTINCT client_id FROM moderation_results")} == {
        named or "legacy"}
    # V9: the client moved over is pinned to the older services' contract (issue 25).
    assert execute(url, "SELECT client, contract FROM client_contracts") == [(named or "legacy", "legacy")]
    with client_for(url) as client:
        for task_id in before:
            for path in (f"/moderation/moderation_result/{task_id}", f"/moderation_result/{task_id}"):
                assert client.http.get(path, headers={"x-api-key": key}).status_code == 200
                assert client.http.get(path, headers={"x-api-key": "key-a"}).status_code == 404
        listed = json.loads(client.http.get("/moderation/tasks?limit=100", headers={"x-api-key": key}).body)["tasks"]
        assert len(listed) == min(100, len(before)) and {t["task_id"] for t in listed} <= set(before)
        others = json.loads(client.http.get("/moderation/tasks", headers={"x-api-key": "key-a"}).body)["tasks"]
        assert others == []
