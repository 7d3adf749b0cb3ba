"""What a client and an operator can see of a task: its trail (task_events),
its diagnostics, the request id in the scorer's logs, and the metrics in the
log lines. Real PostgreSQL, moto SQS, the real handlers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import deps
from chalicelib.scoring.scorer import Scorer
from devstack.runner import lambda_record
from tests.helpers import execute, fetch_task, insert_ad, keyed_client


class CrashingModel:
    """Transient failure on every call: an unexpected exception while scoring."""

    def __init__(self) -> None:
        real = deps.service().model  # the serving model's identity, for the write
        self.version, self.thresholds = real.version, real.thresholds

    def predict_proba(self, ads: Any) -> list[float]:
        raise RuntimeError("model crashed (injected)")


@pytest.fixture()
def client(app_env):
    from app import app

    with keyed_client(app, stage_name="local") as c:  # the stage make run serves
        yield c


def submit(client: Client, item_id: int) -> int:
    resp = client.http.post(f"/moderation/async_predict?item_id={item_id}", body=b"")
    assert resp.status_code == 202
    return int(json.loads(resp.body)["task_id"])


def get(client: Client, path: str) -> dict:
    resp = client.http.get(path)
    assert resp.status_code == 200, resp.body
    return json.loads(resp.body)


def receive(sqs, queue: str = "moderation") -> list[dict]:
    """Receive like Lambda's event source mapping: records in Lambda's shape."""
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0,
                               MessageAttributeNames=["All"]).get("Messages", [])
    return [lambda_record(m, arn, "us-east-1") for m in msgs]


def kinds(events: list[dict]) -> list[tuple[str, str | None]]:
    return [(e["kind"], e["outcome"]) for e in events]


def json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def emf(lines: list[dict], function: str) -> list[dict]:
    return [doc for doc in lines if "_aws" in doc and doc.get("function") == function]


def test_a_completed_task_shows_its_trail_and_its_request_id_reaches_the_scorer_logs(client, app_env, sqs, capsys, caplog):
    item_id = insert_ad(app_env)
    task_id = submit(client, item_id)
    records = receive(sqs)
    request_id = records[0]["messageAttributes"]["request_id"]["stringValue"]
    assert request_id

    assert deps.scorer().handle(records) == {"batchItemFailures": []}

    result = get(client, f"/moderation/moderation_result/{task_id}")
    assert result["status"] == "completed" and result["error_kind"] is None and result["last_error"] is None
    assert result["created_at"] <= result["started_at"] <= result["processed_at"]
    trail = get(client, f"/moderation/moderation_result/{task_id}/events")
    assert trail["task_id"] == task_id
    assert kinds(trail["events"]) == [("accepted", None), ("enqueued", None), ("attempt", "completed")]
    assert {e["request_id"] for e in trail["events"]} == {request_id}
    assert trail["events"][1]["message_id"] == records[0]["messageId"] == trail["events"][2]["message_id"]

    # Completed tasks are summarised per batch, with their request ids.
    [summary] = [r for r in caplog.records if r.getMessage() == "batch scored"]
    assert summary.task_ids == [task_id] and summary.request_ids == [request_id]  # type: ignore[attr-defined]
    lines = json_lines(capsys.readouterr().out)
    # Metrics, read back from the log lines (CloudWatch embedded metric format).
    [submitted] = emf(lines, "api_handler")
    assert submitted["TasksSubmitted"] == [1.0] and submitted["stage"] == "local"
    assert submitted["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "AdModeration"
    [scored] = emf(lines, "score")
    assert scored["TasksCompleted"] == [1.0] and scored["BatchSize"] == [1.0]
    assert len(scored["SubmitToCompletedLatency"]) == 1 and scored["SubmitToCompletedLatency"][0] > 0
    assert len(scored["ScoringLatency"]) == 1
    assert ["function", "stage", "service"] in scored["_aws"]["CloudWatchMetrics"][0]["Dimensions"]


def test_retries_exhaustion_and_a_redrive_are_all_in_the_trail(client, app_env, sqs, capsys, caplog):
    item_id = insert_ad(app_env)
    task_id = submit(client, item_id)
    store, queue = deps.scoring_store(), deps.queue()
    crashing = Scorer(store, queue, CrashingModel(), retry_base_seconds=0, default_max_receive_count=3)
    for _ in range(3):
        records = receive(sqs)
        assert len(records) == 1
        crashing.handle(records)
        if _ < 2:
            mid = get(client, f"/moderation/moderation_result/{task_id}")
            assert mid["status"] == "processing" and "model crashed" in mid["last_error"]
    failed = get(client, f"/moderation/moderation_result/{task_id}")
    assert failed["status"] == "failed" and failed["error_kind"] == "transient" and failed["attempts"] == 3

    # Ops redrive the message from the DLQ (here: the same body, sent again).
    records = receive(sqs)  # the redrive policy moves it on this receive; nothing comes back
    assert records == []
    dlq = sqs.get_queue_url(QueueName="moderation_dlq")["QueueUrl"]
    [parked] = sqs.receive_message(QueueUrl=dlq)["Messages"]
    main = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    sqs.send_message(QueueUrl=main, MessageBody=parked["Body"])
    deps.scorer().handle(receive(sqs))

    done = get(client, f"/moderation/moderation_result/{task_id}")
    assert done["status"] == "completed"
    events = get(client, f"/moderation/moderation_result/{task_id}/events")["events"]
    assert kinds(events) == [
        ("accepted", None), ("enqueued", None),
        ("attempt", "retry"), ("attempt", "retry"), ("attempt", "exhausted"), ("dlq_parked", "exhausted"),
        ("redriven", None), ("attempt", "completed"),
    ]
    assert [e["attempt"] for e in events if e["kind"] == "attempt"] == [1, 2, 3, 1]
    assert "model crashed" in events[2]["error"]

    # Each unusual outcome has its own line, with the request id of the submit.
    retries = [r for r in caplog.records if r.getMessage() == "message outcome" and r.outcome == "retry"]  # type: ignore[attr-defined]
    assert len(retries) == 2 and {r.request_id for r in retries} == {events[0]["request_id"]}  # type: ignore[attr-defined]
    lines = json_lines(capsys.readouterr().out)
    failed_docs = [d for d in emf(lines, "score") if "TasksFailed" in d]
    assert [(d["error_kind"], d["TasksFailed"]) for d in failed_docs] == [("transient", [1.0])]
    assert sum(d.get("TasksRetried", [0])[0] for d in emf(lines, "score")) == 2


def test_a_permanent_failure_is_parked_and_says_why(client, app_env, sqs):
    item_id = insert_ad(app_env)
    task_id = submit(client, item_id)
    execute(app_env, "UPDATE advertisements SET is_closed = true WHERE id = %s", (item_id,))
    deps.scorer().handle(receive(sqs))
    result = get(client, f"/moderation/moderation_result/{task_id}")
    assert result["status"] == "failed" and result["error_kind"] == "permanent"
    events = get(client, f"/moderation/moderation_result/{task_id}/events")["events"]
    assert kinds(events)[-2:] == [("attempt", "failed_permanent"), ("dlq_parked", "failed_permanent")]
    assert "not found or closed" in events[-1]["error"]


def test_events_of_an_unknown_task_are_404(client):
    resp = client.http.get("/moderation/moderation_result/999999/events")
    assert resp.status_code == 404 and json.loads(resp.body)["code"] == "task_not_found"


def test_a_task_sent_but_never_received_is_resent_and_reported(client, app_env, sqs, capsys, caplog):
    """Another consumer (e.g. a deployed stack's event source mapping on a
    shared LocalStack) took the message: the reconciler notices."""
    item_id = insert_ad(app_env)
    task_id = submit(client, item_id)
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    stolen = sqs.receive_message(QueueUrl=url)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=stolen[0]["ReceiptHandle"])
    execute(app_env, "UPDATE moderation_results SET enqueued_at = now() - interval '10 minutes' WHERE id = %s", (task_id,))

    report = deps.reconciler().run()
    assert report.unreceived == [task_id] and report.resent == [task_id]
    assert deps.reconciler().run().resent == []  # re-sent once per horizon, not every minute
    [warning] = [r for r in caplog.records if "never received" in r.getMessage()]
    assert warning.levelname == "WARNING" and warning.task_ids == [task_id]  # type: ignore[attr-defined]
    assert warning.request_ids[0] is not None  # type: ignore[attr-defined]
    lines = json_lines(capsys.readouterr().out)
    assert [d["TasksResent"] for d in emf(lines, "reconcile") if "TasksResent" in d] == [[1.0]]

    deps.scorer().handle(receive(sqs))
    assert fetch_task(app_env, task_id)["status"] == "completed"
    events = get(client, f"/moderation/moderation_result/{task_id}/events")["events"]
    assert kinds(events) == [("accepted", None), ("enqueued", None), ("resent", None), ("attempt", "completed")]


def test_stuck_tasks_leave_a_trail_and_a_metric(client, app_env, sqs, capsys, caplog):
    item_id = insert_ad(app_env)
    task_id = submit(client, item_id)
    execute(app_env, "UPDATE moderation_results SET created_at = now() - interval '2 hours' WHERE id = %s", (task_id,))
    assert deps.reconciler().run().failed_stuck == [task_id]
    events = get(client, f"/moderation/moderation_result/{task_id}/events")["events"]
    # The reconciler's line about it carries the submit's request id too.
    [line] = [r for r in caplog.records if getattr(r, "outcome", None) == "failed_stuck"]
    assert line.task_id == task_id and line.request_id == events[0]["request_id"] is not None  # type: ignore[attr-defined]
    assert events[-1]["kind"] == "failed_stuck" and "no result within" in events[-1]["error"]
    lines = json_lines(capsys.readouterr().out)
    assert [(d["error_kind"], d["TasksFailed"]) for d in emf(lines, "reconcile") if "TasksFailed" in d] == [
        ("stuck", [1.0])
    ]


def test_marking_sent_tasks_survives_losing_a_deadlock_to_a_claim(app_env):
    """mark_enqueued locks in id order; a claim that took one row at once and waits for
    another can still close a cycle with it. PostgreSQL aborts the first waiter (here, the
    mark): it is tried again, and each task gets its enqueued mark and one trail entry."""
    import threading

    import psycopg2

    item_id = insert_ad(app_env)
    store = deps.task_store()
    first, second = (store.create_task(item_id, client="tester") for _ in range(2))
    other = psycopg2.connect(app_env)
    try:
        with other.cursor() as cur:
            cur.execute("SET deadlock_timeout = '5s'")  # the mark, waiting first, is the one that checks
            cur.execute("SELECT id FROM moderation_results WHERE id = %s FOR UPDATE", (second,))
            errors: list[BaseException] = []

            def mark() -> None:
                try:
                    store.mark_enqueued({first: "m-1", second: "m-2"})
                except BaseException as exc:  # reported by the assertion below
                    errors.append(exc)

            marker = threading.Thread(target=mark)
            marker.start()
            # The mark holds `first` and waits for `second`; now wait for `first` the other way round.
            deadline = time.monotonic() + 10
            while not execute(app_env, "SELECT 1 FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"):
                assert time.monotonic() < deadline, "the mark never waited"
                time.sleep(0.05)
            cur.execute("SELECT id FROM moderation_results WHERE id = %s FOR UPDATE", (first,))
        other.commit()
        marker.join(20)
    finally:
        other.close()
    assert not marker.is_alive() and errors == []
    for task_id, message_id in ((first, "m-1"), (second, "m-2")):
        assert fetch_task(app_env, task_id)["enqueued_at"] is not None
        assert execute(app_env, "SELECT message_id FROM task_events WHERE task_id = %s AND kind = 'enqueued'",
                       (task_id,)) == [(message_id,)]
