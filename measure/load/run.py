"""`make load`: load-test the moderation API with locust, headless, then report.

1. locust (measure/load/locustfile.py) in a subprocess: --users concurrent clients
   submit --submits tasks in total (random item ids of --items) and poll the
   tasks they submitted; it stops once every submit is answered.
2. Drain: every accepted task not yet seen terminal is polled over HTTP until
   it is completed/failed, or --drain-timeout passes.
3. The figures (measure/load/report.py): requests and req/s, p50/p95/p99 per request
   kind, status counts, submit -> completed latency, tasks/s end to end;
   printed, and written as JSON to --out.

Exit status: 0 if no response was >= 500, every request got a response, and
every accepted task reached a terminal state; 1 otherwise; 2 if the test could
not run at all (nothing answers at --url, locust failed).

    python -m measure.load.run [--url http://127.0.0.1:8000] [--users 32] [--submits 2000] [--items 1-300]
                       [--api-key KEY | LOAD_API_KEY=KEY] [--out build/load/results.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from measure.load.report import MAX_ERROR_EXAMPLES, Recording, Sample, format_report, parse_items, summarise
from toolkit.names import BUILD_DIR, ROOT

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_OUT = BUILD_DIR / "load" / "results.json"
# Between drain rounds: tasks finish in tens of milliseconds when the scorer keeps up.
DRAIN_INTERVAL_SECONDS = 0.5
# Drain pollers: enough to re-read a few thousand tasks quickly, few enough not to load the API again.
MAX_DRAIN_WORKERS = 8


def say(text: str) -> None:
    print(f"[make load] {text}", flush=True)


# --------------------------------------------------------------------------
# HTTP, outside locust
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no response
    text: str
    ms: float
    start: float


# One keep-alive connection per drain thread: a new connection per request
# would measure connection set-up too, and behind a short listen backlog
# (`chalice local`'s own server: 5) bursts of connects wait for SYN retransmits.
_connections = threading.local()


def _connection(scheme: str, netloc: str, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
    """This thread's connection to the host, and whether it was already open (may be stale)."""
    key = (scheme, netloc)
    pool: dict[tuple[str, str], http.client.HTTPConnection] = _connections.__dict__.setdefault("pool", {})
    if key in pool:
        return pool[key], True
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    pool[key] = cls(netloc, timeout=timeout)
    return pool[key], False


def _drop(scheme: str, netloc: str) -> None:
    conn = _connections.__dict__.get("pool", {}).pop((scheme, netloc), None)
    if conn is not None:
        conn.close()


def get(url: str, *, api_key: str, timeout: float) -> Answer:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an HTTP URL: {url}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"x-api-key": api_key} if api_key else {}
    start, t = time.time(), time.perf_counter()
    while True:
        conn, reused = _connection(parts.scheme, parts.netloc, timeout)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out, closed while idle
            _drop(parts.scheme, parts.netloc)
            if reused:
                continue  # the server closed the idle connection: once more on a new one
            return Answer(0, repr(err), (time.perf_counter() - t) * 1000, start)
        if resp.will_close:
            _drop(parts.scheme, parts.netloc)
        return Answer(resp.status, text, (time.perf_counter() - t) * 1000, start)


def answers(url: str, timeout: float = 5) -> bool:
    """Whether anything HTTP answers at the API (any status: health may be 503)."""
    url = url.rstrip("/") + "/health"
    answered = get(url, api_key="", timeout=timeout).status != 0
    parts = urlsplit(url)
    _drop(parts.scheme, parts.netloc)  # the drain threads open their own
    return answered


# --------------------------------------------------------------------------
# The phases
# --------------------------------------------------------------------------


def run_locust(args: argparse.Namespace, raw_out: Path) -> int:
    """The load phase; locust's own exit status (its failure count is ours to judge, not its)."""
    cmd = [
        str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", args.url.rstrip("/"), "--users", str(args.users),
        # Everyone at once: this is a concurrency test, not a ramp (locust warns above 100/s).
        "--spawn-rate", str(min(args.users, 100)),
        # A safety net only: the run stops by itself once every submit is answered.
        "--run-time", f"{int(args.max_load_seconds)}s",
        # Let in-flight requests finish when it stops: they are recorded, and the
        # server is not left writing to closed sockets (BrokenPipeError in its log).
        "--stop-timeout", f"{int(args.request_timeout) + 1}s",
        "--exit-code-on-error", "0", "--loglevel", "WARNING",
        "--submits", str(args.submits), "--items", args.items, "--raw-out", str(raw_out),
        "--request-timeout", str(args.request_timeout),
    ]
    # The key goes through the environment, not argv, so `ps` does not show it.
    env = {**os.environ, "LOAD_API_KEY": args.api_key}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # locust got the Ctrl-C too (same process group) and stops by itself, writing what it saw.
        return proc.wait()


def drain(rec: Recording, url: str, *, api_key: str, timeout: float, workers: int, request_timeout: float) -> None:
    """Poll the accepted tasks that are not terminal yet, oldest first, until all are or time is up.

    Each round polls only the oldest few unfinished tasks (two per worker): the
    queue is roughly first in, first out, so while those are unfinished the
    younger ones are too, and re-reading the whole backlog every round would
    only take CPU from the scorer being measured (on LocalStack, each read is
    a Lambda invocation).
    """
    started = time.monotonic()
    base = url.rstrip("/") + "/moderation/moderation_result/"
    window = 2 * max(1, workers)
    pending = rec.not_terminal()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while pending and time.monotonic() - started < timeout:
            oldest = pending[:window]
            got = pool.map(lambda t: (t, get(f"{base}{t}", api_key=api_key, timeout=request_timeout)), oldest)
            for task_id, answer in got:
                record_drain_answer(rec, task_id, answer)
            pending = rec.not_terminal()
            if any(t in pending for t in oldest):
                time.sleep(DRAIN_INTERVAL_SECONDS)
    rec.drain_seconds = time.monotonic() - started


def record_drain_answer(rec: Recording, task_id: int, answer: Answer) -> None:
    rec.samples.append(Sample("drain", answer.status, answer.ms, answer.start))
    if (answer.status == 0 or answer.status >= 500) and len(rec.errors) < MAX_ERROR_EXAMPLES:
        rec.errors.append({"kind": "drain", "status": answer.status, "detail": answer.text[:500]})
    if answer.status == 200:
        try:
            body = json.loads(answer.text)
        except ValueError:
            return
        if isinstance(body, dict):
            rec.tasks[task_id] = body


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m measure.load.run", description=__doc__.splitlines()[0])
    p.add_argument("--url", default=DEFAULT_URL, help=f"the API (default {DEFAULT_URL}, make run's)")
    p.add_argument("--api-key", default=os.environ.get("LOAD_API_KEY", ""),
                   help="x-api-key for the deployed API (default: $LOAD_API_KEY)")
    p.add_argument("--users", type=int, default=32, help="concurrent clients")
    p.add_argument("--submits", type=int, default=2000, help="submits in total, across all clients")
    p.add_argument("--items", default="1-300", help="item ids to submit (make run's demo ads are 1-300)")
    p.add_argument("--drain-timeout", type=float, default=120, help="seconds to wait for tasks after the load phase")
    p.add_argument("--max-load-seconds", type=float, default=900, help="stop the load phase after this long regardless")
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
    args = parse_args(argv)
    if not answers(args.url):
        say(f"nothing answers at {args.url}: start the service first (`make run`), or pass URL=...")
        return 2
    say(f"{args.users} clients, {args.submits} submits (item ids {args.items}) against {args.url}")
    with tempfile.TemporaryDirectory(prefix="load-") as tmp:
        raw_out = Path(tmp) / "raw.json"
        started = time.monotonic()
        code = run_locust(args, raw_out)
        if code != 0 or not raw_out.exists():
            say(f"locust failed (exit status {code}) before recording anything")
            return 2
        rec = Recording.from_raw(json.loads(raw_out.read_text()))
    load_s = time.monotonic() - started
    say(f"load phase done in {load_s:.1f} s; draining {len(rec.not_terminal())} unfinished tasks "
        f"(up to {args.drain_timeout:.0f} s)")
    drain(rec, args.url, api_key=args.api_key, timeout=args.drain_timeout,
          workers=min(args.users, MAX_DRAIN_WORKERS), request_timeout=args.request_timeout)
    config = {"url": args.url, "users": args.users, "submits": args.submits, "items": args.items,
              "api_key_sent": bool(args.api_key), "drain_timeout_s": args.drain_timeout}
    results = summarise(rec, config)
    print(format_report(results), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results: {args.out}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
