"""End to end under concurrent clients, against raw SQS on the same endpoint.

One `make run` stack (own ports, own state dir) serves two runs:
1. raw SQS: on a scratch queue, SENDERS threads SendMessage one message at a
   time (as the API does) while RECEIVERS threads ReceiveMessage(10) +
   DeleteMessageBatch (as the runner does): the rate the endpoint itself
   allows, the ceiling for the stack;
2. the stack: `make load` (measure/load) with CLIENTS concurrent clients
   submitting N tasks and polling them until every one is terminal.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devstack.stack import make_run
from measure.load.run import measure
from toolkit import names
from toolkit.seed import DEMO_ADS

CLIENTS = 32
SENDERS = 32
RECEIVERS = 5
DRAIN_TIMEOUT_S = 300
TARGET_RATIO = 0.9  # issue 24: single submits end to end >= 0.9 of raw single SendMessage (was 0.5)


def _sqs(endpoint: str) -> Any:
    import botocore.session
    from botocore.config import Config

    # One client for every thread (botocore clients are thread-safe), with a connection each.
    return botocore.session.get_session().create_client(
        "sqs", endpoint_url=endpoint, region_name=names.REGION,
        aws_access_key_id=names.LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=names.LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=SENDERS + RECEIVERS, retries={"max_attempts": 2}))


def raw_sqs(endpoint: str, n: int, progress: Any) -> dict[str, Any]:
    from chalicelib.queue import task_message

    sqs = _sqs(endpoint)
    url = sqs.create_queue(QueueName=f"bench-scratch-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    tickets = itertools.count()  # next() on it is atomic under the GIL
    received, lock = 0, threading.Lock()
    started = ended = 0.0
    deadline = time.monotonic() + DRAIN_TIMEOUT_S

    def send() -> None:
        while (i := next(tickets)) < n:
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(task_message(i + 1, i % DEMO_ADS + 1)))

    def receive() -> None:
        nonlocal received, ended
        while received < n and time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
            if messages:
                sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(messages)])
                with lock:
                    received += len(messages)
                    # Timed to the last delete, not to the join: the other receivers may
                    # still sit in a long poll of the empty queue for WaitTimeSeconds.
                    ended = time.perf_counter()
                progress.set_postfix_str(f"{received}/{n} received")

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(SENDERS + RECEIVERS) as pool:
            for future in [pool.submit(send) for _ in range(SENDERS)] + [pool.submit(receive) for _ in range(RECEIVERS)]:
                future.result()
        seconds = ended - started
    finally:
        sqs.delete_queue(QueueUrl=url)
        progress.set_postfix_str("")
    return {"messages": n, "received_and_deleted": received, "seconds": seconds, "msg_per_s": received / seconds,
            "senders": SENDERS, "receivers": RECEIVERS}


def steps() -> int:
    return 3


def run(tasks: int, raw_messages: int, out_dir: Path, progress: Any) -> dict[str, Any]:
    progress.set_description_str("e2e: starting make run (PostgreSQL, LocalStack, chalice local, runner)")
    log = out_dir / "make-run.log"  # kept for a post-mortem; the stack's state dir goes
    log.unlink(missing_ok=True)  # make_run appends: it would find the last run's "ready" line
    with make_run(log=log) as stack:
        progress.update(1)
        progress.set_description_str(f"e2e: raw SQS, {SENDERS} senders / {RECEIVERS} receivers")
        raw = raw_sqs(stack.endpoint, raw_messages, progress)
        progress.update(1)
        progress.set_description_str(f"e2e: make load, {CLIENTS} clients, {tasks} tasks")
        with (out_dir / "locust.log").open("w") as locust_log:
            load = measure(stack.api, users=CLIENTS, submits=tasks, api_key=stack.api_key, drain_timeout=DRAIN_TIMEOUT_S,
                           output=locust_log)
        progress.set_description_str("e2e: stopping the stack")
    progress.update(1)
    ratio = (load["tasks"]["tasks_per_s"] or 0.0) / raw["msg_per_s"]
    return {"startup_s": stack.startup_seconds, "raw_sqs": raw, "load": load, "ratio_e2e_to_raw_sqs": ratio,
            "target_ratio": TARGET_RATIO}
