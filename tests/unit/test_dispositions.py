"""The per-message state machine, without I/O."""

from __future__ import annotations

from chalicelib.domain.tasks import Ad, ClaimedTask
from chalicelib.domain.verdicts import Thresholds
from chalicelib.scoring.dispositions import (
    Outcome,
    Score,
    backoff_seconds,
    dlq_envelope,
    parked,
    parse_record,
    plan_batch,
    trail,
    unparked,
    whole_batch_failure,
)
from tests.helpers import sqs_record, task_body

AD = Ad(item_id=7, seller_id=1, is_verified_seller=True, name="n", description="d", category=1, images_qty=1)
NOW = "2026-11-23T12:00:00Z"


def plan(deliveries, claimed=None, locked=None, scores=None, max_receive=3):
    return plan_batch(
        deliveries,
        claimed or {},
        locked or set(),
        scores or {},
        thresholds=Thresholds(0.5),
        max_receive_count=max_receive,
        now_iso=NOW,
    )


def claimed(task_id=1, status="pending", ad=AD, error_kind=None, item_id=7):
    return {task_id: ClaimedTask(task_id, item_id, status, error_kind, ad)}


def test_backoff_doubles_from_the_base():
    assert [backoff_seconds(a, 5) for a in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert backoff_seconds(1, 1) == 1
    assert backoff_seconds(30, 5) == 12 * 3600  # SQS's ceiling


def test_parse_record_reads_body_and_attempt():
    d = parse_record(sqs_record(task_body(3, 7), attempt=2, message_id="m-1"))
    assert d.message is not None and (d.message.task_id, d.message.item_id) == (3, 7)
    assert d.attempt == 2 and d.message_id == "m-1" and d.parse_error is None


def test_parse_record_names_what_is_malformed():
    for body in ("not json", "[]", '{"task_id": "3", "item_id": 7}', '{"item_id": 7}', '{"task_id": -1, "item_id": 7}'):
        d = parse_record(sqs_record(body))
        assert d.message is None
        assert d.parse_error and d.parse_error.startswith("malformed message body")
    assert "task_id" in (parse_record(sqs_record('{"item_id": 7}')).parse_error or "")


def test_success_completes_with_verdict():
    d = parse_record(sqs_record(task_body(1, 7)))
    [dec] = plan([d], claimed(), scores={1: Score(probability=0.8)})
    assert dec.outcome is Outcome.COMPLETED and dec.outcome.acknowledged
    assert dec.update is not None and dec.update.is_violation is True and dec.update.probability == 0.8
    assert dec.update.decision == "block"
    assert dec.envelope is None


def test_a_review_band_below_the_threshold_sends_borderline_ads_to_people():
    deliveries = [parse_record(sqs_record(task_body(t, 7))) for t in (1, 2, 3)]
    tasks = {t: ClaimedTask(t, 7, "pending", None, AD) for t in (1, 2, 3)}
    scores = {1: Score(probability=0.95), 2: Score(probability=0.4), 3: Score(probability=0.05)}
    banded = plan_batch(deliveries, tasks, set(), scores, thresholds=Thresholds(0.9, 0.3), max_receive_count=3,
                        now_iso=NOW)
    assert [(d.update.is_violation, d.update.decision) for d in banded if d.update] == [
        (True, "block"), (False, "review"), (False, "allow")]
    plain = plan_batch(deliveries, tasks, set(), scores, thresholds=Thresholds(0.9), max_receive_count=3, now_iso=NOW)
    assert [d.update.decision for d in plain if d.update] == ["block", "allow", "allow"]


def test_permanent_failures_fail_the_task_and_make_an_envelope():
    d = parse_record(sqs_record(task_body(1, 7), attempt=1))
    cases = {
        "deleted ad": (claimed(ad=None), {}),
        "invalid features": (claimed(), {1: Score(invalid="category must be ...")}),
        "item mismatch": (claimed(item_id=8), {}),
    }
    for name, (rows, scores) in cases.items():
        [dec] = plan([d], rows, scores=scores)
        assert dec.outcome is Outcome.FAILED_PERMANENT, name
        assert dec.update is not None and dec.update.status == "failed" and dec.update.error_kind == "permanent"
        assert dec.envelope is not None and dec.envelope["task_id"] == 1 and dec.envelope["error"] == dec.error


def test_unknown_task_and_malformed_body_go_to_dlq_without_a_task_update():
    unknown = parse_record(sqs_record(task_body(99, 7)))
    malformed = parse_record(sqs_record("{oops"))
    decs = plan([unknown, malformed])
    assert [d.outcome for d in decs] == [Outcome.FAILED_PERMANENT, Outcome.FAILED_PERMANENT]
    assert all(d.update is None and d.envelope for d in decs)
    assert decs[0].error == "unknown task 99"
    assert decs[1].envelope is not None and decs[1].envelope["original_message"] == "{oops"


def test_finished_tasks_are_duplicates_and_transient_failures_are_retried_again():
    d = parse_record(sqs_record(task_body(1, 7)))
    for status, kind, expected in [
        ("completed", None, Outcome.DUPLICATE),
        ("failed", "permanent", Outcome.DUPLICATE),
        ("failed", "transient", Outcome.COMPLETED),  # redriven from the DLQ
        ("processing", None, Outcome.COMPLETED),
    ]:
        [dec] = plan([d], claimed(status=status, error_kind=kind), scores={1: Score(probability=0.1)})
        assert dec.outcome is expected, (status, kind)


def test_same_task_twice_in_a_batch_is_scored_once():
    a = parse_record(sqs_record(task_body(1, 7)))
    b = parse_record(sqs_record(task_body(1, 7)))
    decs = plan([a, b], claimed(), scores={1: Score(probability=0.1)})
    assert [d.outcome for d in decs] == [Outcome.COMPLETED, Outcome.DUPLICATE]


def test_task_locked_by_a_concurrent_delivery_is_retried_not_acknowledged():
    d = parse_record(sqs_record(task_body(1, 7)))
    [dec] = plan([d], locked={1})
    assert dec.outcome is Outcome.BUSY and not dec.outcome.acknowledged and dec.update is None


def test_transient_retries_until_the_last_attempt_then_fails():
    for attempt, outcome, status in [(1, Outcome.RETRY, "processing"), (2, Outcome.RETRY, "processing"),
                                     (3, Outcome.EXHAUSTED, "failed")]:
        d = parse_record(sqs_record(task_body(1, 7), attempt=attempt))
        [dec] = plan([d], claimed(), scores={1: Score(crashed="boom")})
        assert dec.outcome is outcome and not dec.outcome.acknowledged
        assert dec.update is not None and dec.update.status == status and dec.update.attempt == attempt
        assert dec.envelope is None  # exhausted messages reach the DLQ through the redrive policy


def test_max_receive_count_is_a_parameter():
    d = parse_record(sqs_record(task_body(1, 7), attempt=3))
    [dec] = plan([d], claimed(), scores={1: Score(crashed="boom")}, max_receive=5)
    assert dec.outcome is Outcome.RETRY


def test_whole_batch_failure_acknowledges_nothing():
    ds = [parse_record(sqs_record(task_body(i, 7), attempt=1)) for i in (1, 2)] + [parse_record(sqs_record("x"))]
    decs = whole_batch_failure(ds, "database unavailable", 3)
    assert all(not d.outcome.acknowledged for d in decs)


def test_envelope_shape():
    d = parse_record(sqs_record(task_body(5, 7), attempt=2, message_id="m-9"))
    env = dlq_envelope(d, "boom", "permanent", NOW)
    assert env == {
        "original_message": task_body(5, 7),
        "error": "boom",
        "error_kind": "permanent",
        "task_id": 5,
        "message_id": "m-9",
        "timestamp": NOW,
        "retry_count": 2,
    }


def test_a_redriven_envelope_is_read_as_its_original_message():
    original = parse_record(sqs_record(task_body(5, 7), attempt=2))
    envelope = dlq_envelope(original, "advertisement 7 not found or deleted", "permanent", NOW)
    d = parse_record(sqs_record(envelope))
    assert d.message is not None and (d.message.task_id, d.message.item_id) == (5, 7)
    # A malformed original stays malformed (and is parked again, unwrapped).
    bad = parse_record(sqs_record(dlq_envelope(parse_record(sqs_record("junk")), "x", "permanent", NOW)))
    assert bad.message is None and bad.original_message == "junk"


def test_a_permanent_failure_whose_envelope_was_never_parked_is_parked_on_redelivery():
    d = parse_record(sqs_record(task_body(1, 7), attempt=2))
    error = "advertisement 7 not found or deleted"
    rows = {1: ClaimedTask(1, 7, "failed", "permanent", None, error_message=error, envelope_pending=True)}
    [dec] = plan([d], rows)
    assert dec.outcome is Outcome.FAILED_PERMANENT and dec.update is None  # the task stays as it is
    assert dec.envelope is not None and dec.envelope["error"] == error and dec.envelope["retry_count"] == 2
    # The dlq_parked row is written only once the DLQ has the envelope.
    assert [(e.kind, e.outcome) for e in trail([dec], rows, {1})] == [("attempt", "failed_permanent")]
    assert [(e.kind, e.error) for e in parked([dec], rows)] == [("dlq_parked", error)]
    # If the DLQ refuses it, the message is retried rather than acknowledged.
    retry = unparked(dec)
    assert retry.outcome is Outcome.RETRY and not retry.outcome.acknowledged and retry.envelope is None
