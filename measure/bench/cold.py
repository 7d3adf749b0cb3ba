"""Cold start per deployed function, in fresh interpreters, against sklearn.

A Lambda cold start runs the handler module's imports and whatever the first
invocation loads. Every Chalice function's handler is `app.<name>`, so each pays
`import app`; on top of that it imports its own module and (all but migrate)
loads the model. Each run is a new interpreter that times exactly that.

The yardstick is the way the model used to be served: `import sklearn` and
`pickle.load` of the fitted pipeline that training/train.py builds.

With the model registry (MODEL_BUCKET set), the model comes from S3 instead of
the package: the functions that score read aliases.json, fetch the version it
names, check its sha256, load it and score the probe ads (chalicelib/serving/aliases.py).
Those runs use a LocalStack of their own, whose registry holds the packaged
model as another version (so a silent fall-back to the package would show),
live alone and live + shadow (the scorer then fetches and loads two versions).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from toolkit import names, procs, stats

# The module each function's handler imports on its first call (app.py), and
# whether that call loads the model. The function names are .chalice/config.json's.
FIRST_CALL: dict[str, tuple[str, bool]] = {
    "api_handler": ("chalicelib.api.handlers", True),
    "score": ("chalicelib.scoring.scorer", True),
    "reconcile": ("chalicelib.operations.reconcile", True),
    "migrate": ("chalicelib.operations.deploy_migrations", False),
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
    from chalicelib.serving.model import load_model
    load_model()
t3 = time.perf_counter()
print(json.dumps({"import_app": t1 - t0, "import_module": t2 - t1, "load_model": t3 - t2, "total": t3 - t0}))
"""
_REGISTRY_PROBE = """
import importlib, json, sys, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
importlib.import_module(sys.argv[1])
t2 = time.perf_counter()
from chalicelib import deps
if sys.argv[2] == "api_handler":
    deps.aws_client("sqs")  # the SQS client the API's first submit builds (deps.queue() builds it on first use)
else:
    deps.queue()  # the scorer's clean first batch builds none: its MAX_RECEIVE_COUNT comes from the template
t3 = time.perf_counter()
models = deps.models(sys.argv[2], shadow=True).snapshot()
t4 = time.perf_counter()
assert models.live.version == "bench-live", models.live.version
assert (models.shadow.version if models.shadow else None) == (sys.argv[3] or None), models.shadow
print(json.dumps({"import_app": t1 - t0, "import_module": t2 - t1, "sqs_client": t3 - t2, "registry_model": t4 - t3,
                  "total": t4 - t0}))
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


def with_bytecode(env: dict[str, str] | None, cache_dir: Path) -> dict[str, str]:
    """The probes' environment with bytecode cached in `cache_dir`, whatever the caller's says
    (PYTHONDONTWRITEBYTECODE would have every run compile every module): the packaged zip ships
    every module's bytecode (infra/bytecode.py), so a Lambda cold start loads, not compiles."""
    out = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**out, "PYTHONPYCACHEPREFIX": str(cache_dir)}


def _probe(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=names.ROOT, capture_output=True, text=True, check=False,
                          env=env)
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


# The registry runs: (label, function, with a shadow version).
REGISTRY_RUNS = (("api_handler + registry", "api_handler", False), ("score + registry", "score", False),
                 ("score + registry + shadow", "score", True))


def steps(runs: int) -> int:
    return 2 + (runs + 1) * (len(names.functions()) + 1 + len(REGISTRY_RUNS))


@contextlib.contextmanager
def registries() -> Iterator[dict[bool, dict[str, str]]]:
    """A LocalStack of its own with two registries (live; live + shadow): the probes'
    environment for each."""
    from chalicelib.serving.model import DEFAULT_MODEL_PATH
    from chalicelib.serving.registry import LIVE, SHADOW
    from toolkit.localstack import HostLocalStack
    from toolkit.registry import Registry

    root = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    stack = HostLocalStack(data_dir=root, endpoint=names.endpoint(procs.free_port()))
    stack.start()
    try:
        env = {**os.environ, **names.local_aws_env(stack.endpoint), "DATABASE_URL": "postgresql://unused/cold-start"}
        creds = names.LOCAL_CREDENTIALS
        s3 = boto3.client("s3", endpoint_url=stack.endpoint, region_name=names.REGION,
                          aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
        packaged = json.loads(DEFAULT_MODEL_PATH.read_bytes())
        found = {}
        for shadow in (False, True):
            registry = Registry(s3, f"bench-registry-{'shadow' if shadow else 'live'}")
            registry.ensure_bucket()
            for version in ("bench-live", "bench-shadow") if shadow else ("bench-live",):
                published, _ = registry.publish_artifact(json.dumps(packaged | {"version": version}).encode(),
                                                         source="bench", by="bench")
                registry.promote(SHADOW if version == "bench-shadow" else LIVE, published.version, "bench")
            found[shadow] = {**env, "MODEL_BUCKET": registry.bucket}
        yield found
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


def _summary(name: str, module: str, runs_ms: list[dict[str, float]], sklearn: list[float]) -> dict[str, Any]:
    totals = [s["total"] for s in runs_ms]
    return {
        "name": name,
        "module": module,
        "total_ms": stats.summary(totals),
        "parts_p50_ms": {part: stats.percentile([s[part] for s in runs_ms], 50) for part in runs_ms[0] if part != "total"},
        "speedup_vs_sklearn": stats.percentile(sklearn, 50) / stats.percentile(totals, 50),
    }


def run(runs: int, out_dir: Path, progress: Any) -> dict[str, Any]:
    progress.set_description_str("cold start: pickling the sklearn pipeline")
    pkl = sklearn_pickle(out_dir)
    progress.update(1)
    progress.set_description_str("cold start: a LocalStack for the registry runs")
    with registries() as envs:
        progress.update(1)
        probes: dict[str, tuple[tuple[str, ...], dict[str, str] | None]] = {
            f: ((_APP_PROBE, FIRST_CALL[f][0], str(int(FIRST_CALL[f][1]))), None) for f in names.functions()}
        probes["sklearn"] = ((_SKLEARN_PROBE, str(pkl)), None)
        for label, function, shadow in REGISTRY_RUNS:
            probes[label] = ((_REGISTRY_PROBE, FIRST_CALL[function][0], function, "bench-shadow" if shadow else ""),
                             envs[shadow])
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in probes}
        progress.set_description_str("cold start: fresh interpreters")
        # Run 0 warms the page cache and writes .pyc files (with_bytecode); it is not counted.
        for i in range(runs + 1):
            for name, ((code, *args), env) in probes.items():
                figures = _probe(code, *args, env=with_bytecode(env, out_dir / "pycache"))
                if i:
                    samples[name].append(figures)
                progress.update(1)
    sklearn = [s["total"] for s in samples.pop("sklearn")]
    registry = {label: samples.pop(label) for label, _, _ in REGISTRY_RUNS}
    functions = [_summary(name, FIRST_CALL[name][0], runs_ms, sklearn) for name, runs_ms in samples.items()]
    return {
        "runs": runs,
        "functions": functions,
        "registry": [_summary(label, FIRST_CALL[function][0], registry[label], sklearn)
                     for label, function, _ in REGISTRY_RUNS],
        "registry_note": "MODEL_BUCKET set, against LocalStack S3: the SQS client the function's first call builds "
                         "(client: the API's first submit does; the scorer's clean first batch does not, it builds "
                         "one only to back off, retry or park a message); then model = aliases.json + the version(s) "
                         "fetched (signed GETs), "
                         "sha256 checked, loaded, probe ads scored",
        "sklearn": {"what": "import sklearn + pickle.load of the fitted pipeline", "total_ms": stats.summary(sklearn)},
        "targets": {"median_ms": TARGET_MEDIAN_MS, "speedup_vs_sklearn": TARGET_SPEEDUP},
        "note": "in-process time from the first statement (interpreter start-up excluded), with bytecode cached "
                "as the package ships it (infra/bytecode.py)",
    }
