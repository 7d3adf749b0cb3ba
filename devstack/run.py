"""`make run`: the whole service on one machine, in the foreground (docs/local-stack.md).

Every step is idempotent; Ctrl-C stops everything this command started, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import boto3

from chalicelib.serving.model import DEFAULT_MODEL_PATH
from chalicelib.storage.migrations import apply_migrations
from devstack import reload
from devstack.consumers import QueueConsumedError, ensure_no_other_consumer
from toolkit import logs, names, procs
from toolkit.local_keys import DEFAULT_CLIENT, LocalKeys
from toolkit.localstack import HostLocalStack, endpoint_answers
from toolkit.postgres import EmbeddedPostgres
from toolkit.registry import Registry, bootstrap, publisher
from toolkit.seed import seed_demo_data
from toolkit.template import ensure_queues

log = logs.get("make run")
READY = "ready in"  # devstack.stack waits for this line


def up(resources: ExitStack, queue: str) -> dict[str, str]:
    """PostgreSQL, the AWS endpoint, queues, schema and demo data; name -> URL of the queues.
    What this starts is stopped when `resources` closes (also when a later step fails).
    Leaves DATABASE_URL and AWS_ENDPOINT_URL in os.environ: the app has no local defaults."""
    for key, value in names.LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    # Webhooks (issue 22; docs/webhooks.md): under make run a receiver on this machine, over plain http.
    for key in ("WEBHOOK_ALLOW_HTTP", "WEBHOOK_ALLOW_PRIVATE"):
        os.environ.setdefault(key, "1")
    t = time.monotonic()
    if database_url := os.environ.get("DATABASE_URL", ""):
        scheme, _, rest = database_url.partition("://")
        user, _, host = rest.rpartition("@")
        log.info("PostgreSQL: using DATABASE_URL (%s)", f"{scheme}://{user.split(':')[0]}:***@{host}" if ":" in user else database_url)
    else:
        pg = EmbeddedPostgres(names.state_dir() / "pg", port=int(os.environ.get("EMBEDDED_PG_PORT") or names.RUN_PG_PORT))
        if not pg.is_running():  # one already running is someone else's to stop
            resources.callback(pg.stop)
        database_url = os.environ["DATABASE_URL"] = pg.start()
        log.info("PostgreSQL: embedded server %s (%.1f s)", database_url, time.monotonic() - t)

    endpoint = os.environ["AWS_ENDPOINT_URL"] = os.environ.get("AWS_ENDPOINT_URL") or names.RUN_ENDPOINT
    t = time.monotonic()
    if endpoint_answers(endpoint):
        # Only a reused endpoint can hold another stack: a LocalStack we start has no mappings.
        found = ensure_no_other_consumer(endpoint, queue)
        why = "no Lambda API or no such queue there" if found is None else "no Lambda event source mapping reads it"
        log.info("AWS: using %s, already answering; queue %r is ours alone (%s; checked in %.1f s)", endpoint, queue, why,
                 time.monotonic() - t)
    else:
        localstack = HostLocalStack(data_dir=names.state_dir() / "localstack", endpoint=endpoint)
        localstack.start()
        resources.callback(localstack.stop)
        log.info("AWS: started LocalStack (host mode) at %s (%.1f s)", endpoint, time.monotonic() - t)

    queue_urls = ensure_queues(boto3.client("sqs"))
    os.environ.setdefault("MAX_RECEIVE_COUNT", str(names.max_receive_count()))  # the queues' redrive, as deployed
    log.info("queues: %s", ", ".join(f"{n} -> {u}" for n, u in queue_urls.items()))
    model_registry()
    applied = apply_migrations(database_url)
    log.info("migrations: %s", "applied " + ", ".join(applied) if applied else "up to date")
    n = seed_demo_data(database_url)
    log.info("demo data: %s", f"inserted {n} ads" if n else "database already has ads")
    return queue_urls


def model_registry() -> None:
    """The registry's bucket in this LocalStack, with the packaged model as its first
    live version if it is empty; MODEL_BUCKET for the functions. `MODEL_BUCKET=` (set,
    empty) runs without a registry: the packaged model serves."""
    bucket = os.environ.setdefault("MODEL_BUCKET", names.MODEL_BUCKET)
    if not bucket:
        log.info("model: the packaged %s (MODEL_BUCKET is empty: no registry)", DEFAULT_MODEL_PATH.name)
        return
    packaged = DEFAULT_MODEL_PATH.read_bytes()
    # The state directory's copy is restored first and kept current (docs/local-stack.md).
    registry = Registry(boto3.client("s3"), bucket, names.model_registry_mirror(bucket))
    live, published = bootstrap(registry, packaged, f"make run ({publisher()})")
    if published is not None:
        log.info("model registry: s3://%s created; the packaged model %s published and live", bucket, published.version)
        return
    log.info("model registry: s3://%s, live %s", bucket, live.version if live else "unset (the packaged model serves)")
    packaged_version = json.loads(packaged)["version"]
    if live is not None and live.version != packaged_version:
        log.info("  (the packaged model is %s; to serve it: make model-publish ARTIFACT=%s PROMOTE=live)",
                 packaged_version, DEFAULT_MODEL_PATH.relative_to(names.ROOT))


def api_key() -> str:
    """The key of client `local`, with every scope (API_KEY if set, else the one in the state dir,
    else a new one): the API enforces keys as the deployed API does (devstack/chalice_local.py)."""
    return LocalKeys().ensure(DEFAULT_CLIENT, os.environ.get("API_KEY") or None).value


def banner(api: str, queue_urls: dict[str, str], client_key: str) -> str:
    """The user's guide: every line copy-pasteable into another terminal."""
    queue, dlq = (queue_urls.get(n, f"<{n} url>") for n in (names.queues().main, names.queues().dlq))
    h = f"-H 'x-api-key: {client_key}'"
    aws = f"aws --endpoint-url {os.environ['AWS_ENDPOINT_URL']}"
    key, secret = (names.LOCAL_CREDENTIALS[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
    # The model commands find this stack by these (their defaults are make run's usual ones).
    where = {"AWS_ENDPOINT_URL": (os.environ["AWS_ENDPOINT_URL"], names.RUN_ENDPOINT),
             "EMBEDDED_PG_PORT": (os.environ.get("EMBEDDED_PG_PORT", ""), ""),
             "PORT": (api.rsplit(":", 1)[-1], str(names.RUN_API_PORT)), "MODEL_BUCKET": (os.environ.get("MODEL_BUCKET", ""), names.MODEL_BUCKET)}
    exports = " ".join(f"{k}={v}" for k, (v, default) in where.items() if v != default)
    return f"""
ad-moderation is up.
  API        {api}   (chalice local server, stage "local")
  API key    {client_key}   (x-api-key, as on the deployed API; all keys: {LocalKeys().path}, make api-key ARGS="--make-run list")
  Postgres   {os.environ["DATABASE_URL"]}
  AWS        {os.environ["AWS_ENDPOINT_URL"]}
  queue      {queue}
  DLQ        {dlq}

Try it (another terminal):
  curl -s {h} -X POST '{api}/moderation/async_predict?item_id=1'
  curl -s {h} {api}/moderation/moderation_result/1
  curl -s {h} -X POST '{api}/moderation/simple_predict?item_id=2'
  curl -s {h} -X POST {api}/moderation/predict -H 'Content-Type: application/json' \\
       -d '{{"seller_id":1,"is_verified_seller":false,"item_id":1,"name":"iPhone","description":"реплика, предоплата","category":1,"images_qty":0}}'
  curl -s {api}/health

Queues (AWS CLI; credentials {key}/{secret}, region {names.REGION}):
  {aws} sqs get-queue-attributes --queue-url {dlq} --attribute-names All
  {aws} sqs receive-message --queue-url {dlq} --max-number-of-messages 10 --visibility-timeout 0
  {aws} sqs get-queue-attributes --queue-url {queue} --attribute-names ApproximateNumberOfMessages ApproximateNumberOfMessagesNotVisible

Models (registry {f"s3://{os.environ['MODEL_BUCKET']}" if os.environ.get("MODEL_BUCKET") else "off: the packaged model"}{f"; in that terminal first: export {exports}" if exports else ""}):
  make model-list; make model-publish; make model-promote VERSION=<version> [ALIAS=shadow]; make model-rollback; make model-compare

Ctrl-C stops everything started here.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run ad-moderation locally (foreground).")
    parser.add_argument("--host", default=names.HOST)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or names.RUN_API_PORT))
    parser.add_argument("--reconcile-every", type=float, default=60.0)
    args = parser.parse_args(argv)
    logs.setup()
    started, stopping = time.monotonic(), False

    # Ctrl-C and SIGTERM only set a flag: no exception from a signal (a second Ctrl-C
    # included) ever leaves the stack half started or half stopped.
    def on_signal(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    queue = os.environ.get("MODERATION_QUEUE_NAME") or names.queues().main
    if who := procs.holder(args.port, args.host):  # another make run, most likely: share nothing with it
        log.error("refusing to start: port %d is taken by %s; stop it, or use another: PORT=<port> make run", args.port, who)
        return 1
    with ExitStack() as resources:
        try:
            queue_urls = up(resources, queue)
        except QueueConsumedError as err:
            log.error("refusing to start: %s", err)
            return 1
        client_key = api_key()
        services = reload.Services([
            # The server `chalice local --stage local --no-autoreload` builds (devstack/chalice_local.py).
            # Chalice's autoreload stat-polls every file of the project, and .local/ changes constantly:
            # devstack/reload.py watches app.py and chalicelib/ only, and restarts these two.
            (["devstack.chalice_local", "--host", args.host, "--port", str(args.port)], f"http://{args.host}:{args.port}/health", 30),
            # Its timeout bounds the stop: the batch in hand (the function's 30 s) finishes first.
            (["devstack.runner", "--reconcile-every", str(args.reconcile_every), "--queue", queue], None, 40),
        ], env=os.environ)
        resources.callback(services.stop)  # the runner first, then the API; then LocalStack, PostgreSQL
        services.start()
        watcher = reload.Watcher(names.app_dir())
        resources.callback(watcher.close)
        print(banner(f"http://{args.host}:{args.port}", queue_urls, client_key), flush=True)
        log.info("%s %.1f s; app.py and chalicelib/ are watched: a change reloads the app", READY, time.monotonic() - started)
        while not stopping:
            if changed := watcher.changed():
                services.reload(changed)
            elif exited := services.exited():
                log.error("%s exited; stopping", exited)
                return 1
            time.sleep(0.5)
        log.info("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
