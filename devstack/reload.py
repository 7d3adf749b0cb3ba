"""`make run` reloads the app when app.py or a file under chalicelib/ changes.

The API server and the SQS runner are restarted with the new code; PostgreSQL and
LocalStack keep running, with their data. The new code is first imported in a fresh
interpreter: if that fails (a syntax error, a broken import), the running app stays
as it was and the log says why; saving a fix reloads it.

watchfiles polls just these files (about 50; `stat` only) rather than using inotify:
a single file such as app.py, replaced by an editor's save-by-rename, is still seen,
and nothing of .local/ or the virtualenvs is ever looked at.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import watchfiles

from toolkit import logs, names, procs

log = logs.get("reload")
logs.get("watchfiles").setLevel(logging.WARNING)  # its "1 change detected": ours says which
POLL_MS = 300  # how often the files are looked at
CHECK_TIMEOUT_S = 60.0


def watched(app_dir: Path) -> list[Path]:
    """What is watched: the code Lambda runs (app.py, chalicelib/)."""
    return [app_dir / "app.py", app_dir / "chalicelib"]


# What make package writes into chalicelib/ (infra/package.py; git-ignored): not code, and a test
# packaging beside a make run must not restart its app.
GENERATED = ("migrations_sql", "certs")


class _CodeFilter(watchfiles.DefaultFilter):
    """Files only. The poller also reports a folder whose entries changed: the `__pycache__/` that
    Python creates in a package on its first import (the restarted app's own, or the import check's)
    would reload the app again, right after a reload or a first start."""

    def __init__(self) -> None:
        super().__init__(ignore_dirs=(*watchfiles.DefaultFilter.ignore_dirs, *GENERATED))

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        return super().__call__(change, path) and not os.path.isdir(path)


_code_filter = _CodeFilter()


class Watcher:
    """Changes under `watched(app_dir)`, collected by a thread; `changed()` takes them."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = app_dir
        self._stop = threading.Event()
        self._changes: queue.SimpleQueue[set[str]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._watch, name="reload-watcher", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        paths = [p for p in watched(self.app_dir) if p.exists()]
        for changes in watchfiles.watch(*paths, stop_event=self._stop, force_polling=True, poll_delay_ms=POLL_MS,
                                        debounce=400, raise_interrupt=False, watch_filter=_code_filter):
            self._changes.put({path for _, path in changes})

    def changed(self) -> list[str]:
        """The files changed since the last call (relative to the app dir), sorted; [] if none."""
        found: set[str] = set()
        while not self._changes.empty():
            found |= self._changes.get_nowait()
        return sorted(_relative(p, self.app_dir) for p in found)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return path


# app.py imports some of chalicelib lazily, the API server imports other modules itself: all of them, then.
_IMPORT_ALL = ("import importlib, pkgutil, app, chalicelib\n"
               "for m in pkgutil.walk_packages(chalicelib.__path__, 'chalicelib.'): importlib.import_module(m.name)")


def import_error(app_dir: Path, env: Mapping[str, str]) -> str | None:
    """None if app.py and every module of chalicelib/ import in a fresh interpreter (half a second), else the
    end of the error."""
    try:
        run = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=app_dir, env=dict(env), capture_output=True,
                             text=True, timeout=CHECK_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"importing the app took more than {CHECK_TIMEOUT_S:.0f} s"
    if run.returncode == 0:
        return None
    return "\n".join((run.stderr or run.stdout).strip().splitlines()[-6:])


class Services:
    """The processes that run the app's code (the API, the runner), restartable as one."""

    def __init__(self, commands: list[tuple[list[str], str | None, float]], env: Mapping[str, str]) -> None:
        self.commands, self.env = commands, env
        self.running: list[procs.Process | None] = [None] * len(commands)

    def start(self) -> None:
        """Start each in turn; one that does not come up raises StartError (the others stay up)."""
        for i, (command, ready, timeout) in enumerate(self.commands):
            self.running[i] = procs.start([sys.executable, "-m", *command], ready=ready, env=self.env, timeout=timeout,
                                          cwd=names.app_dir())

    def stop(self) -> None:
        """The last started first: the runner finishes its batch, then the API stops."""
        for i in reversed(range(len(self.running))):
            if (service := self.running[i]) is not None:
                procs.stop(service)
                self.running[i] = None

    def exited(self) -> str | None:
        """The module name of a service that stopped by itself, if any."""
        for service in self.running:
            if service is not None and not service.running():
                return service.command_parts[2]
        return None

    def reload(self, changed: list[str]) -> bool:
        """Restart them with the new code if it imports; else leave them as they are. True if restarted."""
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        log.info("%s changed; importing the new code", shown)
        if error := import_error(names.app_dir(), self.env):
            log.error("the new code does not import; the running app is unchanged (save a fix to reload):\n%s",
                      error)
            return False
        self.stop()
        try:
            self.start()
        except procs.StartError as err:
            self.stop()
            log.error("the new code did not start; the API and the runner are down until the next change:\n%s",
                      err)
            return False
        log.info("the API and the runner run the new code (PostgreSQL and LocalStack kept running)")
        return True
