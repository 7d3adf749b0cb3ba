"""devstack.runner behaves like Lambda's SQS event source mapping."""

from __future__ import annotations

import json

from helpers import fetch_task, insert_ad, task_body

from chalicelib import deps
from devstack.runner import Runner, failed_ids


def queue_url(sqs) -> str:
    return sqs.get_queue_url(QueueName="moderation")["QueueUrl"]


def remaining(sqs) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url(sqs),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def send(sqs, bodies: list[str]) -> None:
    for b in bodies:
        sqs.send_message(QueueUrl=queue_url(sqs), MessageBody=b)


def test_events_are_lambda_shaped_and_only_reported_failures_stay(sqs):
    seen: list[dict] = []

    def handler(event, context):
        seen.extend(event["Records"])
        assert context.get_remaining_time_in_millis() > 0
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                                      if r["body"] == "keep"]}

    send(sqs, ["ok-1", "keep", "ok-2"])
    runner = Runner(sqs, queue_url(sqs), handler, wait_seconds=0)
    assert runner.poll_once() == 3
    record = seen[0]
    assert set(record) >= {"messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
                           "eventSource", "eventSourceARN", "awsRegion"}
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"].endswith(":moderation")
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert len({r["messageId"] for r in seen}) == 3
    assert remaining(sqs) == 1  # only "keep" was not deleted


def test_a_raising_handler_or_a_bad_response_deletes_nothing(sqs):
    send(sqs, ["a", "b"])

    def boom(event, context):
        raise RuntimeError("crash")

    assert Runner(sqs, queue_url(sqs), boom, wait_seconds=0).poll_once() == 2
    assert remaining(sqs) == 2


def test_partial_batch_response_contract():
    records = [{"messageId": "m1"}, {"messageId": "m2"}]
    assert failed_ids(None, records) == set()
    assert failed_ids({"batchItemFailures": []}, records) == set()
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "m2"}]}, records) == {"m2"}
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, records) is None
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "other"}]}, records) is None
    assert failed_ids("nonsense", records) is None


def test_the_real_handler_through_the_runner(app_env, sqs):
    import app

    item_id = insert_ad(app_env)
    task_id = deps.store().create_task(item_id)
    send(sqs, [json.dumps(task_body(task_id, item_id)), "{garbage"])
    runner = Runner(sqs, queue_url(sqs), app.score, reconcile=app.reconcile, wait_seconds=0)
    assert runner.poll_once() == 2
    assert fetch_task(app_env, task_id)["status"] == "completed"
    assert remaining(sqs) == 0  # the garbage went to the DLQ and was acknowledged
    dlq = sqs.get_queue_url(QueueName="moderation_dlq")["QueueUrl"]
    [parked] = sqs.receive_message(QueueUrl=dlq)["Messages"]
    assert json.loads(parked["Body"])["original_message"] == "{garbage"
    # The scheduled handler runs too, with an event Chalice accepts.
    assert runner.maybe_reconcile() == {"resent": 0, "unreceived": 0, "failed_stuck": 0}
