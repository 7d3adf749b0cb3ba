"""POST /moderation/close (seed 002's route) through Chalice's test client, on real
PostgreSQL and moto SQS: the ad is closed, new moderation of it is 404, and a task
already queued for it fails permanently when the scorer reaches it."""

from __future__ import annotations

import json

import pytest

from chalicelib import deps
from tests.helpers import execute, insert_ad, keyed_client


@pytest.fixture()
def client(app_env):
    from app import app

    with keyed_client(app) as c:
        yield c


def close(client, query: str):
    return client.http.post(f"/moderation/close{query}", body=b"", headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_close_answers_like_seed_002_and_closes_once(client, app_env):
    item_id = insert_ad(app_env)
    resp = close(client, f"?item_id={item_id}")
    assert resp.status_code == 200 and json.loads(resp.body) == {"item_id": item_id, "status": "closed"}
    assert execute(app_env, "SELECT is_closed FROM advertisements WHERE id = %s", (item_id,)) == [(True,)]
    again = close(client, f"?item_id={item_id}")  # seed 002: no open item was closed -> 404
    assert again.status_code == 404 and json.loads(again.body)["code"] == "ad_not_found"
    assert "already closed" in json.loads(again.body)["message"]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [("", 400, "invalid_parameter"), ("?item_id=x", 400, "invalid_parameter"), ("?item_id=0", 400, "invalid_parameter"),
     (f"?item_id={2**63}", 400, "invalid_parameter"), ("?item_id=424242", 404, "ad_not_found")],
)
def test_close_errors_are_the_contracts(client, query, status, code):
    resp = close(client, query)
    assert resp.status_code == status
    out = json.loads(resp.body)
    assert out["code"] == code and out["detail"] == out["message"]


def test_close_with_the_database_down_is_503(client, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nothing")
    monkeypatch.setenv("DB_CONNECT_TIMEOUT_SECONDS", "1")
    deps.reset()
    resp = close(client, "?item_id=1")
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert json.loads(resp.body)["code"] == "dependency_unavailable"


def test_a_closed_ad_is_404_for_new_moderation(client, app_env):
    item_id, other = insert_ad(app_env), insert_ad(app_env)
    assert close(client, f"?item_id={item_id}").status_code == 200
    for path in (f"/moderation/async_predict?item_id={item_id}", f"/async_predict?item_id={item_id}",
                 f"/moderation/simple_predict?item_id={item_id}"):
        resp = client.http.post(path, body=b"")
        assert resp.status_code == 404 and json.loads(resp.body)["code"] == "ad_not_found", path
    batch = client.http.post("/moderation/async_predict/batch", body=json.dumps({"item_ids": [item_id, other]}).encode(),
                             headers={"Content-Type": "application/json"})
    items = json.loads(batch.body)["items"]
    assert items[0]["error"]["code"] == "ad_not_found" and items[1]["status"] == "pending"


def test_a_task_queued_before_the_close_fails_permanently(client, app_env, sqs):
    item_id = insert_ad(app_env)
    task_id = json.loads(client.http.post(f"/moderation/async_predict?item_id={item_id}", body=b"").body)["task_id"]
    assert close(client, f"?item_id={item_id}").status_code == 200
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}}
               for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert deps.scorer().handle(records) == {"batchItemFailures": []}  # acknowledged: nothing to retry
    result = json.loads(client.http.get(f"/moderation_result/{task_id}").body)
    assert (result["status"], result["error_kind"]) == ("failed", "permanent")
    assert result["error_message"] == f"advertisement {item_id} not found or closed"
    dlq = sqs.get_queue_url(QueueName="moderation_dlq")["QueueUrl"]
    [parked] = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(parked["Body"])["task_id"] == task_id
