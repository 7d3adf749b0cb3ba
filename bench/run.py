"""`make bench`: how fast is it, on this machine?

1. The model in pure Python: ads scored per second, single and in batches of 10.
2. The whole stack, started as `make run` starts it (own ports and state dir):
   N tasks submitted over HTTP; POST latency, submit -> completed latency
   (processed_at - created_at, from the database) and throughput.

Prints a table; asserts nothing (speed is reported, not tested).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bench_model(n: int) -> None:
    from chalicelib.model import load_model
    from training.dataset import generate_ads

    model = load_model()
    ads = [a.features() for a in generate_ads(n, 99)]
    t = time.perf_counter()
    for ad in ads:
        model.predict_proba([ad])
    single = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(0, n, 10):
        model.predict_proba(ads[i : i + 10])
    batched = n / (time.perf_counter() - t)
    print(f"model            {single:10.0f} ads/s one at a time, {batched:10.0f} ads/s in batches of 10")


def bench_stack(n: int) -> None:
    import psycopg2

    api_port, pg_port, aws_port = free_port(), free_port(), free_port()
    state = tempfile.mkdtemp(prefix="bench-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL")}
    env.update(LOCAL_STATE_DIR=state, EMBEDDED_PG_PORT=str(pg_port), AWS_ENDPOINT_URL=f"http://127.0.0.1:{aws_port}")
    log = Path(state) / "make-run.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "devstack.run", "--port", str(api_port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        while "ready in" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() - started > 240:
                raise SystemExit(f"stack did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        startup = time.monotonic() - started
        api = f"http://127.0.0.1:{api_port}"
        post_ms, ids = [], []
        t0 = time.monotonic()
        for i in range(n):
            req = urllib.request.Request(f"{api}/moderation/async_predict?item_id={i % 300 + 1}", data=b"", method="POST")
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=10) as resp:
                ids.append(json.loads(resp.read())["task_id"])
            post_ms.append((time.perf_counter() - t) * 1000)
        submit_s = time.monotonic() - t0
        url = f"postgresql://postgres@127.0.0.1:{pg_port}/moderation"
        while True:
            with psycopg2.connect(url) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM moderation_results WHERE status NOT IN ('completed','failed')")
                if cur.fetchone()[0] == 0:
                    break
            conn.close()
            time.sleep(0.2)
        drained_s = time.monotonic() - t0
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM processed_at - created_at) * 1000 FROM moderation_results")
            latency_ms = [float(r[0]) for r in cur.fetchall()]
        conn.close()
        print(f"make run start   {startup:10.1f} s (embedded Postgres + LocalStack host mode + chalice local + runner)")
        print(f"POST async       p50 {statistics.median(post_ms):7.1f} ms  p95 {pct(post_ms, 95):7.1f} ms  "
              f"({n} sequential requests in {submit_s:.1f} s)")
        print(f"submit->completed p50 {statistics.median(latency_ms):6.1f} ms  p95 {pct(latency_ms, 95):7.1f} ms  "
              f"max {max(latency_ms):7.1f} ms")
        print(f"throughput       {n / drained_s:10.1f} tasks/s end to end (one runner, one chalice local)")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--ads", type=int, default=5000)
    args = parser.parse_args()
    bench_model(args.ads)
    bench_stack(args.tasks)


if __name__ == "__main__":
    main()
