"""The scorer builds its SQS client only when a message must be touched (issue 24).

Against real PostgreSQL and moto, through chalicelib.deps' own wiring: every
SQS client the app builds goes through deps.aws_client, which these tests count.
A clean batch is acknowledged by the batch response alone, so with
MAX_RECEIVE_COUNT set (as the template, make run and app_env set it) it builds
none; a retry, a DLQ send, or a missing setting (today's read of the queue's
RedrivePolicy) builds one, once per process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from chalicelib import deps
from tests.helpers import execute, fetch_task, insert_ad, sqs_record, task_body
from toolkit.names import max_receive_count


@pytest.fixture()
def built(app_env: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The services deps.aws_client built a client for, in order."""
    real = deps.aws_client
    services: list[str] = []

    def counting(service: str) -> Any:
        services.append(service)
        return real(service)

    monkeypatch.setattr(deps, "aws_client", counting)
    yield services


def new_task(db: str, *, closed: bool = False) -> tuple[int, int]:
    item_id = insert_ad(db)
    task_id = deps.task_store().create_task(item_id, client="tester")
    assert task_id is not None
    if closed:  # the seller withdrew the ad after submitting it: a permanent failure
        execute(db, "UPDATE advertisements SET is_closed = true WHERE id = %s", (item_id,))
    return task_id, item_id


def failures(response: dict) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_a_clean_batch_builds_no_sqs_client(app_env, built):
    tasks = [new_task(app_env) for _ in range(5)]
    assert failures(deps.scorer().handle([sqs_record(task_body(t, i)) for t, i in tasks])) == []
    assert [fetch_task(app_env, t)["status"] for t, _ in tasks] == ["completed"] * 5
    assert built == []


def test_many_clean_batches_at_once_build_none(app_env, built):
    tasks = [new_task(app_env) for _ in range(24)]
    errors: list[BaseException] = []

    def score(chunk: list[tuple[int, int]]) -> None:
        try:
            assert failures(deps.scorer().handle([sqs_record(task_body(t, i)) for t, i in chunk])) == []
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=score, args=(tasks[n::4],)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {fetch_task(app_env, t)["status"] for t, _ in tasks} == {"completed"}
    assert built == []


def test_a_permanent_failure_builds_the_client_once_and_parks_its_envelope(app_env, sqs, built):
    gone, gone_item = new_task(app_env, closed=True)
    fine, fine_item = new_task(app_env)
    assert failures(deps.scorer().handle([sqs_record(task_body(gone, gone_item)), sqs_record(task_body(fine, fine_item))])) == []
    assert built == ["sqs"]
    url = sqs.get_queue_url(QueueName="moderation_dlq")["QueueUrl"]
    [parked] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert json.loads(parked["Body"])["task_id"] == gone
    assert fetch_task(app_env, fine)["status"] == "completed"
    # The next clean batch reuses it.
    again, again_item = new_task(app_env)
    assert failures(deps.scorer().handle([sqs_record(task_body(again, again_item))])) == []
    assert built == ["sqs"]


def test_a_retried_message_builds_the_client_to_back_it_off(app_env, sqs, built):
    task_id, item_id = new_task(app_env)
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(task_body(task_id, item_id)))
    [msg] = sqs.receive_message(QueueUrl=url, AttributeNames=["All"]).get("Messages", [])
    record = sqs_record(msg["Body"], message_id=msg["MessageId"], receipt=msg["ReceiptHandle"])
    holder = psycopg2.connect(app_env)  # another transaction holds the task: this delivery is retried
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT id FROM moderation_results WHERE id = %s FOR UPDATE", (task_id,))
        assert failures(deps.scorer().handle([record])) == [msg["MessageId"]]
    finally:
        holder.rollback()
        holder.close()
    assert built == ["sqs"]
    assert fetch_task(app_env, task_id)["status"] != "completed"


def test_without_the_setting_the_scorer_reads_the_redrive_count_from_the_queue(app_env, built, monkeypatch):
    monkeypatch.delenv("MAX_RECEIVE_COUNT")
    deps.reset()
    assert deps.queue().max_receive_count(default=max_receive_count() + 2) == max_receive_count()
    assert built == ["sqs"]


def test_the_setting_is_the_count_the_scorer_uses(app_env, built):
    assert deps.queue().max_receive_count(default=max_receive_count() + 2) == max_receive_count()
    assert built == []
