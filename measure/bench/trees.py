"""`make bench ARGS="--only trees"`: the gradient-boosted-trees model beside the linear one.

- cold: in fresh interpreters, the model's part of a cold start (import the runtime,
  read and parse the artifact, score the probe ads) for the packaged linear
  artifact and a GradientBoostingClassifier artifact trained here (training/train.py
  --family gbt); add the function's other parts from the `cold` section.
- batch: Scorer.handle at batch 100 on real PostgreSQL (SQS stubbed), as the `batch`
  section measures it, with each model; the trees must keep at least half the rate.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from measure.bench.batch import StubQueue, _merge, _timed, database, sqs_records, stdout_to_devnull
from toolkit import names, stats

TARGET_COLD_MS = 150.0
TARGET_KEEPS = 0.5
SIZE = 100
ROUNDS = 3

_COLD = """
import sys, time
t0 = time.perf_counter()
from pathlib import Path
from chalicelib.serving.model import PROBE_ADS, load_model
model = load_model(Path(sys.argv[1]))
model.predict_proba(PROBE_ADS)
print((time.perf_counter() - t0) * 1000)
"""


def steps(runs: int) -> int:
    return 1 + 2 * (runs + 1) + ROUNDS


def tree_artifact(out_dir: Path) -> Path:
    from training import train
    from training.options import DEFAULT_REVIEW_RECALL, DEFAULT_SEED, DEFAULT_TARGET_PRECISION

    artifact, _ = train.train(train.DEFAULT_N, DEFAULT_SEED, DEFAULT_TARGET_PRECISION, DEFAULT_REVIEW_RECALL, "gbt")
    path = out_dir / "model-gbt.json"
    path.write_bytes(train.render(artifact))
    return path


def _handler(scorer: Any) -> Any:
    """Scorer.handle as the batch section times it: how many messages failed."""
    return lambda batch: len(scorer.handle(batch)["batchItemFailures"])


def run(runs: int, messages: int, budget_s: float, out_dir: Path, progress: Any) -> dict[str, Any]:
    from chalicelib.queue import TaskQueue
    from chalicelib.scoring.scorer import Scorer
    from chalicelib.serving.model import DEFAULT_MODEL_PATH, load_model
    from chalicelib.storage.db import Database
    from chalicelib.storage.scoring import ScoringStore

    progress.set_description_str("trees: training a GradientBoostingClassifier artifact")
    models = {"linear": DEFAULT_MODEL_PATH, "trees": tree_artifact(out_dir)}
    progress.update(1)
    cold: dict[str, list[float]] = {name: [] for name in models}
    progress.set_description_str("trees: cold starts in fresh interpreters")
    for i in range(runs + 1):  # run 0 warms the page cache and writes .pyc files
        for name, path in models.items():
            out = subprocess.run([sys.executable, "-c", _COLD, str(path)], cwd=names.ROOT, capture_output=True,
                                 text=True, check=True).stdout
            if i:
                cold[name].append(float(out))
            progress.update(1)
    rates: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    with database() as url, stdout_to_devnull():
        store = ScoringStore(Database(url))
        scorers = {name: Scorer(store, cast(TaskQueue, StubQueue()), load_model(path), retry_base_seconds=5,
                                default_max_receive_count=3) for name, path in models.items()}
        for r in range(ROUNDS):  # interleaved rounds, as in the batch section
            progress.set_description_str(f"trees: scorer batch {SIZE}, round {r + 1}/{ROUNDS}")
            for name, scorer in scorers.items():
                rates[name].append(_timed(url, SIZE, messages // ROUNDS, budget_s / ROUNDS, sqs_records,
                                          _handler(scorer)))
            progress.update(1)
    batch = {name: _merge(SIZE, rounds) for name, rounds in rates.items()}
    keeps = batch["trees"]["msg_per_s"] / batch["linear"]["msg_per_s"]
    return {
        "models": {name: load_model(path).version for name, path in models.items()},
        "cold_ms": {name: stats.summary(v) for name, v in cold.items()},
        "batch100": batch,
        "trees_keeps": keeps,
        "targets": {"cold_ms": TARGET_COLD_MS, "keeps": TARGET_KEEPS},
        "note": "cold: the model's part of a cold start (import, parse, probe) in a fresh interpreter",
    }


def lines(r: dict[str, Any]) -> list[str]:
    out = [f"TREES: {r['models']['trees']} (GradientBoostingClassifier) beside {r['models']['linear']} (linear)"]
    for name in ("linear", "trees"):
        c, b = r["cold_ms"][name], r["batch100"][name]
        out.append(f"  {name:<7} model cold start p50 {c['p50']:.1f} ms (p95 {c['p95']:.1f})   "
                   f"scorer batch 100: {b['msg_per_s']:.0f} msg/s")
    ok = r["trees_keeps"] >= TARGET_KEEPS and r["cold_ms"]["trees"]["p50"] <= TARGET_COLD_MS
    out.append(f"  trees keep {r['trees_keeps']:.2f} of the linear rate (>= {TARGET_KEEPS}); "
               f"cold start <= {TARGET_COLD_MS:.0f} ms: {'ok' if ok else 'MISSED'}")
    return out
