"""The HTTP API through Chalice's test client, on real PostgreSQL and moto SQS."""

from __future__ import annotations

import json

import pytest

from chalicelib import deps
from chalicelib.errors import TransientError
from chalicelib.operations.reconcile import Reconciler
from tests.helpers import execute, fetch_task, insert_ad, keyed_client

AD = {"seller_id": 1, "is_verified_seller": False, "item_id": 1, "name": "iPhone 13",
      "description": "реплика, только предоплата", "category": 1, "images_qty": 0}


@pytest.fixture()
def client(app_env):
    from app import app

    with keyed_client(app) as c:
        yield c


def body(resp) -> dict:
    return json.loads(resp.body)


def post(client, path: str, payload: bytes | None = None):
    return client.http.post(path, body=payload or b"", headers={"Content-Type": "application/json"})


def test_predict_scores_the_body(client):
    resp = post(client, "/moderation/predict", json.dumps(AD).encode())
    assert resp.status_code == 200
    out = body(resp)
    assert out["is_violation"] is True and 0.5 <= out["probability"] <= 1
    assert out["model_version"].startswith("lr-")


def test_simple_predict_scores_a_stored_ad(client, app_env):
    item_id = insert_ad(app_env)
    resp = post(client, f"/moderation/simple_predict?item_id={item_id}")
    assert resp.status_code == 200 and set(body(resp)) >= {"is_violation", "probability"}
    assert post(client, "/moderation/simple_predict?item_id=999").status_code == 404


@pytest.mark.parametrize("path", ["/moderation/async_predict", "/async_predict"])
def test_async_predict_accepts_enqueues_and_reports(client, app_env, sqs, path):
    item_id = insert_ad(app_env)
    resp = post(client, f"{path}?item_id={item_id}")
    assert resp.status_code == 202
    out = body(resp)
    assert out == {"task_id": out["task_id"], "status": "pending", "message": "Moderation request accepted"}
    row = fetch_task(app_env, out["task_id"])
    assert row["status"] == "pending" and row["enqueued_at"] is not None
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    [msg] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    sent = json.loads(msg["Body"])
    assert sent["task_id"] == out["task_id"] and sent["item_id"] == item_id and sent["timestamp"].endswith("Z")


@pytest.mark.parametrize("path", ["/moderation/moderation_result/{}", "/moderation_result/{}"])
def test_moderation_result_shows_state(client, app_env, path):
    item_id = insert_ad(app_env)
    task_id = body(post(client, f"/async_predict?item_id={item_id}"))["task_id"]
    resp = client.http.get(path.format(task_id))
    assert resp.status_code == 200
    out = body(resp)
    assert out["task_id"] == task_id and out["status"] == "pending"
    assert out["is_violation"] is None and out["probability"] is None and out["error_message"] is None


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [("", 400, "invalid_parameter"), ("?item_id=x", 400, "invalid_parameter"),
     ("?item_id=-1", 400, "invalid_parameter"), (f"?item_id={2**64}", 400, "invalid_parameter"),
     ("?item_id=424242", 404, "ad_not_found")],
)
def test_async_predict_bad_input(client, query, status, code):
    resp = post(client, f"/moderation/async_predict{query}")
    assert resp.status_code == status
    out = body(resp)
    assert out["code"] == code and out["message"]
    if status == 400:
        assert out["parameter"] == "item_id"


def test_unknown_and_invalid_task_ids(client):
    assert body(client.http.get("/moderation/moderation_result/999"))["code"] == "task_not_found"
    assert client.http.get("/moderation/moderation_result/999").status_code == 404
    assert client.http.get("/moderation/moderation_result/abc").status_code == 400


def test_malformed_and_oversize_bodies(client, monkeypatch):
    assert post(client, "/moderation/predict", b"{nope").status_code == 400
    resp = post(client, "/moderation/predict", json.dumps({**AD, "images_qty": "three"}).encode())
    assert resp.status_code == 400 and body(resp)["errors"][0]["field"] == "images_qty"
    resp = post(client, "/moderation/predict", json.dumps({**AD, "description": "x" * 20_000}).encode())
    assert resp.status_code == 413 and body(resp)["code"] == "payload_too_large"


def test_health_reports_each_dependency(client):
    resp = client.http.get("/health")
    assert resp.status_code == 200
    out = body(resp)
    checks = out["checks"]
    assert out["status"] == "ok" and out["pipeline"]["ok"] and out["pipeline"]["reasons"] == []
    assert checks["database"]["ok"] and checks["queue"]["depth"] == {"moderation_dlq": 0}
    assert checks["model"]["ok"] and checks["model"]["version"].startswith("lr-") and 0 <= checks["model"]["probability"] <= 1


def test_database_down_is_503_json_without_internals(client, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nothing")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "1")
    deps.reset()
    for resp in (post(client, "/moderation/async_predict?item_id=1"), client.http.get("/moderation/moderation_result/1"),
                 client.http.get("/health"), client.http.get("/health/pipeline")):
        assert resp.status_code == 503
        out = body(resp)
        assert out["code"] == "dependency_unavailable"
        text = resp.body.decode()
        assert "Traceback" not in text and "127.0.0.1" not in text


def test_lost_send_is_accepted_and_recovered_by_the_reconciler(client, app_env, sqs, monkeypatch):
    item_id = insert_ad(app_env)
    queue = deps.queue()
    def refuse(task):
        raise TransientError("could not send (injected)")

    monkeypatch.setattr(queue, "send_task", refuse)
    resp = post(client, f"/async_predict?item_id={item_id}")
    assert resp.status_code == 202
    task_id = body(resp)["task_id"]
    assert fetch_task(app_env, task_id)["enqueued_at"] is None
    monkeypatch.undo()
    reconciler = Reconciler(deps.task_store(), deps.maintenance_store(), queue, resend_grace_seconds=0, stuck_after_seconds=3600)
    report = reconciler.run()
    assert task_id in report.resent
    assert fetch_task(app_env, task_id)["enqueued_at"] is not None
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    [msg] = sqs.receive_message(QueueUrl=url)["Messages"]
    assert json.loads(msg["Body"])["task_id"] == task_id
    assert reconciler.run().resent == []  # idempotent


def test_reconciler_fails_stuck_tasks_with_a_reason(app_env, sqs):
    item_id = insert_ad(app_env)
    task_id = deps.task_store().create_task(item_id, client="tester")
    execute(app_env, "UPDATE moderation_results SET created_at = now() - interval '2 hours', enqueued_at = now() "
                     "WHERE id = %s", (task_id,))
    report = deps.reconciler().run()
    assert report.failed_stuck == [task_id]
    row = fetch_task(app_env, task_id)
    assert row["status"] == "failed" and row["error_kind"] == "stuck" and "no result within" in row["error_message"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_query_only_routes_accept_any_content_type(client, app_env, content_type):
    item_id = insert_ad(app_env)
    headers = {"Content-Type": content_type} if content_type else {}
    assert client.http.post(f"/async_predict?item_id={item_id}", headers=headers, body=b"").status_code == 202
    resp = client.http.post(f"/moderation/simple_predict?item_id={item_id}", headers=headers, body=b"")
    assert resp.status_code == 200
