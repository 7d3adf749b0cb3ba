"""`python -m ops.dlq` against moto's in-process SQS (queues from infra/).

moto 5.2 does not implement StartMessageMoveTask (it raises
NotImplementedError), so `redrive --all` takes the receive -> send -> delete
path here; the StartMessageMoveTask path runs against real LocalStack in
tests/e2e/test_ops_commands.py.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from ops import dlq

ENVELOPE_ERROR = "advertisement 11 not found or deleted"


def envelope(task_id: int | None, original: Any, error: str = ENVELOPE_ERROR, retry_count: int = 1) -> str:
    return json.dumps(
        {
            "original_message": original,
            "error": error,
            "error_kind": "permanent",
            "task_id": task_id,
            "message_id": "m-1",
            "timestamp": "2026-11-23T12:00:00+00:00",
            "retry_count": retry_count,
        }
    )


def raw_task(task_id: int) -> str:
    return json.dumps({"task_id": task_id, "item_id": task_id + 100, "timestamp": "2026-11-23T12:00:00Z"})


def urls(sqs: Any) -> tuple[str, str]:
    return sqs.get_queue_url(QueueName="moderation")["QueueUrl"], sqs.get_queue_url(QueueName="moderation_dlq")["QueueUrl"]


def counts(sqs: Any, url: str) -> tuple[int, int]:
    a = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def bodies(sqs: Any, url: str) -> list[str]:
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0).get("Messages", [])
    return sorted(m["Body"] for m in msgs)


@pytest.fixture(autouse=True)
def short_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers from one in-process store, so long polling adds nothing but
    its wait on an empty queue."""
    monkeypatch.setattr(dlq, "RECEIVE_WAIT_S", 0)


@pytest.fixture()
def filled(sqs: Any) -> Any:
    """DLQ with two scorer envelopes (task 11, a malformed body) and one exhausted task (12)."""
    _, dlq_url = urls(sqs)
    sqs.send_message(QueueUrl=dlq_url, MessageBody=envelope(11, {"task_id": 11, "item_id": 111, "timestamp": None}))
    sqs.send_message(QueueUrl=dlq_url, MessageBody=envelope(None, "not json", "malformed message body: body: bad"))
    sqs.send_message(QueueUrl=dlq_url, MessageBody=raw_task(12))
    return sqs


@pytest.fixture()
def logged(caplog: pytest.LogCaptureFixture) -> Any:
    """What the tool logged (toolkit.logs: its errors, and the summary of `list --json`), read once."""
    caplog.set_level(logging.INFO, logger="dlq")

    def read() -> str:
        text = caplog.text
        caplog.clear()
        return text

    return read


@pytest.fixture()
def no_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))


def test_list_shows_tasks_and_kinds_and_leaves_messages_visible(filled: Any, capsys: pytest.CaptureFixture[str], logged: Any):
    _, dlq_url = urls(filled)
    assert dlq.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["MESSAGE", "TASK", "KIND", "ERROR"]
    rows = {line.split()[1]: line for line in lines[1:4]}
    assert set(rows) == {"11", "12", "-"}
    assert " permanent " in rows["11"] and ENVELOPE_ERROR in rows["11"]
    assert " exhausted " in rows["12"] and "exhausted retries (see task)" in rows["12"]
    assert " permanent " in rows["-"] and "malformed message body" in rows["-"]
    assert lines[4] == "3 messages in moderation_dlq (1 exhausted, 2 permanent)"
    # Peeked, not consumed: everything is visible again at once.
    assert counts(filled, dlq_url) == (3, 0)

    assert dlq.main(["list", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((r["task_id"] or 0, r["kind"], r["retry_count"]) for r in records) == [
        (0, "permanent", 1),
        (11, "permanent", 1),
        (12, "exhausted", None),
    ]
    # The DLQ's own receive count: one send, then two peeks.
    assert {r["receive_count"] for r in records} == {2}
    assert "3 messages" in logged()
    assert counts(filled, dlq_url) == (3, 0)


def test_list_limit_and_empty_queue(sqs: Any, capsys: pytest.CaptureFixture[str]):
    assert dlq.main(["list"]) == 0
    assert capsys.readouterr().out.strip() == "0 messages in moderation_dlq"
    _, dlq_url = urls(sqs)
    for i in range(1, 13):
        sqs.send_message(QueueUrl=dlq_url, MessageBody=raw_task(i))
    assert dlq.main(["list", "--limit", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + 5 + 1 and out[-1].endswith("limited to 5")
    assert counts(sqs, dlq_url) == (12, 0)
    assert dlq.main(["list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "12 messages in moderation_dlq (12 exhausted)"
    assert counts(sqs, dlq_url) == (12, 0)


def test_show_by_task_and_by_message_id_prefix(filled: Any, capsys: pytest.CaptureFixture[str], logged: Any):
    assert dlq.main(["show", "task:12"]) == 0
    out = capsys.readouterr().out
    assert "Kind: exhausted   Task: 12" in out and "ApproximateReceiveCount:" in out
    assert json.loads(out[out.index("Body:\n") + 6 :]) == json.loads(raw_task(12))

    assert dlq.main(["list", "--json"]) == 0
    record = next(json.loads(x) for x in capsys.readouterr().out.splitlines() if json.loads(x)["task_id"] == 11)
    assert dlq.main(["show", record["message_id"][:8]]) == 0
    out = capsys.readouterr().out
    assert f"MessageId: {record['message_id']}" in out and '"original_message": {' in out

    assert dlq.main(["show", "task:999"]) == 1
    assert "no message" in logged()
    assert dlq.main(["show", "task:x"]) == 2


def test_redrive_by_task_id_moves_exactly_that_message(filled: Any, capsys: pytest.CaptureFixture[str]):
    main_url, dlq_url = urls(filled)
    assert dlq.main(["redrive", "--task-id", "12", "--yes"]) == 0
    assert "moved 1 of 1 selected" in capsys.readouterr().out
    assert bodies(filled, main_url) == [raw_task(12)]  # body unchanged
    assert counts(filled, dlq_url) == (2, 0)  # the others are visible again
    assert dlq.main(["list", "--json"]) == 0
    assert sorted(json.loads(x)["task_id"] or 0 for x in capsys.readouterr().out.splitlines()) == [0, 11]


def test_redrive_envelope_by_message_id_keeps_the_envelope(filled: Any, capsys: pytest.CaptureFixture[str]):
    main_url, dlq_url = urls(filled)
    assert dlq.main(["list", "--json"]) == 0
    record = next(json.loads(x) for x in capsys.readouterr().out.splitlines() if json.loads(x)["task_id"] == 11)
    assert dlq.main(["redrive", "--message-id", record["message_id"], "--yes"]) == 0
    [body] = bodies(filled, main_url)
    assert json.loads(body)["original_message"]["task_id"] == 11 and json.loads(body)["error_kind"] == "permanent"
    assert counts(filled, dlq_url) == (2, 0)


def test_redrive_unknown_task_moves_nothing(filled: Any, logged: Any):
    main_url, dlq_url = urls(filled)
    assert dlq.main(["redrive", "--task-id", "12", "999", "--yes"]) == 1
    assert "no message for task 999" in logged()
    assert counts(filled, main_url) == (0, 0) and counts(filled, dlq_url) == (3, 0)


def test_redrive_all_falls_back_to_receive_send_delete_on_moto(filled: Any, capsys: pytest.CaptureFixture[str]):
    main_url, dlq_url = urls(filled)
    # What moto does with the action (if this starts failing, moto has implemented it: test that path instead).
    with pytest.raises(NotImplementedError):
        filled.start_message_move_task(SourceArn="arn:aws:sqs:us-east-1:123456789012:moderation_dlq")
    assert dlq.main(["redrive", "--all", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "StartMessageMoveTask is not supported" in out and "moved 3/3" in out
    assert counts(filled, dlq_url) == (0, 0) and counts(filled, main_url) == (3, 0)
    assert [json.loads(b).get("task_id") for b in bodies(filled, main_url)].count(12) == 1


def test_redrive_all_falls_back_on_an_unsupported_operation_error(filled: Any, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]):
    """An endpoint that answers the action with an error code (as some emulators do), not moto's exception."""
    from botocore.exceptions import ClientError

    class NoMoveTasks:
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def start_message_move_task(self, **_: Any) -> Any:
            raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.UnsupportedOperation", "Message": "no"}},
                              "StartMessageMoveTask")

    real_make_client = dlq.make_client
    monkeypatch.setattr(dlq, "make_client", lambda endpoint: NoMoveTasks(real_make_client(endpoint)))
    main_url, dlq_url = urls(filled)
    assert dlq.main(["redrive", "--all", "--yes"]) == 0
    assert "UnsupportedOperation" in capsys.readouterr().out
    assert counts(filled, dlq_url) == (0, 0) and counts(filled, main_url) == (3, 0)


def test_is_unsupported_classifies_errors():
    from botocore.exceptions import ClientError

    def err(code: str, status: int = 400) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "StartMessageMoveTask")

    assert dlq.is_unsupported(NotImplementedError("moto"))
    for code in ("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", "InvalidAction"):
        assert dlq.is_unsupported(err(code))
    assert dlq.is_unsupported(err("InternalFailure", 501))
    assert not dlq.is_unsupported(err("AccessDenied", 403))
    assert not dlq.is_unsupported(err("InvalidParameterValue"))


def test_redrive_all_on_empty_dlq(sqs: Any, capsys: pytest.CaptureFixture[str]):
    assert dlq.main(["redrive", "--all", "--yes"]) == 0
    assert "nothing to redrive" in capsys.readouterr().out


def test_purge_refuses_without_yes_when_stdin_is_not_a_tty(filled: Any, no_tty: None, logged: Any):
    _, dlq_url = urls(filled)
    assert dlq.main(["purge"]) == 2
    assert "--yes" in logged()
    assert counts(filled, dlq_url) == (3, 0)
    # The same for redrive: no terminal, no --yes, nothing moves.
    assert dlq.main(["redrive", "--all"]) == 2
    assert counts(filled, dlq_url) == (3, 0)
    assert dlq.main(["purge", "--yes"]) == 0
    assert counts(filled, dlq_url) == (0, 0)


def test_purge_asks_for_the_queue_name_on_a_terminal(filled: Any, monkeypatch: pytest.MonkeyPatch,
                                                     logged: Any):
    _, dlq_url = urls(filled)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    answers = iter(["moderation", "moderation_dlq"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert dlq.main(["purge"]) == 1  # wrong name: aborted
    assert "aborted" in logged() and counts(filled, dlq_url) == (3, 0)
    assert dlq.main(["purge"]) == 0
    assert counts(filled, dlq_url) == (0, 0)


@pytest.mark.parametrize(
    "argv",
    [[], ["redrive"], ["redrive", "--all", "--task-id", "1"], ["list", "--limit", "x"], ["nope"], ["list", "--limit", "0"]],
)
def test_usage_errors_exit_2(sqs: Any, argv: list[str]):
    try:
        code = dlq.main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    assert code == 2


def test_common_options_before_or_after_the_command(sqs: Any, capsys: pytest.CaptureFixture[str], logged: Any):
    sqs.create_queue(QueueName="other_dlq")
    assert dlq.main(["--dlq", "other_dlq", "list"]) == 0
    assert dlq.main(["list", "--dlq", "other_dlq"]) == 0
    assert capsys.readouterr().out.splitlines() == ["0 messages in other_dlq"] * 2
    assert dlq.main(["list", "--dlq", "missing"]) == 1
    assert "'missing' does not exist" in logged()
