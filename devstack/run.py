"""`make run`: the whole service on one machine, in the foreground.

1. PostgreSQL: DATABASE_URL if set, else the embedded server, data in
   $LOCAL_STATE_DIR/pg (.local/pg), port EMBEDDED_PG_PORT.
2. AWS: whatever answers at AWS_ENDPOINT_URL (e.g. docker-compose.localstack.yml),
   refused if a Lambda event source mapping there reads our queue; else real
   LocalStack in host mode.
3. Queues from infra/resources.json, migrations, demo data if the database has no ads.
4. The API as `chalice local` serves it (devstack.chalice_local) on PORT, and the
   SQS runner (devstack.runner).

Ctrl-C stops everything this command started, and nothing else. Re-running is
safe: every step is idempotent.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import boto3

from chalicelib.migrate import apply_migrations
from devstack.consumers import QueueConsumedError, ensure_no_other_consumer
from toolkit import logs, names, procs
from toolkit.localstack import HostLocalStack, endpoint_answers
from toolkit.postgres import EmbeddedPostgres
from toolkit.seed import seed_demo_data
from toolkit.template import ensure_queues

log = logs.get("make run")
READY = "ready in"  # devstack.stack waits for this line


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]  # what the API and the runner run with
    database_url: str
    endpoint: str
    queue_urls: dict[str, str]


def up(resources: ExitStack, *, seed: bool = True) -> Stack:
    """PostgreSQL, the AWS endpoint, queues, schema and demo data; what this starts
    is stopped when `resources` closes (also if a later step fails)."""
    for key, value in names.LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    state = names.state_dir()
    if database_url := os.environ.get("DATABASE_URL", ""):
        log.info("PostgreSQL: using DATABASE_URL (%s)", _redact(database_url))
    else:
        pg = EmbeddedPostgres(state / "pg", port=int(os.environ.get("EMBEDDED_PG_PORT") or names.RUN_PG_PORT))
        started, t = not pg.is_running(), time.monotonic()
        database_url = pg.start()
        if started:  # one already running is someone else's to stop
            resources.callback(pg.stop)
        log.info("PostgreSQL: embedded server %s (%.1f s)", database_url, time.monotonic() - t)

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or names.RUN_ENDPOINT
    # The API and the runner get both explicitly: the app has no local defaults.
    os.environ.update(DATABASE_URL=database_url, AWS_ENDPOINT_URL=endpoint)
    queue = os.environ.get("MODERATION_QUEUE_NAME") or names.queues().main
    if endpoint_answers(endpoint):
        log.info("AWS: using the endpoint already answering at %s", endpoint)
        # A LocalStack we start has no mappings: only a reused endpoint can hold another stack.
        t = time.monotonic()
        found = ensure_no_other_consumer(endpoint, queue)
        where = "no Lambda API or no such queue there" if found is None else "no Lambda event source mapping reads it"
        log.info("AWS: queue %r is ours alone (%s; checked in %.1f s)", queue, where, time.monotonic() - t)
    else:
        localstack, t = HostLocalStack(data_dir=state / "localstack", endpoint=endpoint), time.monotonic()
        localstack.start()
        resources.callback(localstack.stop)
        log.info("AWS: started LocalStack (host mode) at %s (%.1f s)", endpoint, time.monotonic() - t)

    queue_urls = ensure_queues(boto3.client("sqs"))
    log.info("queues: %s", ", ".join(f"{n} -> {u}" for n, u in queue_urls.items()))
    applied = apply_migrations(database_url)
    log.info("migrations: %s", "applied " + ", ".join(applied) if applied else "up to date")
    if seed:
        n = seed_demo_data(database_url)
        log.info("demo data: %s", f"inserted {n} ads" if n else "database already has ads")
    return Stack(dict(os.environ), database_url, endpoint, queue_urls)


def _redact(url: str) -> str:
    scheme, _, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    return f"{scheme}://{creds.split(':')[0]}:***@{host}" if at and ":" in creds else url


def start_services(resources: ExitStack, stack: Stack, host: str, port: int, reconcile_every: float) -> list[procs.Process]:
    """The API and the runner, output to ours, each stopped (SIGTERM) when `resources` closes."""
    # The server `chalice local --stage local --no-autoreload` builds, with JSON 404/405
    # outside the routes and a real listen backlog (devstack/chalice_local.py). No
    # autoreload: it stat-polls every file, and .local/ changes constantly.
    api = procs.start([sys.executable, "-m", "devstack.chalice_local", "--host", host, "--port", str(port)],
                      ready=f"http://{host}:{port}/health", env=stack.env, timeout=30)
    resources.callback(procs.stop, api)
    # Its timeout bounds the stop: the batch in hand (the function's 30 s) finishes first.
    runner = procs.start([sys.executable, "-m", "devstack.runner", "--reconcile-every", str(reconcile_every),
                          "--queue", os.environ.get("MODERATION_QUEUE_NAME") or names.queues().main],
                         env=stack.env, timeout=40)
    resources.callback(procs.stop, runner)
    return [api, runner]


def banner(stack: Stack, api: str) -> str:
    """The user's guide: every line copy-pasteable into another terminal."""
    queue, dlq = (stack.queue_urls.get(n, f"<{n} url>") for n in (names.queues().main, names.queues().dlq))
    aws = f"aws --endpoint-url {stack.endpoint}"
    credentials = f"credentials {names.LOCAL_CREDENTIALS['AWS_ACCESS_KEY_ID']}/{names.LOCAL_CREDENTIALS['AWS_SECRET_ACCESS_KEY']}"
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

Queues (AWS CLI; {credentials}, region {names.REGION}):
  {aws} sqs get-queue-attributes --queue-url {dlq} --attribute-names All
  {aws} sqs receive-message --queue-url {dlq} --max-number-of-messages 10 --visibility-timeout 0
  {aws} sqs get-queue-attributes --queue-url {queue} --attribute-names ApproximateNumberOfMessages ApproximateNumberOfMessagesNotVisible

Ctrl-C stops everything started here.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run ad-moderation locally (foreground).")
    parser.add_argument("--host", default=names.HOST)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or names.RUN_API_PORT))
    parser.add_argument("--reconcile-every", type=float, default=60.0)
    args = parser.parse_args(argv)
    logs.setup()
    started = time.monotonic()
    stopping = False

    # Ctrl-C and SIGTERM only set a flag: the stack is never left half started or half
    # stopped by an exception from a signal (a second Ctrl-C included).
    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with ExitStack() as resources:
        try:
            stack = up(resources)
        except QueueConsumedError as err:
            log.error("refusing to start: %s", err)
            return 1
        if stopping:
            return 0
        services = start_services(resources, stack, args.host, args.port, args.reconcile_every)
        print(banner(stack, f"http://{args.host}:{args.port}"), flush=True)
        log.info("%s %.1f s", READY, time.monotonic() - started)
        while not stopping:
            if exited := [s for s in services if not s.running()]:
                log.error("%s exited; stopping", exited[0].command_parts[2])
                return 1
            time.sleep(0.5)
        log.info("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
