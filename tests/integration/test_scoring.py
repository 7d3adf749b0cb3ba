"""The scoring handler against real PostgreSQL and an SQS emulator (moto)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from botocore.exceptions import ClientError

from chalicelib import deps
from chalicelib.config import DLQ_NAME, QUEUE_NAME
from chalicelib.domain.tasks import PendingTask
from chalicelib.domain.verdicts import decide
from chalicelib.errors import TransientError
from chalicelib.queue import TaskQueue
from chalicelib.scoring.scorer import Scorer
from chalicelib.serving.model import load_model
from chalicelib.storage.db import Database
from chalicelib.storage.scoring import ScoringStore
from tests.helpers import drop_verdict_audit, execute, fetch_task, insert_ad, install_verdict_audit, sqs_record, task_body


def new_task(db: str, *, deleted: bool = False, **ad) -> tuple[int, int]:
    item_id = insert_ad(db, **ad)
    task_id = deps.task_store().create_task(item_id, client="tester")
    assert task_id is not None
    if deleted:  # the seller withdrew the ad after submitting it
        execute(db, "UPDATE advertisements SET is_closed = true WHERE id = %s", (item_id,))
    return task_id, item_id


def dlq_messages(sqs) -> list[dict]:
    url = sqs.get_queue_url(QueueName="moderation_dlq")["QueueUrl"]
    out = []
    while True:
        resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
        if not resp.get("Messages"):
            return out
        out.extend(json.loads(m["Body"]) for m in resp["Messages"])


def failures(response: dict) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_a_batch_is_scored_and_written_with_the_model_version(app_env, sqs):
    tasks = [new_task(app_env) for _ in range(3)]
    records = [sqs_record(task_body(t, i)) for t, i in tasks]
    response = deps.scorer().handle(records)
    assert failures(response) == []
    for task_id, _ in tasks:
        row = fetch_task(app_env, task_id)
        assert row["status"] == "completed"
        assert 0.0 <= row["probability"] <= 1.0
        assert row["is_violation"] == (row["probability"] >= load_model().threshold)
        assert row["decision"] == decide(row["probability"], load_model().thresholds)
        assert row["model_version"] == load_model().version
        assert row["attempts"] == 1 and row["processed_at"] is not None
    assert dlq_messages(sqs) == []


def test_one_bad_message_in_ten_leaves_nine_completed(app_env, sqs):
    tasks = [new_task(app_env) for _ in range(9)]
    deleted_task, deleted_item = new_task(app_env, deleted=True)
    records = [sqs_record(task_body(t, i)) for t, i in tasks]
    records.insert(4, sqs_record(task_body(deleted_task, deleted_item)))
    response = deps.scorer().handle(records)
    assert failures(response) == []  # permanent failures are acknowledged too
    assert [fetch_task(app_env, t)["status"] for t, _ in tasks] == ["completed"] * 9
    bad = fetch_task(app_env, deleted_task)
    assert bad["status"] == "failed" and bad["error_kind"] == "permanent"
    assert f"advertisement {deleted_item} not found or closed" in bad["error_message"]
    [envelope] = dlq_messages(sqs)
    assert envelope["task_id"] == deleted_task and envelope["original_message"] == task_body(deleted_task, deleted_item)
    assert envelope["error"] == bad["error_message"] and envelope["retry_count"] == 1


def test_malformed_and_unknown_messages_are_parked_without_retry(app_env, sqs):
    response = deps.scorer().handle([sqs_record("{not json"), sqs_record(task_body(424242, 1))])
    assert failures(response) == []
    errors = sorted(e["error"] for e in dlq_messages(sqs))
    assert errors[0].startswith("malformed message body") and errors[1] == "unknown task 424242"


def test_invalid_features_fail_permanently(app_env, sqs):
    task_id, item_id = new_task(app_env, category=500)
    assert failures(deps.scorer().handle([sqs_record(task_body(task_id, item_id))])) == []
    row = fetch_task(app_env, task_id)
    assert row["status"] == "failed" and row["error_message"].startswith("invalid features: category")


def test_duplicate_delivery_after_completion_does_no_work(app_env, sqs):
    task_id, item_id = new_task(app_env)
    deps.scorer().handle([sqs_record(task_body(task_id, item_id))])
    first = fetch_task(app_env, task_id)
    response = deps.scorer().handle([sqs_record(task_body(task_id, item_id), attempt=2)])
    assert failures(response) == []
    assert fetch_task(app_env, task_id) == first  # not even processed_at moved


def test_whole_batch_failure_retries_every_message_with_backoff(app_env, sqs, monkeypatch):
    task_id, item_id = new_task(app_env)
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(task_body(task_id, item_id)))
    msg = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    record = sqs_record(msg["Body"], message_id=msg["MessageId"], receipt=msg["ReceiptHandle"])
    dead = Database("postgresql://postgres@127.0.0.1:1/nothing", connect_timeout_seconds=1)
    scorer = Scorer(ScoringStore(dead), deps.queue(), load_model(), retry_base_seconds=30,
                    default_max_receive_count=3)
    response = scorer.handle([record, sqs_record("{malformed")])
    assert len(failures(response)) == 2  # nothing acknowledged that was not done
    # The retried message was given a 30 s backoff: it is not visible now.
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    assert fetch_task(app_env, task_id)["status"] == "pending"


def test_transient_failure_is_retried_then_succeeds(app_env, sqs, monkeypatch):
    task_id, item_id = new_task(app_env)
    model = load_model()
    calls = {"n": 0}
    real = model.predict_proba

    def flaky(ads):
        calls["n"] += 1
        if calls["n"] <= 2:  # the batch call and the isolating per-ad call
            raise RuntimeError("model hiccup")
        return real(ads)

    flaky_model = type("M", (), {"version": model.version, "thresholds": model.thresholds,
                                 "predict_proba": staticmethod(flaky)})()
    scorer = Scorer(deps.scoring_store(), deps.queue(), flaky_model, retry_base_seconds=1, default_max_receive_count=3)
    record = sqs_record(task_body(task_id, item_id), attempt=1)
    assert failures(scorer.handle([record])) == [record["messageId"]]
    row = fetch_task(app_env, task_id)
    assert row["status"] == "processing" and row["attempts"] == 1 and "model hiccup" in row["last_error"]
    retry = sqs_record(task_body(task_id, item_id), attempt=2, message_id=record["messageId"])
    assert failures(scorer.handle([retry])) == []
    row = fetch_task(app_env, task_id)
    assert row["status"] == "completed" and row["attempts"] == 2


def test_last_attempt_marks_the_task_failed_and_is_not_acknowledged(app_env, sqs):
    task_id, item_id = new_task(app_env)
    dead = Database("postgresql://postgres@127.0.0.1:1/nothing", connect_timeout_seconds=1)
    broken = Scorer(ScoringStore(dead), deps.queue(), load_model(), retry_base_seconds=1,
                    default_max_receive_count=3)
    record = sqs_record(task_body(task_id, item_id), attempt=3)
    assert failures(broken.handle([record])) == [record["messageId"]]
    # The database was down for the whole batch, so the task could not be
    # marked; the reconciler's stuck sweep owns it now.
    assert fetch_task(app_env, task_id)["status"] == "pending"


def test_concurrent_duplicates_write_once(app_env, sqs):
    install_verdict_audit(app_env)
    try:
        tasks = [new_task(app_env) for _ in range(20)]
        scorers = [
            Scorer(ScoringStore(Database(app_env)), TaskQueue(sqs, queue_name="moderation", dlq_name="moderation_dlq"),
                   load_model(), retry_base_seconds=1, default_max_receive_count=3)
            for _ in range(4)
        ]
        barrier = threading.Barrier(len(scorers))
        results: list[dict] = []

        def deliver(scorer: Scorer) -> None:
            barrier.wait()
            results.append(scorer.handle([sqs_record(task_body(t, i)) for t, i in tasks]))

        threads = [threading.Thread(target=deliver, args=(s,)) for s in scorers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        writes = execute(app_env, "SELECT task_id, count(*) FROM verdict_writes GROUP BY task_id")
        assert sorted(w[0] for w in writes) == sorted(t for t, _ in tasks)
        assert all(count == 1 for _, count in writes)
        assert all(fetch_task(app_env, t)["status"] == "completed" for t, _ in tasks)
    finally:
        drop_verdict_audit(app_env)


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_finished_tasks_never_move(app_env, sqs, status):
    task_id, item_id = new_task(app_env)
    execute(app_env, "UPDATE moderation_results SET status=%s, error_message='x', error_kind='permanent', "
                     "is_violation=false, probability=0.1, model_version='old' WHERE id=%s", (status, task_id))
    deps.scorer().handle([sqs_record(task_body(task_id, item_id))])
    assert fetch_task(app_env, task_id)["status"] == status


class CrashingModel:
    """The real model's identity, but every call raises: a transient failure."""

    def __init__(self) -> None:
        real = load_model()
        self.version, self.thresholds = real.version, real.thresholds

    def predict_proba(self, ads):
        raise RuntimeError("model crashed")


def receive_one(sqs, queue: str) -> dict | None:
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    msgs = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], WaitTimeSeconds=0).get("Messages", [])
    return msgs[0] if msgs else None


def as_record(msg: dict) -> dict:
    return sqs_record(msg["Body"], attempt=int(msg["Attributes"]["ApproximateReceiveCount"]),
                      message_id=msg["MessageId"], receipt=msg["ReceiptHandle"])


def test_three_transient_failures_end_in_the_dlq_with_the_task_failed(app_env, sqs, monkeypatch):
    monkeypatch.delenv("MAX_RECEIVE_COUNT")  # the fall-back: the count read from the queue
    deps.reset()
    task_id, item_id = new_task(app_env)
    deps.queue().send_task(PendingTask(task_id, item_id))
    # Base 0: each retry is visible again at once, so the test needs no sleeping.
    scorer = Scorer(deps.scoring_store(), deps.queue(), CrashingModel(), retry_base_seconds=0, default_max_receive_count=5)
    for attempt in (1, 2, 3):
        msg = receive_one(sqs, "moderation")
        assert msg is not None and msg["Attributes"]["ApproximateReceiveCount"] == str(attempt)
        record = as_record(msg)
        assert failures(scorer.handle([record])) == [record["messageId"]]
    # maxReceiveCount came from the queue's RedrivePolicy (3), not the default (5).
    row = fetch_task(app_env, task_id)
    assert row["status"] == "failed" and row["error_kind"] == "transient" and row["attempts"] == 3
    assert "gave up after 3 attempts" in row["error_message"] and "model crashed" in row["error_message"]
    # The next receive makes SQS apply the redrive policy.
    assert receive_one(sqs, "moderation") is None
    parked = receive_one(sqs, "moderation_dlq")
    assert parked is not None and json.loads(parked["Body"])["task_id"] == task_id


def test_redriven_messages_retry_transient_failures_and_keep_permanent_ones(app_env, sqs):
    # A task that exhausted its attempts is scored again when its message is redriven.
    exhausted, item = new_task(app_env)
    execute(app_env, "UPDATE moderation_results SET status='failed', error_kind='transient', "
                     "error_message='gave up after 3 attempts: x', attempts=3 WHERE id=%s", (exhausted,))
    assert failures(deps.scorer().handle([sqs_record(task_body(exhausted, item))])) == []
    assert fetch_task(app_env, exhausted)["status"] == "completed"

    # A permanently failed task's envelope, redriven, leaves the task failed with
    # its reason and is not parked a second time.
    gone, gone_item = new_task(app_env, deleted=True)
    deps.scorer().handle([sqs_record(task_body(gone, gone_item))])
    [envelope] = dlq_messages(sqs)
    before = fetch_task(app_env, gone)
    assert failures(deps.scorer().handle([sqs_record(envelope)])) == []
    assert fetch_task(app_env, gone) == before
    assert dlq_messages(sqs) == []


def hold_row_lock(url: str, task_id: int, seconds: float) -> threading.Thread:
    """Another transaction updates the task row and commits after `seconds`."""
    import psycopg2

    locked = threading.Event()

    def hold() -> None:
        conn = psycopg2.connect(url)
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE moderation_results SET updated_at = now() WHERE id = %s", (task_id,))
            locked.set()
            time.sleep(seconds)
        conn.close()

    t = threading.Thread(target=hold)
    t.start()
    locked.wait(5)
    return t


def test_a_briefly_locked_task_is_waited_for_not_retried(app_env, sqs):
    # E.g. the API's enqueued_at update, which a fast scorer can beat to the row.
    task_id, item_id = new_task(app_env)
    holder = hold_row_lock(app_env, task_id, 0.3)
    response = deps.scorer().handle([sqs_record(task_body(task_id, item_id))])
    holder.join()
    assert failures(response) == []
    assert fetch_task(app_env, task_id)["status"] == "completed"


def test_a_long_held_lock_makes_only_that_task_busy(app_env, sqs):
    stuck, stuck_item = new_task(app_env)
    free, free_item = new_task(app_env)
    holder = hold_row_lock(app_env, stuck, 3.0)
    busy = sqs_record(task_body(stuck, stuck_item))
    response = deps.scorer().handle([busy, sqs_record(task_body(free, free_item))])
    holder.join()
    assert failures(response) == [busy["messageId"]]
    assert fetch_task(app_env, free)["status"] == "completed"
    assert fetch_task(app_env, stuck)["status"] == "pending"


# --- the DLQ send happens after the commit; nothing is lost -------------------------


class Died(BaseException):
    """The process ending between the commit and the send: no handler returns."""


class DlqOutage:
    """The SQS client, except that sends to the DLQ raise `error` while it is set."""

    def __init__(self, real, error: BaseException | None) -> None:
        self._real, self.error = real, error

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def send_message_batch(self, **kwargs):
        if self.error is not None and kwargs["QueueUrl"].endswith("/" + DLQ_NAME):
            raise self.error
        return self._real.send_message_batch(**kwargs)


def scorer_over(client) -> Scorer:
    queue = TaskQueue(client, queue_name=QUEUE_NAME, dlq_name=DLQ_NAME)
    return Scorer(deps.scoring_store(), queue, load_model(), retry_base_seconds=1, default_max_receive_count=3)


def trail_of(db: str, task_id: int) -> list[tuple[str, str | None]]:
    return execute(db, "SELECT kind, outcome FROM task_events WHERE task_id = %s AND kind <> 'accepted' ORDER BY id",
                   (task_id,))


def test_a_failed_dlq_send_retries_only_its_messages_and_the_redelivery_parks_them(app_env, sqs):
    gone, gone_item = new_task(app_env, deleted=True)
    fine, fine_item = new_task(app_env)
    client = DlqOutage(sqs, ClientError({"Error": {"Code": "ServiceUnavailable"}}, "SendMessageBatch"))
    parked, garbage = sqs_record(task_body(gone, gone_item)), sqs_record("{garbage")
    response = scorer_over(client).handle([parked, sqs_record(task_body(fine, fine_item)), garbage])

    # Committed, but not acknowledged: the envelopes are not in the DLQ yet.
    assert failures(response) == [parked["messageId"], garbage["messageId"]]
    assert fetch_task(app_env, fine)["status"] == "completed"
    failed = fetch_task(app_env, gone)
    assert failed["status"] == "failed" and failed["error_kind"] == "permanent"
    assert trail_of(app_env, gone) == [("attempt", "failed_permanent")]
    assert dlq_messages(sqs) == []

    client.error = None
    again = [sqs_record(r["body"], attempt=2, message_id=r["messageId"]) for r in (parked, garbage)]
    assert failures(scorer_over(client).handle(again)) == []
    envelopes = sorted(dlq_messages(sqs), key=lambda e: e["task_id"] or 0)
    assert [(e["task_id"], e["retry_count"]) for e in envelopes] == [(None, 2), (gone, 2)]
    assert envelopes[0]["original_message"] == "{garbage"
    assert envelopes[1]["error"] == failed["error_message"] and envelopes[1]["original_message"] == task_body(gone, gone_item)
    assert fetch_task(app_env, gone) == failed  # parked, not failed again
    assert trail_of(app_env, gone) == [("attempt", "failed_permanent"), ("attempt", "failed_permanent"),
                                       ("dlq_parked", "failed_permanent")]


def test_a_death_between_the_commit_and_the_send_is_parked_on_redelivery(app_env, sqs):
    gone, gone_item = new_task(app_env, deleted=True)
    client = DlqOutage(sqs, Died("killed after the commit"))
    record = sqs_record(task_body(gone, gone_item))
    with pytest.raises(Died):
        scorer_over(client).handle([record])
    assert fetch_task(app_env, gone)["status"] == "failed" and dlq_messages(sqs) == []

    # Lambda deleted nothing: the message comes back after its visibility timeout.
    client.error = None
    assert failures(scorer_over(client).handle([sqs_record(record["body"], attempt=2, message_id=record["messageId"])])) == []
    [envelope] = dlq_messages(sqs)
    assert envelope["task_id"] == gone and envelope["retry_count"] == 2
    assert trail_of(app_env, gone)[-1] == ("dlq_parked", "failed_permanent")


def test_a_permanent_failure_is_parked_once_and_a_later_duplicate_sends_nothing(app_env, sqs):
    gone, gone_item = new_task(app_env, deleted=True)
    assert failures(deps.scorer().handle([sqs_record(task_body(gone, gone_item))])) == []
    assert failures(deps.scorer().handle([sqs_record(task_body(gone, gone_item), attempt=2)])) == []
    [envelope] = dlq_messages(sqs)
    assert envelope["task_id"] == gone and envelope["retry_count"] == 1
    assert trail_of(app_env, gone) == [("attempt", "failed_permanent"), ("dlq_parked", "failed_permanent"),
                                       ("attempt", "duplicate")]


def test_an_unrecorded_park_still_acknowledges_the_message(app_env, sqs, monkeypatch):
    """The envelope is in the DLQ; only its `dlq_parked` row could not be written."""
    gone, gone_item = new_task(app_env, deleted=True)
    scorer = deps.scorer()

    def db_down(cur, rows):
        raise TransientError("database unavailable (injected)")

    monkeypatch.setattr(deps.scoring_store(), "add_events", db_down)
    assert failures(scorer.handle([sqs_record(task_body(gone, gone_item))])) == []
    [envelope] = dlq_messages(sqs)
    assert envelope["task_id"] == gone
    assert trail_of(app_env, gone) == [("attempt", "failed_permanent")]
