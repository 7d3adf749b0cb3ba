"""`make bench`: how fast is ad-moderation on this machine?

One run, three sections (pick with --only):

  cold   cold start per deployed function in fresh interpreters, against
         loading the scikit-learn pipeline the usual way (measure/bench/cold.py)
  trees  the gradient-boosted-trees model beside the linear one: cold start, batch-100 rate
         (measure/bench/trees.py)
  batch  Scorer.handle throughput at batch 1, 10, 100 on real PostgreSQL with
         SQS stubbed, and PostgreSQL alone as the ceiling (measure/bench/batch.py)
  e2e    one `make run` stack: raw SQS rate of its LocalStack, and `make load`
         with 32 concurrent clients end to end (measure/bench/e2e.py)
  webhooks  the outbox's cost at batch 100, and on `make run` with a verifying receiver:
         completion -> webhook p50/p99, deliveries/s, every completion delivered through
         60 s of 503 (measure/bench/webhooks.py; issue 22)

Whenever batch ran: the monthly bill at 100 k, 1 M and 10 M tasks from what was
measured and the price table measure/bench/prices.json (measure/bench/cost.py).

Prints a table, writes build/bench/results.json and build/bench/bench.png.
Reports; asserts nothing. Figures on a shared machine are indicative.

  make bench                          # everything, a few minutes
  make bench ARGS="--quick"           # smaller runs
  make bench ARGS="--only cold,batch" # some sections
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from measure.bench import batch, cold, cost, e2e, report, trees, webhooks
from toolkit import logs, names

OUT_DIR = names.BUILD_DIR / "bench"
SECTIONS = ("cold", "batch", "e2e", "trees", "webhooks")
# option: (full run, --quick)
DEFAULTS: dict[str, tuple[float, float]] = {
    "runs": (7, 3),  # cold starts per function
    "messages": (1000, 300),  # messages per batch size (at least 10 batches)
    "budget": (5.0, 2.0),  # seconds a batch-size run may take before it stops early
    "tasks": (1000, 300),  # e2e tasks
    "raw_messages": (1000, 300),  # raw SQS messages
    "webhook_tasks": (10000, 1000),  # completions pushed to the bench's receiver
}
log = logs.get("bench")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m measure.bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (defaults in brackets below)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    for name, (full, quick) in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(full), help=f"default {full} [{quick}]")
    args = parser.parse_args(argv)
    for name, defaults in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, type(defaults[0])(defaults[args.quick]))
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(args.sections) - set(SECTIONS):
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=names.ROOT, capture_output=True, text=True, check=False).stdout.strip()

    changed = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": (git("rev-parse", "--short", "HEAD") or "unknown") + ("+changes" if changed else ""),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "options": {k: getattr(args, k) for k in ("quick", "sections", *DEFAULTS)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    logs.setup()
    logging.getLogger("yoyo").setLevel(logging.WARNING)  # a line per migration step of every scratch database
    args = parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    jobs = {
        "cold": (cold.steps(args.runs), lambda bar: cold.run(args.runs, OUT_DIR, bar)),
        "batch": (batch.steps(), lambda bar: batch.run(args.messages, args.budget, bar)),
        "e2e": (e2e.steps(), lambda bar: e2e.run(args.tasks, args.raw_messages, OUT_DIR, bar)),
        "trees": (trees.steps(args.runs), lambda bar: trees.run(args.runs, args.messages, args.budget, OUT_DIR, bar)),
        "webhooks": (webhooks.steps(), lambda bar: webhooks.run(args.messages, args.webhook_tasks, OUT_DIR, bar)),
    }
    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(args)}
    errors: dict[str, str] = {}
    with tqdm(total=sum(jobs[s][0] for s in args.sections), unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        for name in args.sections:
            try:
                results[name] = jobs[name][1](bar)
            except Exception as exc:  # noqa: BLE001 - report it and carry on with the next section
                errors[name] = f"{type(exc).__name__}: {exc}"
                (OUT_DIR / f"{name}-error.txt").write_text(traceback.format_exc(), encoding="utf-8")
    if "batch" in results:  # the bill, from what was measured (and e2e's latencies if it ran)
        try:
            results["cost"] = cost.run(results)
        except Exception as exc:  # noqa: BLE001 - report it like a section
            errors["cost"] = f"{type(exc).__name__}: {exc}"
            (OUT_DIR / "cost-error.txt").write_text(traceback.format_exc(), encoding="utf-8")
    results["meta"]["seconds"] = time.monotonic() - started
    if errors:
        results["errors"] = errors
    json_path, png_path = OUT_DIR / "results.json", OUT_DIR / "bench.png"
    report.write_json(results, json_path)
    report.write_chart(results, png_path)
    print(report.render(results))
    log.info("wrote %s and %s", json_path.relative_to(names.ROOT), png_path.relative_to(names.ROOT))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
