"""The DLQ runbook (docs/operations/dlq.md) and `python -m
ops.dlq`, against a real LocalStack in host mode on a spare port.

The AWS CLI commands are read from the fenced block after `<!-- ops-commands -->`
and run exactly as written, only with the shell variables filled in, using the
`aws` of this virtualenv. The DLQ is filled the way production fills it: two
envelopes sent by "the scorer", and one task message moved there by the
redrive policy after 3 receives.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations" / "dlq.md"
BIN = Path(sys.executable).parent
AWS = str(BIN / "aws")
# The only variables the runbook's commands may use.
VARIABLES = ("AWS_ENDPOINT_URL", "DLQ_URL", "DLQ_ARN", "QUEUE_ARN")
RUNBOOK_OPS = ["get-queue-attributes", "receive-message", "start-message-move-task", "list-message-move-tasks", "purge-queue"]


@dataclass
class Local:
    endpoint: str
    env: dict[str, str]
    sqs: Any
    queue_url: str
    dlq_url: str
    queue_arn: str
    dlq_arn: str

    def counts(self, url: str) -> tuple[int, int]:
        a = self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        )["Attributes"]
        return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])

    def wait_counts(self, url: str, expected: tuple[int, int], timeout: float = 20) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while (got := self.counts(url)) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        return got

    def variables(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "DLQ_URL": self.dlq_url, "DLQ_ARN": self.dlq_arn,
                "QUEUE_ARN": self.queue_arn}

    def empty_queues(self) -> None:
        for url in (self.queue_url, self.dlq_url):
            self.sqs.purge_queue(QueueUrl=url)
            assert self.wait_counts(url, (0, 0), 5) == (0, 0)

    def fill_dlq(self) -> list[str]:
        """Two scorer envelopes sent to the DLQ, one task exhausted on the main queue; return the bodies."""
        self.empty_queues()
        bodies = [
            json.dumps({"original_message": {"task_id": 21, "item_id": 121, "timestamp": None}, "error": "unknown task 21",
                        "error_kind": "permanent", "task_id": 21, "message_id": "a", "timestamp": "2026-11-23T12:00:00+00:00",
                        "retry_count": 1}),
            json.dumps({"original_message": "not json", "error": "malformed message body: body: bad", "error_kind": "permanent",
                        "task_id": None, "message_id": "b", "timestamp": "2026-11-23T12:00:01+00:00", "retry_count": 2}),
        ]
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=body)
        raw = json.dumps({"task_id": 23, "item_id": 123, "timestamp": "2026-11-23T12:00:02Z"})
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=raw)
        # maxReceiveCount is 3: the fourth receive makes SQS move it to the DLQ.
        for _ in range(4):
            self.sqs.receive_message(QueueUrl=self.queue_url, VisibilityTimeout=0, WaitTimeSeconds=0)
        assert self.wait_counts(self.dlq_url, (3, 0), 5) == (3, 0)
        assert self.counts(self.queue_url) == (0, 0)
        return [*bodies, raw]

    def main_queue_bodies(self, n: int) -> list[str]:
        seen: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while len(seen) < n and time.monotonic() < deadline:
            resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                            WaitTimeSeconds=0)
            seen.update((m["MessageId"], m["Body"]) for m in resp.get("Messages", []))
        return sorted(seen.values())

    def aws(self, argv: list[str]) -> dict[str, Any]:
        out = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{shlex.join(argv)}\n{out.stderr}"
        return json.loads(out.stdout) if out.stdout.strip() else {}

    def ops(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ops.dlq", *args], cwd=ROOT, env=env or self.env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    from toolkit.localstack import HostLocalStack
    from toolkit.template import ensure_queues

    endpoint = f"http://127.0.0.1:{free_port()}"
    stack = HostLocalStack(data_dir=tmp_path_factory.mktemp("localstack"), endpoint=endpoint)
    stack.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="test",
                   AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_OUTPUT="json", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                           aws_secret_access_key="test")
        urls = ensure_queues(sqs)

        def arn(url: str) -> str:
            return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

        yield Local(endpoint, env, sqs, urls["moderation"], urls["moderation_dlq"], arn(urls["moderation"]),
                    arn(urls["moderation_dlq"]))
    finally:
        stack.stop()


def fenced_block_after(marker: str) -> str:
    text = DOC.read_text()
    match = re.search(re.escape(marker) + r"\s*\n```[a-z]*\n(.*?)\n```", text, re.S)
    assert match, f"no fenced block after {marker} in {DOC}"
    return match.group(1)


def runbook_commands(variables: dict[str, str]) -> dict[str, list[str]]:
    """sqs operation -> argv of each runbook command, variables filled in, `aws` from this venv."""
    commands: dict[str, list[str]] = {}
    for line in fenced_block_after("<!-- ops-commands -->").splitlines():
        # Plain commands only, so running the argv is exactly what a shell would run.
        assert line.startswith("aws ") and not re.search(r"[|;&<>`\\#]", line), line

        def fill(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            assert name in VARIABLES, f"{name} is not one of the runbook variables {VARIABLES}"
            return variables[name]

        argv = shlex.split(re.sub(r"\$\{(\w+)\}|\$(\w+)", fill, line))
        argv[0] = AWS
        commands[argv[argv.index("sqs") + 1]] = argv
    assert list(commands) == RUNBOOK_OPS
    return commands


def test_runbook_variables_block_defines_the_variables(local: Local):
    """The block before the commands, run by bash as a reader would (only the port differs)."""
    text = DOC.read_text()
    setup = text[: text.index("<!-- ops-commands -->")].rsplit("```sh\n", 1)[1].split("```", 1)[0]
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:4566" in setup
    script = setup.replace("http://127.0.0.1:4566", local.endpoint) + 'printf "%s\\n" "$DLQ_URL" "$DLQ_ARN" "$QUEUE_ARN"\n'
    out = subprocess.run(["bash", "-euc", script], env=local.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [local.dlq_url, local.dlq_arn, local.queue_arn]


def test_runbook_commands(local: Local):
    cmds = runbook_commands(local.variables())
    bodies = local.fill_dlq()

    count = local.aws(cmds["get-queue-attributes"])
    assert count["Attributes"]["ApproximateNumberOfMessages"] == "3"

    peek = local.aws(cmds["receive-message"])
    assert peek["Messages"] and {m["Body"] for m in peek["Messages"]} <= set(bodies)
    assert all("ApproximateReceiveCount" in m["Attributes"] for m in peek["Messages"])
    assert local.counts(local.dlq_url) == (3, 0)  # a peek, not a consume

    started = local.aws(cmds["start-message-move-task"])
    assert started["TaskHandle"]
    deadline = time.monotonic() + 20
    while (task := local.aws(cmds["list-message-move-tasks"])["Results"][0])["Status"] != "COMPLETED":
        assert task["Status"] in ("RUNNING", "CREATED") and time.monotonic() < deadline, task
        time.sleep(0.3)
    assert task["ApproximateNumberOfMessagesMoved"] == 3
    assert local.wait_counts(local.queue_url, (3, 0)) == (3, 0)
    assert local.counts(local.dlq_url) == (0, 0)
    assert local.main_queue_bodies(3) == sorted(bodies)  # unchanged, envelopes included

    for i in range(2):
        local.sqs.send_message(QueueUrl=local.dlq_url, MessageBody=f"to be purged {i}")
    assert local.counts(local.dlq_url) == (2, 0)
    local.aws(cmds["purge-queue"])
    assert local.wait_counts(local.dlq_url, (0, 0), 10) == (0, 0)


def test_ops_dlq_list_and_redrive_all(local: Local):
    bodies = local.fill_dlq()

    listed = local.ops("list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    rows = {line.split()[1]: line.split() for line in lines[1:-1]}
    assert {task: row[2] for task, row in rows.items()} == {"21": "permanent", "-": "permanent", "23": "exhausted"}
    assert lines[-1] == "3 messages in moderation_dlq (1 exhausted, 2 permanent)"
    assert local.counts(local.dlq_url) == (3, 0)

    as_json = local.ops("list", "--json")
    records = {r["task_id"]: r for r in map(json.loads, as_json.stdout.splitlines())}
    assert records[23]["retry_count"] is None and records[21]["retry_count"] == 1 and records[None]["retry_count"] == 2
    assert records[21]["receive_count"] == 2  # two peeks
    assert records[23]["receive_count"] >= 4  # LocalStack keeps the 3 receives on the main queue, plus our peeks
    assert records[23]["dead_letter_source_arn"] == local.queue_arn
    assert local.counts(local.dlq_url) == (3, 0)

    shown = local.ops("show", "task:23")
    assert shown.returncode == 0 and '"item_id": 123' in shown.stdout and "DeadLetterQueueSourceArn" in shown.stdout

    # No terminal and no --yes: refused, nothing moves.
    assert local.ops("redrive", "--all").returncode == 2
    assert local.counts(local.dlq_url) == (3, 0)

    # The endpoint as an option this time instead of AWS_ENDPOINT_URL.
    env = {k: v for k, v in local.env.items() if k != "AWS_ENDPOINT_URL"}
    redrive = local.ops("--endpoint-url", local.endpoint, "redrive", "--all", "--yes", env=env)
    assert redrive.returncode == 0, redrive.stdout + redrive.stderr
    assert "started message move task moderation_dlq -> moderation" in redrive.stdout
    assert "completed: moved 3/3" in redrive.stdout and "redrive complete: moved 3 message(s)" in redrive.stdout
    assert "one by one" not in redrive.stdout  # LocalStack has StartMessageMoveTask: no fallback
    assert local.counts(local.dlq_url) == (0, 0)
    assert local.wait_counts(local.queue_url, (3, 0)) == (3, 0)
    assert local.main_queue_bodies(3) == sorted(bodies)


def test_move_task_without_destination_fails_on_envelopes(local: Local):
    """Why the runbook and ops.dlq always pass DestinationArn: "back to the source"
    needs DeadLetterQueueSourceArn, which the scorer's envelopes do not have."""
    local.empty_queues()
    local.sqs.send_message(QueueUrl=local.dlq_url, MessageBody=json.dumps({"original_message": "x", "error": "e"}))
    local.sqs.start_message_move_task(SourceArn=local.dlq_arn)
    deadline = time.monotonic() + 10
    while (task := local.sqs.list_message_move_tasks(SourceArn=local.dlq_arn)["Results"][0])["Status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert task["Status"] == "FAILED" and task.get("ApproximateNumberOfMessagesMoved", 0) == 0
    assert local.counts(local.queue_url) == (0, 0)
    assert sum(local.counts(local.dlq_url)) == 1  # still in the DLQ (briefly in flight)


def test_make_dlq_needs_nothing_but_the_endpoint(local: Local):
    """`AWS_ENDPOINT_URL=<a local stack> make dlq` as a developer types it: no region,
    no credentials in the environment (found broken by hand: "You must specify a region")."""
    local.fill_dlq()
    env = {k: v for k, v in local.env.items() if not k.startswith("AWS_")} | {"AWS_ENDPOINT_URL": local.endpoint}
    env["HOME"] = str(ROOT / "build" / "no-aws-config")  # no ~/.aws to fall back on
    out = subprocess.run(["make", "--no-print-directory", "dlq"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1] == "3 messages in moderation_dlq (1 exhausted, 2 permanent)"
