"""deployment.zip with its modules' bytecode: a cold start that does not compile Python.

Lambda unpacks the zip into a read-only /var/task, where Python cannot write the
.pyc files it compiles: a zip of .py sources alone (what `chalice package` builds)
has every cold start compile every module it imports from source (Chalice,
pydantic, Powertools, botocore, the app). Measured in fresh interpreters, CPU time
(issue 24, docs/performance.md#where-the-time-goes): `import app` + the API's module
+ its first request's parse and reply + the model, 198-274 ms with bytecode and
751-856 ms without, under the same load.

The .pyc files are unchecked-hash (PEP 552): Python loads them without comparing the
source's mtime, which the zip does not keep reliably, and they are compiled by the
interpreter that packages, so only when it is the functions' runtime (the bytecode
format changes with every Python minor version; Chalice takes the runtime from
that interpreter, so they agree unless someone overrides it). Paths in tracebacks
are /var/task's, as the sources' would be.

Chalice copies chalicelib/ as it finds it, __pycache__ included: a checkout where tests
or `make run` ran holds timestamp-checked .pyc files of the developer's own Python. They
are dropped first and compiled again here, so the zip is the same on every machine.
"""

from __future__ import annotations

import compileall
import os
import py_compile
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

LAMBDA_TASK_ROOT = "/var/task"
# Fixed, so the zip (and the template's PackageHash) changes only when a module does.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def runtime() -> str:
    """The Lambda runtime this interpreter's bytecode is for: python3.11 and so on."""
    return f"python{sys.version_info.major}.{sys.version_info.minor}"


def add_bytecode(zip_path: Path, function_runtimes: set[str]) -> int:
    """Add each module's __pycache__/<name>.<tag>.pyc to `zip_path`; return how many.

    Nothing is added (0) when a function runs another Python than this one: its
    interpreter would ignore bytecode of another version anyway.
    """
    drop_bytecode(zip_path)
    if function_runtimes != {runtime()}:
        return 0
    with zipfile.ZipFile(zip_path) as zf:
        sources = [n for n in zf.namelist() if n.endswith(".py")]
        present = set(zf.namelist())
        with tempfile.TemporaryDirectory() as tmp:
            zf.extractall(tmp, members=sources)  # our own zip, just built
            compileall.compile_dir(tmp, quiet=2, ddir=LAMBDA_TASK_ROOT, workers=1,
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            compiled = _compiled(Path(tmp), present)
            with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as out:
                for name, path in compiled:
                    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    out.writestr(info, path.read_bytes())
    return len(compiled)


def is_bytecode(name: str) -> bool:
    return name.endswith((".pyc", ".pyo")) or "/__pycache__/" in f"/{name}"


def drop_bytecode(zip_path: Path) -> int:
    """Rewrite `zip_path` without the bytecode it holds (what Chalice copied from the working tree);
    return how many entries went. A zip cannot delete in place: the rest is copied, entry by entry."""
    with zipfile.ZipFile(zip_path) as zf:
        stale = [info for info in zf.infolist() if is_bytecode(info.filename)]
        if not stale:
            return 0
        kept = zip_path.with_suffix(".tmp")
        with zipfile.ZipFile(kept, "w") as out:
            for info in zf.infolist():
                if not is_bytecode(info.filename):
                    out.writestr(info, zf.read(info), compress_type=info.compress_type)
    kept.replace(zip_path)
    return len(stale)


def _compiled(root: Path, present: set[str]) -> list[tuple[str, Path]]:
    """(name in the zip, file) of every .pyc compileall wrote, in a stable order."""
    found: list[tuple[str, Path]] = []
    for dirpath, _, files in os.walk(root):
        for file in files:
            if file.endswith(".pyc"):
                path = Path(dirpath) / file
                name = path.relative_to(root).as_posix()
                if name not in present:
                    found.append((name, path))
    return sorted(found)


def function_runtimes(template: dict[str, Any]) -> set[str]:
    """The Runtime of every function of a SAM template (Globals' where a function has none)."""
    default = template.get("Globals", {}).get("Function", {}).get("Runtime")
    return {
        (res.get("Properties") or {}).get("Runtime", default)
        for res in template.get("Resources", {}).values()
        if res.get("Type") == "AWS::Serverless::Function"
    }
