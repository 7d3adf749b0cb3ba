"""Cold start per deployed function, in fresh interpreters, against sklearn.

A Lambda cold start runs the handler module's imports and whatever the first
invocation loads. Every Chalice function's handler is `app.<name>`, so each pays
`import app`; on top of that it imports its own module and (all but migrate)
loads the model. Each run is a new interpreter that times exactly that.

The yardstick is the way the model used to be served: `import sklearn` and
`pickle.load` of the fitted pipeline that training/train.py builds.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from toolkit import names, stats

# The module each function's handler imports on its first call (app.py), and
# whether that call loads the model. The function names are .chalice/config.json's.
FIRST_CALL: dict[str, tuple[str, bool]] = {
    "api_handler": ("chalicelib.api", True),
    "score": ("chalicelib.scoring", True),
    "reconcile": ("chalicelib.reconcile", True),
    "migrate": ("chalicelib.deploy_migrations", False),
}
TARGET_MEDIAN_MS = 150.0
TARGET_SPEEDUP = 5.0

# Timed from the first statement, so interpreter start-up (the same for both
# contenders) is left out. Prints the parts in seconds.
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
print(json.dumps({"total": time.perf_counter() - t0}))
"""


def _probe(code: str, *args: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=names.ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start probe failed ({args}):\n{proc.stderr[-2000:]}")
    return {k: v * 1000 for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def sklearn_pickle(out_dir: Path) -> Path:
    """The fitted scikit-learn pipeline, pickled once (training code, same data and seed)."""
    path = out_dir / "sklearn_pipeline.pkl"
    if not path.exists():
        from training.train import fit

        pipeline, _ = fit()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def steps(runs: int) -> int:
    return 1 + (runs + 1) * (len(names.functions()) + 1)


def run(runs: int, out_dir: Path, progress: Any) -> dict[str, Any]:
    progress.set_description_str("cold start: pickling the sklearn pipeline")
    pkl = sklearn_pickle(out_dir)
    progress.update(1)
    probes: dict[str, tuple[str, ...]] = {f: (_APP_PROBE, FIRST_CALL[f][0], str(int(FIRST_CALL[f][1])))
                                          for f in names.functions()}
    probes["sklearn"] = (_SKLEARN_PROBE, str(pkl))
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in probes}
    progress.set_description_str("cold start: fresh interpreters")
    # Run 0 warms the page cache and writes .pyc files; it is not counted.
    for i in range(runs + 1):
        for name, (code, *args) in probes.items():
            figures = _probe(code, *args)
            if i:
                samples[name].append(figures)
            progress.update(1)
    sklearn = [s["total"] for s in samples.pop("sklearn")]
    functions = []
    for name, runs_ms in samples.items():
        totals = [s["total"] for s in runs_ms]
        functions.append({
            "name": name,
            "module": FIRST_CALL[name][0],
            "total_ms": stats.summary(totals),
            "parts_p50_ms": {part: stats.percentile([s[part] for s in runs_ms], 50) for part in runs_ms[0] if part != "total"},
            "speedup_vs_sklearn": stats.percentile(sklearn, 50) / stats.percentile(totals, 50),
        })
    return {
        "runs": runs,
        "functions": functions,
        "sklearn": {"what": "import sklearn + pickle.load of the fitted pipeline", "total_ms": stats.summary(sklearn)},
        "targets": {"median_ms": TARGET_MEDIAN_MS, "speedup_vs_sklearn": TARGET_SPEEDUP},
        "note": "in-process time from the first statement (interpreter start-up excluded)",
    }
