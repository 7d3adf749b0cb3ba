"""GET /moderation/tasks through Chalice's test client, on real PostgreSQL: the
keyset walk (every task once, newest first, while tasks are submitted), the
filters, the page sizes, the contract's errors, and the plan of each page's query."""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import urlencode

import psycopg2
import pytest

from chalicelib import deps
from chalicelib.api.requests import encode_cursor
from chalicelib.storage.db import Database
from chalicelib.storage.tasks import TaskStore, task_page_query
from tests.helpers import execute, insert_ad, keyed_client


@pytest.fixture()
def client(app_env):
    from app import app

    with keyed_client(app) as c:
        yield c


def get(client, **query) -> tuple[int, dict]:
    resp = client.http.get("/moderation/tasks" + (f"?{urlencode(query)}" if query else ""))
    return resp.status_code, json.loads(resp.body)


def submit(item_id: int, n: int = 1, store: TaskStore | None = None) -> list[int]:
    """Tasks as the API stores them (one statement per call), without the send."""
    ids = (store or deps.task_store()).create_tasks([item_id] * n, client="tester")
    assert None not in ids
    return [i for i in ids if i is not None]


def walk(client, **query) -> list[dict]:
    """Every page, following next_cursor; the tasks in the order served."""
    tasks, cursor = [], None
    while True:
        status, page = get(client, **query, **({"cursor": cursor} if cursor else {}))
        assert status == 200, page
        tasks += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            return tasks


def set_status(url: str, task_ids: list[int], status: str) -> None:
    verdict = "is_violation = false, probability = 0.2, model_version = 'lr-test'," if status == "completed" else ""
    error = "error_message = 'boom', error_kind = 'transient'," if status == "failed" else ""
    execute(url, f"UPDATE moderation_results SET {verdict} {error} status = %s WHERE id = ANY(%s)", (status, task_ids))


def test_a_walk_serves_every_task_once_newest_first_while_tasks_are_submitted(client, app_env):
    ads = [insert_ad(app_env) for _ in range(3)]
    before = [t for ad in ads for t in submit(ad, 15)]  # 45 tasks
    stop, during = threading.Event(), []
    other_instance = Database(app_env)  # another API instance: its own connection
    elsewhere = TaskStore(other_instance)

    def submitter() -> None:  # submits all along the walk
        while not stop.is_set():
            during.extend(submit(ads[len(during) % 3], store=elsewhere))

    thread = threading.Thread(target=submitter)
    thread.start()
    try:
        pages: list[list[int]] = []
        cursor = None
        while True:
            during.extend(submit(ads[0], 2))  # and surely some between every two pages
            status, page = get(client, limit=4, **({"cursor": cursor} if cursor else {}))
            assert status == 200 and len(page["tasks"]) <= 4
            pages.append([t["task_id"] for t in page["tasks"]])
            if (cursor := page["next_cursor"]) is None:
                break
    finally:
        stop.set()
        thread.join()
        other_instance.close()
    served = [t for page in pages for t in page]
    assert served == sorted(served, reverse=True) and len(served) == len(set(served))  # newest first, none twice
    assert set(before) <= set(served)  # none of the tasks there at the start skipped
    assert len(during) > 20 and max(during) > max(served)  # the walk did run beside submits
    assert len(pages) > 45 // 4  # and it paged


def test_each_task_is_shown_as_the_result_route_shows_it(client, app_env):
    ad = insert_ad(app_env)
    pending, done, failed = submit(ad, 3)
    set_status(app_env, [done], "completed")
    set_status(app_env, [failed], "failed")
    status, page = get(client, item_id=ad)
    assert status == 200 and page["next_cursor"] is None
    assert [t["task_id"] for t in page["tasks"]] == [failed, done, pending]
    for task in page["tasks"]:
        resp = client.http.get(f"/moderation/moderation_result/{task['task_id']}")
        assert task == json.loads(resp.body)
    assert [t["status"] for t in page["tasks"]] == ["failed", "completed", "pending"]


def test_filters_by_ad_by_status_and_by_both(client, app_env):
    ad, other = insert_ad(app_env), insert_ad(app_env)
    mine, theirs = submit(ad, 30), submit(other, 30)
    set_status(app_env, mine[::3] + theirs[::3], "failed")  # 10 of each
    set_status(app_env, mine[1::3] + theirs[1::3], "completed")

    def ids(tasks: list[dict]) -> list[int]:
        return [t["task_id"] for t in tasks]

    assert ids(walk(client, item_id=ad, limit=7)) == mine[::-1]
    assert ids(walk(client, status="failed", limit=7)) == sorted(mine[::3] + theirs[::3], reverse=True)
    assert ids(walk(client, status="pending")) == sorted(mine[2::3] + theirs[2::3], reverse=True)
    assert ids(walk(client, item_id=other, status="completed", limit=3)) == theirs[1::3][::-1]
    assert all(t["item_id"] == other and t["status"] == "completed" for t in walk(client, item_id=other, status="completed"))
    assert ids(walk(client)) == sorted(mine + theirs, reverse=True)


def test_page_sizes(client, app_env):
    ad = insert_ad(app_env)
    tasks = submit(ad, 101)[::-1]
    status, first = get(client)
    assert status == 200 and [t["task_id"] for t in first["tasks"]] == tasks[:20]  # 20 by default
    status, page = get(client, limit=100)
    assert [t["task_id"] for t in page["tasks"]] == tasks[:100] and page["next_cursor"] is not None
    status, last = get(client, limit=100, cursor=page["next_cursor"])
    assert [t["task_id"] for t in last["tasks"]] == tasks[100:] and last["next_cursor"] is None
    status, exact = get(client, item_id=ad, limit=1, cursor=encode_cursor(tasks[-2]))
    assert [t["task_id"] for t in exact["tasks"]] == tasks[-1:] and exact["next_cursor"] is None  # no empty page after
    assert len(walk(client, limit=1)) == 101


def test_nothing_found_is_an_empty_page_not_404(client, app_env):
    assert get(client) == (200, {"tasks": [], "next_cursor": None})
    ad = insert_ad(app_env)
    submit(ad, 2)
    assert get(client, item_id=424242) == (200, {"tasks": [], "next_cursor": None})
    assert get(client, item_id=ad, status="failed") == (200, {"tasks": [], "next_cursor": None})
    assert get(client, cursor=encode_cursor(1)) == (200, {"tasks": [], "next_cursor": None})  # below the first task
    assert get(client, cursor="AAAAAAAAAAA") == (200, {"tasks": [], "next_cursor": None})  # valid, below every id


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("item_id=x", "item_id"), ("item_id=0", "item_id"), ("item_id=-3", "item_id"), (f"item_id={2**63}", "item_id"),
        ("item_id=", "item_id"), ("item_id=1.5", "item_id"),
        ("status=done", "status"), ("status=FAILED", "status"), ("status=", "status"),
        ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=2.5", "limit"), ("limit=", "limit"),
        ("cursor=xyz", "cursor"), ("cursor=", "cursor"), ("cursor=AAAAAAAAAAB", "cursor"), ("cursor=gAAAAAAAAAA", "cursor"),
        ("cursor=AAAAAAAAAAA%3D", "cursor"), ("cursor=41", "cursor"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(client, app_env, query, parameter):
    resp = client.http.get(f"/moderation/tasks?{query}")
    body = json.loads(resp.body)
    assert resp.status_code == 400, body
    assert body["code"] == "invalid_parameter" and body["parameter"] == parameter and body["detail"] == body["message"]
    assert parameter in body["message"]


def test_with_the_database_down_is_503(client, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nothing")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "1")
    deps.reset()
    resp = client.http.get("/moderation/tasks?status=failed")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert json.loads(resp.body)["code"] == "dependency_unavailable"


def test_every_page_is_read_from_an_index_wherever_its_tasks_are(app_env):
    """100,000 tasks where the old plans read the table back to the matches: ad 3's
    2,000 tasks and all the failures are among the oldest ids. Each page's query
    reads a few dozen buffers (the primary key walk it replaced: ~1,400)."""
    execute(app_env, """
        INSERT INTO moderation_results (item_id, status, is_violation, probability, model_version, error_message,
                                        client_id)
        SELECT CASE WHEN g % 20 = 0 THEN 1 WHEN g <= 4000 AND g % 2 = 1 THEN 3 ELSE 4 + g % 4999 END, s,
               CASE WHEN s = 'completed' THEN false END, CASE WHEN s = 'completed' THEN 0.1 END,
               CASE WHEN s = 'completed' THEN 'v' END, CASE WHEN s = 'failed' THEN 'boom' END, 'tester'
        FROM (SELECT g, CASE WHEN g > 99850 THEN 'pending' WHEN g BETWEEN 10000 AND 12000 THEN 'failed'
                             ELSE 'completed' END AS s FROM generate_series(1, 100000) g) x""")
    conn = psycopg2.connect(app_env)
    conn.autocommit = True  # VACUUM runs outside a transaction: the table as autovacuum leaves it
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE moderation_results")
    conn.close()
    cases = {  # (item_id, status, before_id) -> the index the page is read from
        (None, None, None): "moderation_results_pkey",
        (None, None, 50_000): "moderation_results_pkey",
        (3, None, None): "moderation_results_item_id_id_idx",
        (1, None, 50_000): "moderation_results_item_id_id_idx",
        (424242, None, None): "moderation_results_item_id_id_idx",
        (None, "failed", None): "moderation_results_status_id_idx",
        (None, "completed", 12_001): "moderation_results_status_id_idx",
        (None, "pending", 99_900): "moderation_results_status_id_idx",
        (3, "failed", None): "moderation_results_item_id_id_idx",
    }
    for (item_id, status, before_id), index in cases.items():
        sql, params = task_page_query(item_id=item_id, status=status, before_id=before_id, limit=21)
        plan = "\n".join(r[0] for r in execute(app_env, "EXPLAIN (ANALYZE, BUFFERS) " + sql, params))
        top = next(line for line in plan.split("\n") if "Buffers" in line)  # the whole query's
        buffers = sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", top))
        assert index in plan and "Seq Scan" not in plan, (item_id, status, plan)
        assert index == "moderation_results_pkey" or "moderation_results_pkey" not in plan, (item_id, status, plan)
        assert buffers < 100, (item_id, status, plan)
