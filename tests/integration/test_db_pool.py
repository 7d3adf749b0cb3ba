"""chalicelib.storage.db under threads, as `chalice local` and the runner use it."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from chalicelib.errors import TransientError
from chalicelib.storage.db import Database
from tests.helpers import execute


def _backends(url: str, app_name: str) -> int:
    return int(execute(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app_name,))[0][0])


def test_32_threads_share_a_bounded_pool_without_sharing_a_transaction(db: str) -> None:
    app_name = f"pool-test-{uuid.uuid4().hex[:8]}"
    database = Database(db, pool_size=4, acquire_timeout_seconds=30, application_name=app_name)
    execute(db, "CREATE TABLE IF NOT EXISTS pool_probe (thread text, n int)")
    execute(db, "TRUNCATE pool_probe")
    peak = 0
    pids: set[int] = set()
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal peak
        with database.transaction() as cur:
            # Each transaction sees its own backend pid for its whole life and
            # its own uncommitted row: a shared connection would break both.
            cur.execute("SELECT pg_backend_pid() AS pid")
            pid = cur.fetchone()["pid"]
            cur.execute("INSERT INTO pool_probe VALUES (%s, %s)", (str(i), i))
            cur.execute("SELECT pg_sleep(0.005)")
            cur.execute("SELECT count(*) AS n FROM pool_probe WHERE thread = %s", (str(i),))
            assert cur.fetchone()["n"] == 1
            cur.execute("SELECT pg_backend_pid() AS pid")
            assert cur.fetchone()["pid"] == pid
        with lock:
            pids.add(pid)
            peak = max(peak, _backends(db, app_name))
        return i

    with ThreadPoolExecutor(32) as pool:
        done = list(pool.map(work, range(400)))
    assert sorted(done) == list(range(400))
    assert execute(db, "SELECT count(*) FROM pool_probe")[0][0] == 400
    assert 1 <= peak <= 4, f"{peak} connections open at once; the pool's size is 4"
    # Connections are reused, not reopened per transaction.
    assert len(pids) <= 4, f"400 transactions used {len(pids)} server processes"
    database.close()
    execute(db, "DROP TABLE pool_probe")


def test_a_thread_that_finds_every_connection_busy_gets_a_transient_error(db: str) -> None:
    database = Database(db, pool_size=1, acquire_timeout_seconds=0.2)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with database.transaction() as cur:
            cur.execute("SELECT 1")
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(10)
    with pytest.raises(TransientError, match="no free connection"):
        database.ping()
    release.set()
    t.join()
    database.ping()  # the slot came back
    database.close()


def test_an_error_inside_a_transaction_returns_its_connection(db: str) -> None:
    database = Database(db, pool_size=1, acquire_timeout_seconds=1)
    for _ in range(3):
        with pytest.raises(ZeroDivisionError), database.transaction() as cur:
            cur.execute("SELECT 1")
            raise ZeroDivisionError
    database.ping()
    database.close()
