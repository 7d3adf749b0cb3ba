"""Database.statement (issue 24): one execute, committed on its own, in one round trip,
on the pool's connections without changing what transaction() does with them."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from chalicelib.storage.db import Database


def count(db: str, sql: str) -> int:
    with psycopg2.connect(db) as conn, conn.cursor() as cur:
        cur.execute(sql)
        n = int(cur.fetchone()[0])
    conn.close()
    return n


@pytest.fixture()
def database(db: str):
    database = Database(db, pool_size=2, acquire_timeout_seconds=30)
    yield database
    database.close()


def test_a_statement_is_committed_without_a_transaction_block(db: str, database: Database):
    with database.statement() as cur:
        cur.execute("SELECT now() = statement_timestamp() AS alone")  # no BEGIN: the statement is the transaction
        assert cur.fetchone()["alone"] is True
        cur.execute("INSERT INTO users (name, is_verified) VALUES ('s', true) RETURNING id")
        (uid,) = cur.fetchone().values()
    assert count(db, f"SELECT count(*) FROM users WHERE id = {int(uid)}") == 1  # committed, by itself


def test_set_local_holds_for_its_execute_only(database: Database):
    with database.statement() as cur:
        cur.execute("SET LOCAL synchronous_commit = off; SELECT current_setting('synchronous_commit') AS v")
        assert cur.fetchone()["v"] == "off"
        cur.execute("SELECT current_setting('synchronous_commit') AS v")
        assert cur.fetchone()["v"] == "on"


def test_a_failed_statement_writes_nothing_and_the_pool_still_opens_transactions(db: str, database: Database):
    with pytest.raises(psycopg2.Error), database.statement() as cur:
        # Two statements, one implicit transaction: the second fails, so the first is undone too.
        cur.execute("INSERT INTO users (name, is_verified) VALUES ('gone', true); SELECT 1/0")
    assert count(db, "SELECT count(*) FROM users WHERE name = 'gone'") == 0
    for _ in range(2):  # whichever connection the pool hands out: a transaction again
        with pytest.raises(RuntimeError), database.transaction() as cur:
            cur.execute("INSERT INTO users (name, is_verified) VALUES ('rolled back', true)")
            raise RuntimeError("undo")
    assert count(db, "SELECT count(*) FROM users WHERE name = 'rolled back'") == 0


def test_statements_and_transactions_at_once_from_many_threads(db: str, database: Database):
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                if (n + i) % 2:
                    with database.statement() as cur:
                        cur.execute("INSERT INTO users (name, is_verified) VALUES ('many', true)")
                else:
                    with database.transaction() as cur:
                        cur.execute("INSERT INTO users (name, is_verified) VALUES ('many', true)")
                        cur.execute("INSERT INTO users (name, is_verified) VALUES ('many', true)")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert count(db, "SELECT count(*) FROM users WHERE name = 'many'") == 6 * (10 * 1 + 10 * 2)
