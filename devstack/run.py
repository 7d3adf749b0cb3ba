"""`make run`: the whole service on one machine, in the foreground.

1. PostgreSQL: DATABASE_URL if set, else an embedded server (pip wheel) with
   its data in .local/pg.
2. AWS: whatever answers at AWS_ENDPOINT_URL (default http://127.0.0.1:4566,
   e.g. docker-compose.localstack.yml), else real LocalStack in host mode.
   A reused endpoint is refused if a Lambda event source mapping there
   already reads the queue (another stack would take our messages).
3. Queues from infra/resources.json, migrations, demo data if empty.
4. The API as `chalice local` serves it (devstack.chalice_local) on
   127.0.0.1:8000, and the SQS runner (devstack.runner).

Ctrl-C stops everything this command started, and nothing else. Re-running is
safe: every step is idempotent.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.names import ROOT

# Where the embedded database and LocalStack keep their state (git-ignored).
# Overridable so a test can run a second stack beside a developer's.
LOCAL = Path(os.environ.get("LOCAL_STATE_DIR") or ROOT / ".local")
DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
LOCAL_AWS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    # LocalStack accepts any credentials; these only keep botocore from
    # looking for real ones. Never used against AWS (AWS_ENDPOINT_URL is set).
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
}


def say(text: str) -> None:
    print(f"[make run] {text}", flush=True)


@dataclass
class Stack:
    """What `up()` started, so `down()` stops exactly that."""

    env: dict[str, str]
    database_url: str
    endpoint: str
    queue_urls: dict[str, str]
    stoppers: list[Any] = field(default_factory=list)

    def down(self) -> None:
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                say(f"while stopping: {exc}")
        self.stoppers.clear()


def up(*, seed: bool = True, pg_port: int | None = None) -> Stack:
    """Bring up Postgres + AWS endpoint + queues + schema (+ demo data)."""
    from toolkit.localstack import HostLocalStack, endpoint_answers
    from toolkit.postgres import EmbeddedPostgres

    env = dict(os.environ)
    for k, v in LOCAL_AWS_ENV.items():
        env.setdefault(k, v)
    stoppers: list[Any] = []

    database_url = env.get("DATABASE_URL", "")
    if database_url:
        say(f"PostgreSQL: using DATABASE_URL ({_redact(database_url)})")
    else:
        port = pg_port or int(env.get("EMBEDDED_PG_PORT", "54329"))
        pg = EmbeddedPostgres(LOCAL / "pg", port=port)
        already = pg.is_running()
        t = time.monotonic()
        database_url = pg.start()
        say(f"PostgreSQL: embedded server {database_url} ({time.monotonic() - t:.1f} s)")
        if not already:
            stoppers.append(pg.stop)
        env["DATABASE_URL"] = database_url

    endpoint = env.get("AWS_ENDPOINT_URL") or DEFAULT_ENDPOINT
    env["AWS_ENDPOINT_URL"] = endpoint
    reused = endpoint_answers(endpoint)
    if reused:
        say(f"AWS: using the endpoint already answering at {endpoint}")
    else:
        ls = HostLocalStack(data_dir=LOCAL / "localstack", endpoint=endpoint)
        t = time.monotonic()
        ls.ensure_installed()
        ls.start()
        stoppers.append(ls.stop)
        say(f"AWS: started LocalStack (host mode) at {endpoint} ({time.monotonic() - t:.1f} s)")

    os.environ.update({k: env[k] for k in ("DATABASE_URL", "AWS_ENDPOINT_URL", *LOCAL_AWS_ENV)})
    stack = Stack(env=env, database_url=database_url, endpoint=endpoint, queue_urls={}, stoppers=stoppers)
    try:
        import boto3

        from chalicelib.migrate import apply_migrations
        from toolkit.template import ensure_queues

        if reused:
            # Before touching its queues. A LocalStack we just started has no
            # mappings: only a reused endpoint can hold another stack.
            refuse_shared_queue(endpoint)
        stack.queue_urls = ensure_queues(boto3.client("sqs"))
        say("queues: " + ", ".join(f"{n} -> {u}" for n, u in stack.queue_urls.items()))
        applied = apply_migrations(database_url)
        say(f"migrations: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
        if seed:
            from toolkit.seed import seed_demo_data

            n = seed_demo_data(database_url)
            say(f"demo data: {'inserted ' + str(n) + ' ads' if n else 'database already has ads'}")
    except BaseException:
        stack.down()
        raise
    return stack


def refuse_shared_queue(endpoint: str) -> None:
    """Raise QueueConsumedError if a Lambda event source mapping at the endpoint reads our queue.

    Our runner would share the queue with it: the other stack's function
    would take our messages and our tasks would stay pending (devstack/consumers.py).
    """
    from devstack.consumers import ensure_no_other_consumer

    queue = os.environ.get("MODERATION_QUEUE_NAME") or "moderation"
    t = time.monotonic()
    found = ensure_no_other_consumer(endpoint, queue)
    where = "no Lambda API or no such queue there" if found is None else "no Lambda event source mapping reads it"
    say(f"AWS: queue {queue!r} is ours alone ({where}; checked in {time.monotonic() - t:.1f} s)")


def _redact(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - our own loopback server
            return
        except urllib.error.HTTPError:
            return  # it answered (health may be 503 while things settle)
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def start_services(stack: Stack, host: str, port: int, reconcile_every: float) -> list[subprocess.Popen[bytes]]:
    # The server `chalice local --stage local --no-autoreload` builds, with JSON
    # 404/405 outside the routes and a real listen backlog (devstack/chalice_local.py).
    # No autoreload: chalice stat-polls every file under the project, and
    # .local/ (database, LocalStack) changes constantly. Restart to reload.
    chalice = [sys.executable, "-m", "devstack.chalice_local", "--host", host, "--port", str(port), "--stage", "local"]
    runner = [sys.executable, "-m", "devstack.runner", "--reconcile-every", str(reconcile_every)]
    procs = []
    for cmd in (chalice, runner):
        # Own process group: Ctrl-C reaches us once, and we stop children in order.
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=stack.env, start_new_session=True))
    stack.stoppers.append(lambda: _terminate(procs))
    wait_http(f"http://{host}:{port}/health", 30, procs[0])
    return procs


def _terminate(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def banner(stack: Stack, host: str, port: int) -> str:
    api = f"http://{host}:{port}"
    dlq = stack.queue_urls.get("moderation_dlq", "<dlq url>")
    queue = stack.queue_urls.get("moderation", "<queue url>")
    aws = f"aws --endpoint-url {stack.endpoint}"
    return f"""
ad-moderation is up.
  API        {api}   (chalice local server, stage "local")
  Postgres   {stack.database_url}
  AWS        {stack.endpoint}
  queue      {queue}
  DLQ        {dlq}

Try it (another terminal):
  curl -s -X POST '{api}/moderation/async_predict?item_id=1'
  curl -s {api}/moderation/moderation_result/1
  curl -s -X POST '{api}/moderation/simple_predict?item_id=2'
  curl -s -X POST {api}/moderation/predict -H 'Content-Type: application/json' \\
       -d '{{"seller_id":1,"is_verified_seller":false,"item_id":1,"name":"iPhone","description":"реплика, предоплата","category":1,"images_qty":0}}'
  curl -s {api}/health

Queues (AWS CLI; credentials test/test, region us-east-1):
  {aws} sqs get-queue-attributes --queue-url {dlq} --attribute-names All
  {aws} sqs receive-message --queue-url {dlq} --max-number-of-messages 10 --visibility-timeout 0
  {aws} sqs get-queue-attributes --queue-url {queue} --attribute-names ApproximateNumberOfMessages ApproximateNumberOfMessagesNotVisible

Ctrl-C stops everything started here.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run ad-moderation locally (foreground).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--reconcile-every", type=float, default=60.0)
    args = parser.parse_args(argv)

    started = time.monotonic()
    stopping = False

    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from devstack.consumers import QueueConsumedError

    try:
        stack = up()
    except QueueConsumedError as err:
        say(f"refusing to start: {err}")
        return 1
    try:
        procs = start_services(stack, args.host, args.port, args.reconcile_every)
        print(banner(stack, args.host, args.port), flush=True)
        say(f"ready in {time.monotonic() - started:.1f} s")
        while not stopping:
            for p in procs:
                if p.poll() is not None:
                    say(f"{p.args!r} exited with {p.returncode}; stopping")
                    return 1
            time.sleep(0.5)
        say("stopping")
        return 0
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
