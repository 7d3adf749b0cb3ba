"""`make load`: load-test the moderation API with locust, headless, then report.

locust (measure/load/locustfile.py) runs in a subprocess, since it monkeypatches
the standard library with gevent: --users concurrent clients submit --submits
tasks in total (random item ids of --items) and poll the tasks they submitted,
until every accepted task is completed/failed or --drain-timeout has passed
since the last submit was answered. Then the figures (measure/load/report.py):
req/s, p50/p95/p99 per request kind, status counts, submit -> completed
latency, tasks/s end to end; printed, and written as JSON to --out.

Exit status: 0 if no response was >= 500, every request got a response and
every accepted task reached a terminal state; 1 otherwise; 2 if the test could
not run at all (nothing answers at --url, locust failed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import urllib3

from measure.load.report import Recording, format_report, parse_items, summarise
from toolkit import logs, names
from toolkit.local_keys import DEFAULT_CLIENT, LocalKeys

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_OUT = names.BUILD_DIR / "load" / "results.json"
# A safety net only: the run stops by itself once every task is terminal or the drain time is up.
MAX_LOAD_SECONDS = 900
log = logs.get("load")


class LoadError(RuntimeError):
    """The test could not run at all."""


def answers(url: str) -> bool:
    """Whether anything HTTP answers at the API (any status: /health may be 503)."""
    try:
        urllib3.request("GET", url.rstrip("/") + "/health", timeout=5, retries=False)
    except urllib3.exceptions.HTTPError:
        return False
    return True


def measure(url: str, *, users: int, submits: int, items: str = "1-300", api_key: str = "",
            drain_timeout: float = 120, request_timeout: float = 30, output: IO[Any] | None = None) -> dict[str, Any]:
    """One load test against the API at `url`: the results document. locust's own output goes to `output`."""
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        raw_out = Path(tmp) / "raw.json"
        cmd = [
            str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "--host", url.rstrip("/"), "--users", str(users),
            # Everyone at once: this is a concurrency test, not a ramp (locust warns above 100/s).
            "--spawn-rate", str(min(users, 100)),
            "--run-time", f"{int(MAX_LOAD_SECONDS + drain_timeout)}s",
            # Let in-flight requests finish when it stops: they are recorded, and the
            # server is not left writing to closed sockets (BrokenPipeError in its log).
            "--stop-timeout", f"{int(request_timeout) + 1}s",
            # Its failure count is ours to judge, not its.
            "--exit-code-on-error", "0", "--loglevel", "WARNING",
            "--submits", str(submits), "--items", items, "--drain-timeout", str(drain_timeout),
            "--request-timeout", str(request_timeout), "--raw-out", str(raw_out),
        ]
        # The key goes through the environment, not argv, so `ps` does not show it.
        proc = subprocess.Popen(cmd, cwd=names.ROOT, env={**os.environ, "LOAD_API_KEY": api_key},
                                stdout=output, stderr=output)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            # locust got the Ctrl-C too (same process group) and stops by itself, writing what it saw.
            code = proc.wait()
        if code != 0 or not raw_out.exists():
            raise LoadError(f"locust failed (exit status {code}) before recording anything")
        rec = Recording.from_raw(json.loads(raw_out.read_text()))
    config = {"url": url, "users": users, "submits": submits, "items": items, "api_key_sent": bool(api_key),
              "drain_timeout_s": drain_timeout}
    return summarise(rec, config)


def default_key() -> str:
    """make run's own key (toolkit/local_keys.py), if this state dir has one: make run enforces keys."""
    key = LocalKeys().keys().get(DEFAULT_CLIENT)
    return key.value if key else ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m measure.load.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=names.RUN_API_URL, help=f"the API (default {names.RUN_API_URL}, make run's)")
    p.add_argument("--api-key", default=os.environ.get("LOAD_API_KEY") or default_key(),
                   help="x-api-key (default: $LOAD_API_KEY, else make run's key in LOCAL_STATE_DIR)")
    p.add_argument("--users", type=int, default=32, help="concurrent clients")
    p.add_argument("--submits", type=int, default=2000, help="submits in total, across all clients")
    p.add_argument("--items", default="1-300", help="item ids to submit (make run's demo ads are 1-300)")
    p.add_argument("--drain-timeout", type=float, default=120, help="seconds to wait for tasks after the submits")
    p.add_argument("--request-timeout", type=float, default=30, help="seconds per HTTP request")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results as JSON")
    args = p.parse_args(argv)
    if args.users < 1 or args.submits < 1:
        p.error("--users and --submits must be at least 1")
    try:
        parse_items(args.items)
    except ValueError as err:
        p.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logs.setup()
    args = parse_args(argv)
    if not answers(args.url):
        log.error("nothing answers at %s: start the service first (`make run`), or pass URL=...", args.url)
        return 2
    log.info("%d clients, %d submits (item ids %s) against %s", args.users, args.submits, args.items, args.url)
    try:
        results = measure(args.url, users=args.users, submits=args.submits, items=args.items, api_key=args.api_key,
                          drain_timeout=args.drain_timeout, request_timeout=args.request_timeout)
    except LoadError as err:
        log.error("%s", err)
        return 2
    print(format_report(results), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("results: %s", args.out)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
