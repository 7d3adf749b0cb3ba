"""Each function's cold start loads only what it needs (issue 9).

Every Lambda function of the package imports app.py; what its first call
then imports is checked in a fresh interpreter, by module name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# function -> (module its handler imports, modules it must never load)
API = "chalicelib.api.handlers"
SCORER = "chalicelib.scoring.scorer"
MIGRATIONS = "chalicelib.operations.deploy_migrations"
BOUNDARIES = {
    "api_handler": (API, {SCORER, MIGRATIONS, "yoyo", "boto3"}),
    "score": (SCORER, {"pydantic", API, "chalicelib.api.requests", "yoyo", "boto3"}),
    "reconcile": ("chalicelib.operations.reconcile", {"pydantic", API, SCORER, "yoyo", "boto3"}),
    "migrate": (MIGRATIONS, {"pydantic", API, SCORER, "boto3"}),
}
NEVER = {"sklearn", "numpy", "scipy"}


def loaded_after(module: str) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        "import app\n"
        f"importlib.import_module({module!r})\n"
        "from chalicelib import deps\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("function", sorted(BOUNDARIES))
def test_a_function_does_not_import_what_only_another_needs(function: str) -> None:
    module, forbidden = BOUNDARIES[function]
    loaded = {name.split(".")[0] if not name.startswith("chalicelib") else name for name in loaded_after(module)}
    assert module in loaded
    assert not (forbidden | NEVER) & loaded, f"{function} loads {sorted((forbidden | NEVER) & loaded)}"
