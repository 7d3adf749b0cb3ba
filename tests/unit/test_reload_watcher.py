"""devstack/reload.py's watcher on a real folder (watchfiles polling it): a saved file under chalicelib/
is a change; the bytecode Python writes beside the code, and the folders it creates for it, are not."""

from __future__ import annotations

import time
from pathlib import Path

from devstack.reload import Watcher


def wait_for_changes(watcher: Watcher, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := watcher.changed():
            time.sleep(1.0)  # and whatever the same polls saw
            return found + watcher.changed()
        time.sleep(0.1)
    return []


def test_a_saved_module_is_a_change_and_the_bytecode_python_writes_is_not(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import chalicelib.pkg\n")
    package = tmp_path / "chalicelib" / "pkg"
    package.mkdir(parents=True)
    (tmp_path / "chalicelib" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("X = 1\n")
    watcher = Watcher(tmp_path)
    try:
        # Watching once a save is seen.
        deadline = time.monotonic() + 10
        while not watcher.changed() and time.monotonic() < deadline:
            (package / "__init__.py").write_text(f"X = {time.monotonic()}\n")
            time.sleep(0.5)
        assert wait_for_changes(watcher, 2) in ([], ["chalicelib/pkg/__init__.py"])  # the loop's last save

        # What a first import writes: a __pycache__/ folder in each package, .pyc files in it.
        for folder in (tmp_path, tmp_path / "chalicelib", package):
            (folder / "__pycache__").mkdir()
            (folder / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00" * 16)
        (package / "helpers.py").write_text("Y = 2\n")

        assert wait_for_changes(watcher) == ["chalicelib/pkg/helpers.py"]
    finally:
        watcher.close()
