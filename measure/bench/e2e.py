"""End to end under concurrent clients, against raw SQS on the same endpoint.

One `make run` stack (own ports, own state dir) serves three runs:
1. raw SQS: on a scratch queue, 32 sender threads each SendMessage one
   message at a time (as the API does) while 5 receiver threads
   ReceiveMessage(10) + DeleteMessageBatch (as the runner does): the rate the
   endpoint itself allows, the ceiling for the stack;
2. the stack: 32 HTTP client threads POST /moderation/async_predict until N
   tasks are accepted; done when every task is terminal in the database;
3. the same load again, shorter, with py-spy sampling chalice local and the
   runner (measure.bench.sampling), so the figures of run 2 are not skewed by it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from measure.bench.common import OUT_DIR, ROOT, Percentiles, Progress, free_port
from measure.bench.sampling import CpuMeter, Sampler

CLIENTS = 32
SENDERS = 32
RECEIVERS = 5
DEMO_ADS = 300
STARTUP_TIMEOUT_S = 240
DRAIN_TIMEOUT_S = 300
TARGET_RATIO = 0.5


@dataclass
class Stack:
    api: str
    database_url: str
    endpoint: str
    pid: int
    pg_port: int
    startup_s: float


@contextlib.contextmanager
def make_run_stack(progress: Progress) -> Iterator[Stack]:
    """`python -m devstack.run` on free ports with its own state dir; stopped (Ctrl-C) and removed afterwards."""
    api_port, pg_port, aws_port = free_port(), free_port(), free_port()
    state = Path(tempfile.mkdtemp(prefix="bench-stack-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL")}
    env.update(LOCAL_STATE_DIR=str(state), EMBEDDED_PG_PORT=str(pg_port), AWS_ENDPOINT_URL=f"http://127.0.0.1:{aws_port}")
    log = state / "make-run.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devstack.run", "--port", str(api_port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        while "ready in" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - started > STARTUP_TIMEOUT_S:
                raise RuntimeError(f"the stack did not start:\n{log.read_text(errors='replace')[-3000:]}")
            progress.set_postfix_str(f"{time.monotonic() - started:.0f} s")
            time.sleep(0.3)
        progress.set_postfix_str("")
        yield Stack(api=f"http://127.0.0.1:{api_port}",
                    database_url=f"postgresql://postgres@127.0.0.1:{pg_port}/moderation",
                    endpoint=f"http://127.0.0.1:{aws_port}", pid=proc.pid, pg_port=pg_port, startup_s=time.monotonic() - started)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, OUT_DIR / "make-run.log")  # for a post-mortem; the state dir goes
        shutil.rmtree(state, ignore_errors=True)


# Lines of make run's log worth counting: the stack's own complaints under load.
LOG_SIGNS = {
    "botocore connection pool full (a connection to SQS thrown away)": "Connection pool is full",
    "tracebacks": "Traceback (most recent call last)",
    "no free database connection": "no free database connection",
}


def log_signs(path: Path) -> dict[str, int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {label: text.count(needle) for label, needle in LOG_SIGNS.items()}


# --- raw SQS ------------------------------------------------------------------------


def _sqs_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    # A session per client: boto3's default session is not thread-safe to build clients from.
    return boto3.session.Session().client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2}),
    )


class _Counter:
    """A thread-safe counter: next ticket, or how many are done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._it = itertools.count()
        self.done = 0

    def take(self) -> int:
        with self._lock:
            return next(self._it)

    def add(self, n: int) -> int:
        with self._lock:
            self.done += n
            return self.done


def raw_sqs(endpoint: str, n: int, progress: Progress) -> dict[str, Any]:
    admin = _sqs_client(endpoint)
    url = admin.create_queue(QueueName=f"bench-scratch-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    senders = [_sqs_client(endpoint) for _ in range(SENDERS)]
    receivers = [_sqs_client(endpoint) for _ in range(RECEIVERS)]
    tickets, received = _Counter(), _Counter()
    sent_at: list[float] = []
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    errors: list[str] = []

    def send(client: Any) -> None:
        while (i := tickets.take()) < n:
            body = json.dumps({"task_id": i + 1, "item_id": i % DEMO_ADS + 1, "timestamp": "2026-01-01T00:00:00Z"})
            try:
                client.send_message(QueueUrl=url, MessageBody=body)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                errors.append(f"send: {exc}")
        sent_at.append(time.perf_counter())

    def receive(client: Any) -> None:
        while received.done < n and time.monotonic() < deadline:
            try:
                messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                  AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
                if messages:
                    client.delete_message_batch(QueueUrl=url, Entries=[
                        {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(messages)])
                    progress.set_postfix_str(f"{received.add(len(messages))}/{n} received")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"receive: {exc}")
                time.sleep(0.2)

    started = time.perf_counter()
    threads = [threading.Thread(target=send, args=(c,)) for c in senders]
    threads += [threading.Thread(target=receive, args=(c,)) for c in receivers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    admin.delete_queue(QueueUrl=url)
    progress.set_postfix_str("")
    return {
        "messages": n,
        "received_and_deleted": received.done,
        "seconds": elapsed,
        "msg_per_s": received.done / elapsed,
        "send_only_msg_per_s": n / (max(sent_at) - started) if sent_at else float("nan"),
        "senders": SENDERS,
        "receivers": RECEIVERS,
        "errors": len(errors),
        "first_errors": errors[:3],
    }


# --- the stack under load -----------------------------------------------------------


@dataclass
class Response:
    status: int  # 0: no HTTP response (connection refused/reset, timeout)
    ms: float
    task_id: int | None


def _post(api: str, item_id: int) -> Response:
    req = urllib.request.Request(f"{api}/moderation/async_predict?item_id={item_id}", data=b"", method="POST")
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = json.loads(resp.read())
            return Response(resp.status, (time.perf_counter() - t) * 1000, int(body["task_id"]))
    except urllib.error.HTTPError as exc:
        return Response(exc.code, (time.perf_counter() - t) * 1000, None)
    except OSError:
        return Response(0, (time.perf_counter() - t) * 1000, None)


def tcp_counters() -> dict[str, int]:
    """Kernel TCP counters of this network namespace (Linux), shared with whatever else runs here.

    ListenOverflows counts connections dropped because a listen backlog was
    full; the client retransmits its SYN after 1 s, which shows up as POSTs
    taking just over a second.
    """
    try:
        lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    values = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=False))
    return {k: values[k] for k in ("ListenOverflows", "TCPSynRetrans") if k in values}


def _unfinished(database_url: str, task_ids: list[int]) -> int:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM moderation_results WHERE id = ANY(%s) AND status NOT IN ('completed', 'failed')",
                    (task_ids,))
        n = int(cur.fetchone()[0])
    conn.close()
    return n


def _outcomes(database_url: str, task_ids: list[int]) -> tuple[list[float], dict[str, int]]:
    """submit -> completed latencies (ms, from the database's own clock) and status counts."""
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, extract(epoch FROM processed_at - created_at) * 1000 FROM moderation_results "
                    "WHERE id = ANY(%s)", (task_ids,))
        rows = cur.fetchall()
    conn.close()
    statuses = dict(Counter(status for status, _ in rows))
    return [float(ms) for status, ms in rows if status == "completed"], statuses


def load(stack: Stack, n: int, progress: Progress, on_start: Callable[[], None] | None = None) -> dict[str, Any]:
    """CLIENTS threads POST until n requests are made; then wait until every accepted task is terminal."""
    tickets = _Counter()
    responses: list[Response] = []
    lock = threading.Lock()

    def client() -> None:
        while (i := tickets.take()) < n:
            r = _post(stack.api, i % DEMO_ADS + 1)
            with lock:
                responses.append(r)
                if len(responses) % 25 == 0:
                    progress.set_postfix_str(f"{len(responses)}/{n} posted")

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    tcp_before = tcp_counters()
    if on_start is not None:
        on_start()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    posted = time.perf_counter() - started
    tcp = {k: v - tcp_before[k] for k, v in tcp_counters().items() if k in tcp_before}
    task_ids = [r.task_id for r in responses if r.task_id is not None]
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    left = len(task_ids)
    while task_ids and time.monotonic() < deadline:
        left = _unfinished(stack.database_url, task_ids)
        progress.set_postfix_str(f"{len(task_ids) - left}/{len(task_ids)} terminal")
        if left == 0:
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    progress.set_postfix_str("")
    latencies, statuses = _outcomes(stack.database_url, task_ids) if task_ids else ([], {})
    post = Percentiles.of([r.ms for r in responses if r.task_id is not None])
    done = Percentiles.of(latencies)
    return {
        "requests": n,
        "clients": CLIENTS,
        "accepted": len(task_ids),
        "status_codes": dict(Counter(str(r.status) for r in responses)),
        "responses_5xx": sum(1 for r in responses if r.status >= 500),
        "no_response": sum(1 for r in responses if r.status == 0),
        "unfinished_at_timeout": left,
        "task_statuses": statuses,
        "post_seconds": posted,
        "seconds": elapsed,
        "tasks_per_s": len(task_ids) / elapsed if elapsed else float("nan"),
        "post_per_s": n / posted,
        "post_ms": _pct(post),
        "posts_over_1s": sum(1 for r in responses if r.ms >= 1000),
        "tcp_during_posts": tcp,
        "submit_to_completed_ms": _pct(done),
    }


def _pct(p: Percentiles) -> dict[str, float]:
    return {"p50": p.p50, "p95": p.p95, "p99": p.p99, "max": p.max, "n": p.n}


def steps() -> int:
    return 5


def run(tasks: int, raw_messages: int, profile_tasks: int, progress: Progress) -> dict[str, Any]:
    progress.set_description_str("e2e: starting make run (Postgres, LocalStack, chalice local, runner)")
    with make_run_stack(progress) as stack:
        progress.update(1)
        progress.set_description_str(f"e2e: raw SQS, {SENDERS} senders / {RECEIVERS} receivers")
        meter = CpuMeter(stack.pid, stack.pg_port)
        meter.start()
        raw = raw_sqs(stack.endpoint, raw_messages, progress)
        raw["cpu"] = meter.stop()
        progress.update(1)
        progress.set_description_str(f"e2e: {CLIENTS} clients, {tasks} tasks")
        e2e = load(stack, tasks, progress, on_start=meter.start)
        e2e["cpu"] = meter.stop()
        progress.update(1)
        progress.set_description_str(f"e2e: {profile_tasks} more tasks under py-spy")
        sampler = Sampler(stack.pid, OUT_DIR / "pyspy")
        try:
            profiled = load(stack, profile_tasks, progress, on_start=sampler.start)
            samples = sampler.stop()
        finally:
            sampler.abort()
        progress.update(1)
        progress.set_description_str("e2e: stopping the stack")
    progress.update(1)
    return {
        "startup_s": stack.startup_s,
        "make_run_log": log_signs(OUT_DIR / "make-run.log") | {"file": "build/bench/make-run.log"},
        "raw_sqs": raw,
        "e2e": e2e,
        "ratio_e2e_to_raw_sqs": e2e["tasks_per_s"] / raw["msg_per_s"] if raw["msg_per_s"] else float("nan"),
        "target_ratio": TARGET_RATIO,
        "profiled_run": {"tasks_per_s": profiled["tasks_per_s"], "requests": profiled["requests"]},
        "profile": samples,
    }
