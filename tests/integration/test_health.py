"""GET /health and GET /health/pipeline through Chalice's test client, on real
PostgreSQL and moto SQS (docs/architecture.md#health).

/health is what a load balancer asks: 503 only when the API cannot work (the
database, SQS or the model down). /health/pipeline is what an uptime probe asks:
503 as soon as tasks are not being completed in time or the DLQ holds messages.
A stalled scorer therefore shows on the probe and leaves the API in rotation.
"""

from __future__ import annotations

import json
import math

import pytest

from chalicelib import deps
from chalicelib.domain.verdicts import Thresholds
from chalicelib.serving.aliases import Pinned
from tests.helpers import execute, insert_ad, keyed_client


@pytest.fixture()
def client(app_env):
    from app import app

    with keyed_client(app) as c:
        yield c


def get(client, path: str) -> tuple[int, dict]:
    resp = client.http.get(path)
    return resp.status_code, json.loads(resp.body)


def stall(db: str, minutes: int) -> int:
    """A task submitted `minutes` ago that no scorer ever finished."""
    item_id = insert_ad(db)
    return execute(db, "INSERT INTO moderation_results (item_id, status, created_at, client_id) "
                       "VALUES (%s, 'pending', now() - make_interval(mins => %s), 'tester') RETURNING id",
                   (item_id, minutes))[0][0]


def test_a_healthy_service_scores_the_probe_ad_and_reports_its_pipeline(client, app_env):
    stall(app_env, 1)  # a recent unfinished task is normal work
    for path in ("/health", "/health/pipeline"):
        status, body = get(client, path)
        assert status == 200 and body["status"] == "ok", path
        model = body["checks"]["model"]
        assert model["ok"] and model["version"].startswith("lr-") and 0 <= model["probability"] <= 1
        pipeline = body["pipeline"]
        assert pipeline["ok"] and pipeline["reasons"] == [] and pipeline["dlq_depth"] == 0
        assert 50 <= pipeline["oldest_unfinished_seconds"] <= 600 and pipeline["max_unfinished_seconds"] == 600
    # The same probe, the same answer: a fixed ad and a deterministic model.
    assert get(client, "/health")[1]["checks"]["model"]["probability"] == model["probability"]


def test_a_stalled_scorer_is_degraded_not_down(client, app_env):
    stall(app_env, 11)
    status, body = get(client, "/health")
    assert status == 200 and body["status"] == "degraded"  # the API works: stay in rotation
    assert body["code"] == "pipeline_degraded" and "is the scorer running?" in body["message"]
    status, probe = get(client, "/health/pipeline")
    assert status == 503 and probe["status"] == "degraded" and not probe["pipeline"]["ok"]
    [reason] = probe["pipeline"]["reasons"]
    assert "oldest unfinished task is 6" in reason and "(bound 600 s)" in reason


def test_the_bound_is_configurable(client, app_env, monkeypatch):
    stall(app_env, 11)
    monkeypatch.setenv("PIPELINE_MAX_AGE_SECONDS", "3600")
    deps.reset()
    assert get(client, "/health/pipeline")[0] == 200


def test_messages_in_the_dlq_degrade_the_pipeline(client, app_env, sqs, monkeypatch):
    dlq = sqs.get_queue_url(QueueName="moderation_dlq")["QueueUrl"]
    for i in range(2):
        sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"task_id": i, "item_id": 1, "timestamp": "t"}))
    status, body = get(client, "/health/pipeline")
    assert status == 503 and body["pipeline"]["dlq_depth"] == 2
    assert body["pipeline"]["reasons"] == ["2 message(s) in moderation_dlq (bound 0): see `make dlq`"]
    assert get(client, "/health")[0] == 200
    monkeypatch.setenv("PIPELINE_MAX_DLQ_DEPTH", "5")
    deps.reset()
    assert get(client, "/health/pipeline")[0] == 200


@pytest.mark.parametrize("broken", [RuntimeError("weights lost"), math.nan, 1.5])
def test_a_model_that_cannot_score_the_probe_is_down(client, app_env, monkeypatch, broken):
    class Broken:
        version, thresholds = "lr-broken", Thresholds(0.5)

        def predict_proba(self, ads):
            if isinstance(broken, Exception):
                raise broken
            return [broken for _ in ads]

    monkeypatch.setattr(deps.service(), "_models", Pinned(Broken()))
    for path in ("/health", "/health/pipeline"):
        status, body = get(client, path)
        assert status == 503 and body["status"] == "unavailable" and body["message"] == "down: model", path
        assert body["checks"]["model"]["ok"] is False and "probe ad" in body["checks"]["model"]["error"]


def test_sqs_down_is_unavailable_and_says_the_pipeline_is_unknown(client, app_env, monkeypatch):
    monkeypatch.setenv("MODERATION_DLQ_NAME", "no-such-queue")
    deps.reset()
    status, body = get(client, "/health")
    assert status == 503 and body["checks"]["queue"]["ok"] is False
    assert body["pipeline"]["dlq_depth"] is None and "cannot read the depth of no-such-queue" in body["pipeline"]["reasons"][0]


def test_one_queue_call_and_one_indexed_query(client, app_env, monkeypatch):
    """The cost, by construction: one GetQueueAttributes per check, and a query
    PostgreSQL answers from the first entry of the partial index of unfinished tasks."""
    execute(app_env, "INSERT INTO moderation_results (item_id, status, is_violation, probability, model_version, client_id) "
                     "SELECT g, 'completed', false, 0.1, 'v', 'tester' FROM generate_series(1, 20000) g; "
                     "ANALYZE moderation_results")
    get(client, "/health")  # the first check also looks the DLQ's URL up, once per process
    queue = deps.queue()
    calls: list[str] = []
    real = queue._sqs

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(queue, "_sqs", Counting())
    get(client, "/health")
    assert calls == ["get_queue_attributes"]
    plan = "\n".join(r[0] for r in execute(app_env, "EXPLAIN SELECT min(created_at) FROM moderation_results "
                                                    "WHERE status IN ('pending', 'processing')"))
    assert "moderation_results_unfinished_idx" in plan and "Seq Scan" not in plan, plan
