"""devstack.runner behaves like Lambda's SQS event source mapping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import psutil
import psycopg2
import pytest

from chalicelib import deps
from devstack.runner import POLL_WAIT_CAP_SECONDS, Runner, failed_ids
from tests.helpers import execute, fetch_task, free_port, insert_ad, task_body

# What the stop tests tell apart: a stop seen after one capped receive (POLL_WAIT_CAP_SECONDS, 2 s)
# from one that waited out the queue's 20 s long poll. Not a speed goal: on a loaded 2-core machine the
# subprocess's stop once took 5.3 s (moto's long poll, shutdown), and a tighter bound failed CI for that.
STOPPED_WELL_BEFORE_AN_UNCAPPED_RECEIVE = 10.0
assert POLL_WAIT_CAP_SECONDS < STOPPED_WELL_BEFORE_AN_UNCAPPED_RECEIVE < 20

ROOT = Path(__file__).resolve().parents[2]


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
    task_id = deps.task_store().create_task(item_id, client="tester")
    send(sqs, [json.dumps(task_body(task_id, item_id)), "{garbage"])
    runner = Runner(sqs, queue_url(sqs), app.score, reconcile=app.reconcile, wait_seconds=0)
    assert runner.poll_once() == 2
    assert fetch_task(app_env, task_id)["status"] == "completed"
    assert remaining(sqs) == 0  # the garbage went to the DLQ and was acknowledged
    dlq = sqs.get_queue_url(QueueName="moderation_dlq")["QueueUrl"]
    [parked] = sqs.receive_message(QueueUrl=dlq)["Messages"]
    assert json.loads(parked["Body"])["original_message"] == "{garbage"
    # The scheduled handler runs too, with an event Chalice accepts.
    assert runner.maybe_reconcile() == {"webhooks_sent": 0, "reviews_waiting": 0, "leases_expired": 0, "resent": 0,
                                       "unreceived": 0, "failed_stuck": 0, "purged": 0}


# --------------------------------------------------------------------------
# Several pollers, like the event source mapping
# --------------------------------------------------------------------------


def run_in_background(runner: Runner) -> threading.Thread:
    thread = threading.Thread(target=runner.run_forever, name="runner-main", daemon=True)
    thread.start()
    return thread


def poller_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("poller-")]


def test_pollers_hand_batches_to_the_handler_concurrently(sqs):
    """Five batches in the handler at once: it returns only when all five are in flight."""
    pollers = 5
    all_in = threading.Barrier(pollers, timeout=15)
    lock = threading.Lock()
    in_flight, peak, handled = 0, 0, []

    def handler(event, context):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            all_in.wait()  # BrokenBarrierError (-> batch kept) unless 5 run at once
        finally:
            with lock:
                in_flight -= 1
        handled.extend(r["body"] for r in event["Records"])
        return {"batchItemFailures": []}

    send(sqs, [f"m{i}" for i in range(pollers)])
    runner = Runner(sqs, queue_url(sqs), handler, batch_size=1, wait_seconds=1, pollers=pollers)
    thread = run_in_background(runner)
    try:
        deadline = time.monotonic() + 20
        while len(handled) < pollers and not all_in.broken and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
        thread.join(10)
    assert not all_in.broken, f"only {peak} batches were ever in flight at once"
    assert peak == pollers and sorted(handled) == [f"m{i}" for i in range(pollers)]
    assert remaining(sqs) == 0  # every one acknowledged, by whichever poller had it


def test_stop_ends_every_poller_promptly_and_the_timer_keeps_running(sqs):
    reconciled = []
    runner = Runner(sqs, queue_url(sqs), lambda e, c: {}, reconcile=lambda e, c: reconciled.append(e) or {},
                    wait_seconds=20, reconcile_every_seconds=0.2, pollers=4)
    thread = run_in_background(runner)
    time.sleep(1.0)
    assert len(poller_threads()) == 4
    started = time.monotonic()
    runner.stop()
    thread.join(10)
    took = time.monotonic() - started
    assert not thread.is_alive() and not poller_threads()
    # A long poll is capped so the stop is seen within one capped receive, not one of the 20 s asked for.
    assert took < STOPPED_WELL_BEFORE_AN_UNCAPPED_RECEIVE, took
    # The reconciler ran on its timer meanwhile, one run at a time, with scheduled events.
    assert len(reconciled) >= 3 and all(e["detail-type"] == "Scheduled Event" for e in reconciled)


def test_the_runner_process_budgets_connections_and_stops_on_sigterm(app_env, tmp_path):
    """`python -m devstack.runner --pollers 3` against an SQS server: 7 connections at most (3 pollers of the
    task queue, 3 of the webhooks queue, the reconciler; issue 22), clean SIGTERM."""
    moto_server = pytest.importorskip("moto.server")
    from toolkit.template import ensure_queues

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path / "runner.log"
    try:
        client = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        url = ensure_queues(client)["moderation"]
        item_id = insert_ad(app_env)
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "DATABASE_URL": app_env, "DB_POOL_SIZE": "50"}
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "devstack.runner", "--pollers", "3"], cwd=ROOT, env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            tasks = [deps.task_store().create_task(item_id, client="tester") for _ in range(30)]
            deps.reset()  # closes this process's own connection: only the runner's are counted below
            # Sampled from before the first message until the last task is done (sampling only after
            # sending once saw none open): the most connections the runner held at once. Its own, told
            # by their client ports: a pool an earlier test left to the garbage collector also says
            # application_name 'ad-moderation'.
            runner, peaks, finished = psutil.Process(proc.pid), [0], threading.Event()

            def sample() -> None:
                conn = psycopg2.connect(app_env)
                conn.autocommit = True  # each sample sees the activity as it is now
                try:
                    with conn.cursor() as cur:
                        while not finished.is_set():
                            ports = {c.laddr.port for c in runner.net_connections("tcp") if c.laddr}
                            cur.execute("SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND application_name = 'ad-moderation'")
                            peaks.append(sum(1 for (port,) in cur.fetchall() if port in ports))
                            time.sleep(0.005)
                finally:
                    conn.close()

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for start in range(0, len(tasks), 10):
                client.send_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(t), "MessageBody": json.dumps(task_body(t, item_id))} for t in tasks[start:start + 10]])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                [(done,)] = execute(app_env, "SELECT count(*) FROM moderation_results WHERE id = ANY(%s) "
                                    "AND status = 'completed'", (tasks,))
                if done == len(tasks):
                    break
                time.sleep(0.05)
            finished.set()
            sampler.join(10)
            peak = max(peaks)
            assert [fetch_task(app_env, t)["status"] for t in tasks] == ["completed"] * len(tasks), log.read_text()
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(15)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        server.stop()
    text = log.read_text()
    assert code == 0, text
    assert took < STOPPED_WELL_BEFORE_AN_UNCAPPED_RECEIVE, (took, text)
    # DB_POOL_SIZE from the environment is replaced by 2 x pollers + 1.
    assert "with 3 pollers" in text and "at most 7 database connections" in text, text
    assert 0 < peak <= 7, peak  # 0 would mean the ports were not told apart
    assert "stopped" in text.splitlines()[-1], text
