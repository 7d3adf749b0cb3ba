"""`make bench`: how fast is ad-moderation on this machine, and where does the time go?

One run, three sections (pick with --only):

  cold   cold start per deployed function in fresh interpreters, against
         loading the scikit-learn pipeline the usual way (measure/bench/cold.py)
  batch  Scorer.handle throughput at batch 1, 10, 100 on real PostgreSQL with
         SQS stubbed, PostgreSQL alone as the ceiling, cost of logging, and a
         cProfile of batch 100 (measure/bench/batch.py)
  e2e    one `make run` stack: raw SQS rate of its LocalStack, 32 concurrent
         HTTP clients end to end, and py-spy samples of chalice local and the
         runner under that load (measure/bench/e2e.py, measure/bench/sampling.py)

Prints a table, writes build/bench/results.json and build/bench/bench.png.
Reports; asserts nothing. Figures on a shared machine are indicative.

  make bench                       # everything, a few minutes
  make bench ARGS="--quick"        # smaller runs, about a minute and a half
  make bench ARGS="--only batch"   # one section (or several: cold,e2e)
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from measure.bench import batch, cold, e2e, report
from measure.bench.common import OUT_DIR, ROOT, Progress

SECTIONS = ("cold", "batch", "e2e")

# (full run, --quick)
DEFAULTS: dict[str, tuple[float, float]] = {
    "runs": (7, 3),  # cold starts per function
    "messages": (1000, 300),  # messages per batch size (at least 10 batches)
    "budget": (5.0, 2.0),  # seconds a batch-size run may take before it stops early
    "tasks": (1000, 300),  # e2e tasks
    "raw_messages": (1000, 300),  # raw SQS messages
    "profile_tasks": (1000, 300),  # e2e tasks under py-spy (enough GIL samples to read)
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m measure.bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller runs (defaults in brackets below)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    for name, (full, quick) in DEFAULTS.items():
        kind = float if name == "budget" else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=f"default {full} [{quick}]")
    args = parser.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            kind = float if name == "budget" else int
            setattr(args, name, kind(quick if args.quick else full))
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def _git(*args: str) -> str:
    try:
        # rstrip only: porcelain lines start with a status column that may be a space.
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _commit() -> tuple[str, list[str]]:
    """The commit measured, and the tracked files that differ from it (what was really measured)."""
    changed = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines()]
    sha = _git("rev-parse", "--short", "HEAD") or "unknown"
    return sha + ("+changes" if changed else ""), changed


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    commit, changed = _commit()
    return {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "uncommitted_changes": changed,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "options": {k: getattr(args, k) for k in ("quick", "sections", *DEFAULTS)},
        "skipped_sections": [s for s in SECTIONS if s not in args.sections],
    }


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")


def run_sections(args: argparse.Namespace, progress: Progress) -> tuple[dict[str, Any], dict[str, str]]:
    """Each section on its own: one that fails is reported, the others still run."""
    jobs = {
        "cold": lambda: cold.run(args.runs, progress),
        "batch": lambda: batch.run(args.messages, args.budget, progress),
        "e2e": lambda: e2e.run(args.tasks, args.raw_messages, args.profile_tasks, progress),
    }
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in SECTIONS:
        if name not in args.sections:
            continue
        try:
            results[name] = jobs[name]()
        except Exception as exc:  # noqa: BLE001 - report it and carry on with the next section
            errors[name] = f"{type(exc).__name__}: {exc}"
            (OUT_DIR / f"{name}-error.txt").write_text(traceback.format_exc(), encoding="utf-8")
    return results, errors


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    steps = {"cold": cold.steps(args.runs), "batch": batch.steps(), "e2e": e2e.steps()}
    started = time.monotonic()
    meta = _meta(args)
    bar = _progress(sum(steps[s] for s in args.sections))
    try:
        results, errors = run_sections(args, bar)
    finally:
        bar.close()
    meta["seconds"] = time.monotonic() - started
    everything: dict[str, Any] = {"meta": meta, **results}
    if errors:
        everything["errors"] = errors
    json_path, png_path = OUT_DIR / "results.json", OUT_DIR / "bench.png"
    report.write_json(everything, json_path)
    report.write_chart(everything, png_path)
    print(report.render(everything))
    print(f"wrote {report.relative(json_path)} and {report.relative(png_path)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
