"""Cold start per deployed function, in fresh processes.

A Lambda cold start runs the handler module's imports and whatever the first
invocation loads. Every Chalice function's handler is `app.<name>`, so each pays
`import app`; on top of that it imports its own module and (all but migrate)
loads the model. Each run is a new interpreter that times exactly that and
prints the figures; runs are interleaved across functions so a noisy
neighbour on the machine hits them all alike.

The yardstick is the way the model used to be served: `import sklearn` and
`pickle.load` of the fitted pipeline that training/train.py builds.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure.bench.common import OUT_DIR, ROOT, Progress, pct

# function -> (its own module, loads the model on first use). The one place to
# edit when a function's code moves.
FUNCTIONS: dict[str, tuple[str, bool]] = {
    "api_handler": ("chalicelib.api", True),
    "score": ("chalicelib.scoring", True),
    "reconcile": ("chalicelib.reconcile", True),
    "migrate": ("chalicelib.deploy_migrations", False),
}

PICKLE_PATH = OUT_DIR / "sklearn_pipeline.pkl"
TARGET_MEDIAN_MS = 150.0
TARGET_SPEEDUP = 5.0

# Runs in the fresh interpreter. Timed from the first line, so interpreter
# start-up (the same for both contenders) is reported apart, as wall time.
_APP_PROBE = """
import importlib, json, sys, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
importlib.import_module(sys.argv[1])
t2 = time.perf_counter()
if sys.argv[2] == "1":
    from chalicelib.model import load_model
    load_model()
t3 = time.perf_counter()
print(json.dumps({"import_app": t1 - t0, "import_module": t2 - t1, "load_model": t3 - t2, "total": t3 - t0}))
"""

_SKLEARN_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import pickle
import sklearn
with open(sys.argv[1], "rb") as f:
    pickle.load(f)
t1 = time.perf_counter()
print(json.dumps({"total": t1 - t0}))
"""


@dataclass
class Contender:
    """One thing cold-started N times: a function, or the sklearn pipeline."""

    name: str
    module: str | None = None
    skipped: str | None = None
    runs_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    parts_ms: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "module": self.module, "skipped": self.skipped}
        if self.runs_ms:
            out.update(
                # On a shared machine the minimum is the least disturbed run.
                min_ms=min(self.runs_ms),
                median_ms=statistics.median(self.runs_ms),
                p90_ms=pct(self.runs_ms, 90),
                wall_median_ms=statistics.median(self.wall_ms),
                parts_median_ms={k: statistics.median(v) for k, v in self.parts_ms.items()},
                runs_ms=self.runs_ms,
            )
        return out


def _probe(code: str, args: list[str]) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start probe failed ({args}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def _record(c: Contender, figures: dict[str, float], wall: float) -> None:
    c.runs_ms.append(figures["total"] * 1000)
    c.wall_ms.append(wall * 1000)
    for key, seconds in figures.items():
        if key != "total":
            c.parts_ms.setdefault(key, []).append(seconds * 1000)


def ensure_pickle(path: Path = PICKLE_PATH) -> Path:
    """The fitted scikit-learn pipeline, pickled once (training code, same data and seed)."""
    if not path.exists():
        import pickle

        from training.train import fit

        pipeline, _ = fit()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(pipeline, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return path


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def importtime(n: int = 10) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`import app` under python -X importtime (one run): the n biggest cumulative imports,
    and the n top-level packages whose own modules take longest (self time summed)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import app"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    rows: list[dict[str, Any]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        # The indentation of the name is its depth in the import tree.
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append({"module": name.strip(), "depth": depth, "self_ms": int(self_us) / 1000,
                     "cumulative_ms": int(cumulative_us) / 1000})
    packages: dict[str, float] = {}
    for r in rows:
        top = r["module"].split(".")[0]
        packages[top] = packages.get(top, 0.0) + r["self_ms"]
    by_package = [{"package": k, "self_ms": v} for k, v in sorted(packages.items(), key=lambda kv: kv[1], reverse=True)]
    return sorted(rows, key=lambda r: r["cumulative_ms"], reverse=True)[:n], by_package[:n]


def steps(runs: int) -> int:
    """Progress-bar steps this section takes."""
    return (runs + 1) * (len(FUNCTIONS) + 1) + 2


def run(runs: int, progress: Progress) -> dict[str, Any]:
    progress.set_description_str("cold start: pickling the sklearn pipeline")
    pickle_path = ensure_pickle()
    progress.update(1)

    functions = [Contender(name, module) for name, (module, _) in FUNCTIONS.items()]
    probes: list[tuple[Contender, str, list[str]]] = []
    for c in functions:
        assert c.module is not None
        if not _module_exists(c.module):
            c.skipped = f"module {c.module} does not exist (yet)"
            progress.update(runs + 1)
            continue
        probes.append((c, _APP_PROBE, [c.module, "1" if FUNCTIONS[c.name][1] else "0"]))
    sklearn = Contender("sklearn unpickle", str(pickle_path.relative_to(ROOT)))
    probes.append((sklearn, _SKLEARN_PROBE, [str(pickle_path)]))

    progress.set_description_str("cold start: fresh interpreters")
    # Run 0 warms the page cache and writes .pyc files; it is not counted.
    for i in range(runs + 1):
        for c, code, args in probes:
            figures, wall = _probe(code, args)
            if i > 0:
                _record(c, figures, wall)
            progress.update(1)

    progress.set_description_str("cold start: -X importtime")
    top, by_package = importtime()
    progress.update(1)

    baseline = statistics.median(sklearn.runs_ms)
    rows = []
    for c in functions:
        row = c.summary()
        if c.runs_ms:
            row["speedup_vs_sklearn"] = baseline / row["median_ms"]
            # The least disturbed runs of each: steadier than medians on a busy machine.
            row["speedup_vs_sklearn_min"] = min(sklearn.runs_ms) / row["min_ms"]
        rows.append(row)
    return {
        "runs": runs,
        "functions": rows,
        "sklearn": sklearn.summary(),
        "importtime_top": top,
        "importtime_by_package": by_package,
        "targets": {"median_ms": TARGET_MEDIAN_MS, "speedup_vs_sklearn": TARGET_SPEEDUP},
        "note": "in-process time from the first statement (interpreter start-up excluded; wall = whole process)",
    }


if __name__ == "__main__":  # `python -m measure.bench.cold`: this section alone, as JSON
    from measure.bench.common import NullProgress

    print(json.dumps(run(3, NullProgress()), indent=1))
