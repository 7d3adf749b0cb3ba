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

--profile overload (issue 14, "graceful under overload"): one phase per --phases
entry (256, then 1,024 clients), each: every client connects, then all submit
without pause for --duration seconds (30), then drain. Per phase: the submits'
statuses and p50/p95/p99, whether every 429/503 carried Retry-After, tasks
accepted and terminal. Exit status 1 when a phase misses the goal: a submit
answered other than 202/429/503, a 5xx other than 503 or no answer, a 429/503
without Retry-After (or without a JSON error body), submit p99 >= 5 s, an
accepted task not terminal after the drain. Results: build/load/overload.json.
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

from measure.load.report import Recording, format_overload, format_report, overload_problems, parse_items, summarise
from toolkit import logs, names, procs
from toolkit.local_keys import LocalKeys

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_OUT = names.BUILD_DIR / "load" / "results.json"
OVERLOAD_OUT = names.BUILD_DIR / "load" / "overload.json"
# The overload profile: clients per phase, and how long each phase submits.
OVERLOAD_PHASES = (256, 1024)
OVERLOAD_DURATION_S = 30.0
# Its drain: a thousand clients polling every half second would be a load of their own
# (the scorer shares the machine), so each waits longer between polls of an unfinished task.
OVERLOAD_DRAIN_POLL_S = 2.0
OVERLOAD_DRAIN_TIMEOUT_S = 300.0
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


def measure(url: str, *, users: int, submits: int = 0, duration: float = 0.0, items: str = "1-300",
            api_key: str = "", drain_timeout: float = 120, drain_poll: float = 0.5, request_timeout: float = 30,
            output: IO[Any] | None = None) -> dict[str, Any]:
    """One load test against the API at `url`: the results document. locust's own output goes to `output`.

    `submits` in all, each client polling its tasks between submits; or, with `duration`, every
    client submitting without pause for that long once all have connected (the overload profile)."""
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        raw_out = Path(tmp) / "raw.json"
        mode = (["--duration", str(duration), "--submit-only"] if duration > 0 else ["--submits", str(submits)])
        cmd = [
            str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "--host", url.rstrip("/"), "--users", str(users),
            # A concurrency test, not a ramp. With a budget, 100/s (locust warns above); with a
            # duration, everyone at once: the submits start when the last client has connected.
            "--spawn-rate", str(users if duration > 0 else min(users, 100)),
            "--run-time", f"{int(MAX_LOAD_SECONDS + drain_timeout)}s",
            # Let in-flight requests finish when it stops: they are recorded, and the
            # server is not left writing to closed sockets (BrokenPipeError in its log).
            "--stop-timeout", f"{int(request_timeout) + 1}s",
            # Its failure count is ours to judge, not its.
            "--exit-code-on-error", "0", "--loglevel", "WARNING",
            *mode, "--items", items, "--drain-timeout", str(drain_timeout), "--drain-poll", str(drain_poll),
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
    config = {"url": url, "users": users, "submits": submits if duration <= 0 else None, "duration_s": duration or None,
              "items": items, "api_key_sent": bool(api_key), "drain_timeout_s": drain_timeout,
              "drain_poll_s": drain_poll}
    return summarise(rec, config)


def overload(url: str, *, phases: Sequence[int], duration: float, items: str, api_key: str,
             drain_timeout: float, request_timeout: float) -> dict[str, Any]:
    """The overload profile: one measurement per phase, each judged against the goal."""
    results = []
    for users in phases:
        log.info("overload phase: %d clients submitting for %.0f s, then drain (%.0f s at most)", users, duration,
                 drain_timeout)
        phase = measure(url, users=users, duration=duration, items=items, api_key=api_key, drain_timeout=drain_timeout,
                        drain_poll=OVERLOAD_DRAIN_POLL_S, request_timeout=request_timeout)
        # The goal replaces the default judgement, for which any 503 is a failure.
        phase["problems"] = overload_problems(phase)
        phase["ok"] = not phase["problems"]
        print(format_report(phase, tolerated=("503",)), flush=True)
        results.append(phase)
    return {"profile": "overload", "ok": all(p["ok"] for p in results), "phases": results}


def default_key() -> str:
    """make run's own key (toolkit/local_keys.py), if this state dir has one: make run enforces keys."""
    try:
        return LocalKeys().own_key()
    except FileNotFoundError:
        return ""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m measure.load.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=names.RUN_API_URL, help=f"the API (default {names.RUN_API_URL}, make run's)")
    p.add_argument("--api-key", default=os.environ.get("LOAD_API_KEY") or default_key(),
                   help="x-api-key (default: $LOAD_API_KEY, else make run's key in LOCAL_STATE_DIR)")
    p.add_argument("--profile", choices=("default", "overload"), default="default",
                   help="default: --users clients, --submits in all; overload: see above")
    p.add_argument("--phases", default=",".join(map(str, OVERLOAD_PHASES)),
                   help="overload: concurrent clients of each phase, in order")
    p.add_argument("--duration", type=float, default=OVERLOAD_DURATION_S, help="overload: seconds each phase submits")
    p.add_argument("--users", type=int, default=32, help="concurrent clients")
    p.add_argument("--submits", type=int, default=2000, help="submits in total, across all clients")
    p.add_argument("--items", default="1-300", help="item ids to submit (make run's demo ads are 1-300)")
    p.add_argument("--drain-timeout", type=float, default=None,
                   help=f"seconds to wait for tasks after the submits (default 120; overload {OVERLOAD_DRAIN_TIMEOUT_S:.0f})")
    p.add_argument("--drain-poll", type=float, default=0.5,
                   help="seconds between polls of a task still unfinished once the submits are over (default 0.5); "
                        "more against a deployed LocalStack, whose event source mapping drains a few tasks a second "
                        "and where every poll is an API Gateway request and a Lambda invocation")
    p.add_argument("--request-timeout", type=float, default=30, help="seconds per HTTP request")
    p.add_argument("--out", type=Path, default=None, help=f"results as JSON (default {DEFAULT_OUT.relative_to(names.ROOT)}; "
                   f"overload {OVERLOAD_OUT.relative_to(names.ROOT)})")
    args = p.parse_args(argv)
    if args.users < 1 or args.submits < 1:
        p.error("--users and --submits must be at least 1")
    if args.drain_poll <= 0:
        p.error("--drain-poll must be positive")
    try:
        args.phases = [int(n) for n in args.phases.split(",")]
    except ValueError:
        p.error(f"--phases must look like 256,1024, got {args.phases!r}")
    if not args.phases or min(args.phases) < 1 or args.duration <= 0:
        p.error("--phases needs at least one count of clients, each at least 1, and --duration must be positive")
    overloading = args.profile == "overload"
    if args.drain_timeout is None:
        args.drain_timeout = OVERLOAD_DRAIN_TIMEOUT_S if overloading else 120.0
    if args.out is None:
        args.out = OVERLOAD_OUT if overloading else DEFAULT_OUT
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
    limit = procs.raise_open_file_limit()  # inherited by locust
    if (most := max(args.phases) if args.profile == "overload" else args.users) + 64 > limit:
        log.warning("%d clients need about as many open files; this process may open %d (ulimit -n)", most, limit)
    try:
        if args.profile == "overload":
            results = overload(args.url, phases=args.phases, duration=args.duration, items=args.items,
                               api_key=args.api_key, drain_timeout=args.drain_timeout,
                               request_timeout=args.request_timeout)
            print(format_overload(results), flush=True)
        else:
            log.info("%d clients, %d submits (item ids %s) against %s", args.users, args.submits, args.items, args.url)
            results = measure(args.url, users=args.users, submits=args.submits, items=args.items,
                              api_key=args.api_key, drain_timeout=args.drain_timeout, drain_poll=args.drain_poll,
                              request_timeout=args.request_timeout)
            print(format_report(results), flush=True)
    except LoadError as err:
        log.error("%s", err)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    log.info("results: %s", args.out)
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
