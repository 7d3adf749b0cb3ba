"""Processes of the local stack: start, wait until ready, stop; who holds a port or a pid file.

mirakuru starts each server in a process group of its own (Ctrl-C in the terminal
reaches only `make run`, which stops its children in order), waits until it is
ready, stops the whole group (SIGKILL after a timeout) and, at exit, kills what it
started and nobody stopped: a crashed test run leaves no server holding a port.
psutil names who holds a port and finds a server another process started.

Which processes are "what it started" is told by a marker in their environment
(mirakuru_uuid). mirakuru's own marker is "<pid>:<uuid4>", and at exit every
interpreter that imported mirakuru SIGKILLs each process of the machine whose marker
*contains* its pid as a substring: pid 2345 exiting kills the servers of pid 12345,
or of any marker whose uuid holds the digits 2345. With pids wrapping at 32,768 and
many short-lived processes (make run refusing to start, deploy-localstack up/stop,
xdist workers finishing) that killed another test's stack now and then. So ours
carry a marker with no decimal digit at all (no pid can be found in it), and the
exit clean-up is ours: exactly the markers of this pid, never a substring match.
"""

from __future__ import annotations

import atexit
import os
import resource
import socket
import subprocess
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import Any

import mirakuru.base
import psutil
from mirakuru import Executor, HTTPExecutor, SimpleExecutor
from mirakuru.base import ENV_UUID
from mirakuru.exceptions import ExecutorError, ProcessFinishedWithError

from toolkit import logs
from toolkit.names import HOST, ROOT

log = logs.get("procs")


class StartError(RuntimeError):
    """A process exited, timed out or found its port taken before it was ready; ends with its log."""


# Digits written as letters: a marker holds no decimal digit, so no pid is ever a substring of it.
_NO_DIGITS = str.maketrans("0123456789", "ghijklmnop")


def marker_prefix(pid: int) -> str:
    """The start of the marker of every process the executors of process `pid` start."""
    return f"devstack-{str(pid).translate(_NO_DIGITS)}-"


# mirakuru's exit hook kills by substring (see the module's docstring); ours below kills by prefix.
atexit.unregister(mirakuru.base.cleanup_subprocesses)


@atexit.register
def kill_leftovers() -> None:
    """At exit: SIGKILL what this interpreter's executors started and nobody stopped, and nothing else."""
    prefix = marker_prefix(os.getpid())
    for proc in psutil.process_iter():
        with suppress(psutil.Error):
            if proc.environ().get(ENV_UUID, "").startswith(prefix):
                proc.kill()


class Process(SimpleExecutor):
    """A process `start()` started (ready at once, unless a subclass waits for something)."""

    # Without mirakuru's marker, and not killed when its executor goes: outlives this interpreter.
    detached = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Unique, and holding no digit (mirakuru's is "<pid>:<uuid4>"); its own kill
        # (_kill_all_kids) looks for the whole of it.
        self._uuid = marker_prefix(os.getpid()) + uuid.uuid4().hex.translate(_NO_DIGITS)

    @property
    def envvars(self) -> dict[str, str]:
        # mirakuru gives a child os.environ plus `envvars`; ours get exactly what they are
        # given, so a variable can be left out (our virtualenv's, for LocalStack's Python).
        # A detached process carries no marker, not even one inherited from its starter.
        if self.detached:
            return {k: v for k, v in self._envvars.items() if k != ENV_UUID}
        return {**self._envvars, ENV_UUID: self._uuid}

    def __del__(self) -> None:
        if not self.detached:
            super().__del__()


class _HTTPService(Process, HTTPExecutor):
    """Ready once its URL answers, any status (a health check may say 503 while things settle)."""


class _Until(Process, Executor):
    """Ready once a check says so (e.g. a line in its log)."""

    def __init__(self, command: list[str], check: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(command, **kwargs)
        self._check = check

    def pre_start_check(self) -> bool:
        return False

    def after_start_check(self) -> bool:
        return self._check()


def start(command: Sequence[str], *, ready: str | Callable[[], bool] | None = None, log_file: Path | None = None,
          env: Mapping[str, str], timeout: float, cwd: Path = ROOT, detach: bool = False) -> Process:
    """Start `command`; wait at most `timeout` until `ready` (a URL, or a check) says it is.

    Output is appended to `log_file`, or goes to ours. `timeout` also bounds the wait
    for a stop before SIGKILL. A `detach`ed process outlives this one.
    """
    kwargs: dict[str, Any] = {"cwd": str(cwd), "timeout": timeout, "envvars": dict(env), "stdin": subprocess.DEVNULL}
    with log_file.open("ab") if log_file else nullcontext() as out:
        # stdout=None inherits ours (mirakuru's default is a pipe nobody would read).
        kwargs.update(stdout=out, stderr=subprocess.STDOUT if out else None)
        if isinstance(ready, str):
            executor: Process = _HTTPService(list(command), ready, status=r"\d{3}", method="GET", request_timeout=2, **kwargs)
        else:
            executor = _Until(list(command), ready, **kwargs) if ready else Process(list(command), **kwargs)
        executor.detached = detach
        try:
            executor.start()
        except ExecutorError as err:
            executor.kill()
            raise StartError(f"{err}" + (f"\n--- last lines of {log_file} ---\n{tail(log_file)}" if log_file else "")) from err
    return executor


def stop(executor: Process) -> None:
    """Stop the process group: SIGTERM, then SIGKILL after the executor's timeout."""
    try:
        executor.stop(expected_returncode=0)
    except ProcessFinishedWithError as err:  # stopped all the same; say how it ended
        log.warning("%s exited with %s", executor.command, err.exit_code)


def find(pid: int, marker: str) -> psutil.Process | None:
    """The process `pid`, if it runs and its command line contains `marker`."""
    with suppress(psutil.Error):  # gone, a zombie, or not ours to inspect
        proc = psutil.Process(pid)
        return proc if proc.is_running() and marker in " ".join(proc.cmdline()) else None
    return None


def stop_tree(proc: psutil.Process, timeout: float) -> None:
    """SIGTERM a process another process started, and its descendants; SIGKILL what is left after `timeout`."""
    family = [proc, *proc.children(recursive=True)]
    for p in family:
        with suppress(psutil.NoSuchProcess):
            p.terminate()
    for p in psutil.wait_procs(family, timeout)[1]:
        with suppress(psutil.NoSuchProcess):
            p.kill()


def holder(port: int, host: str = HOST) -> str | None:
    """Who listens on `port` (e.g. "postgres (pid 42)"), or None if nobody does."""
    wildcards = (host, "0.0.0.0", "::")  # noqa: S104 - a listener on every interface holds it too
    try:
        pids = [c.pid for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.laddr.ip in wildcards]
    except psutil.AccessDenied:  # macOS without root: who is unknown, whether is not
        with socket.socket() as sock:
            return "another program" if sock.connect_ex((host, port)) == 0 else None
    if not pids:
        return None
    with suppress(psutil.Error):
        return f"{psutil.Process(pids[0]).name()} (pid {pids[0]})" if pids[0] else "another user's program"
    return f"pid {pids[0]}"


def free_port(host: str = HOST) -> int:
    """A port nobody listens on now (the kernel's pick), for a server started next."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    """The last lines of a log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to the hard one (children inherit it); the new
    soft limit. A thousand HTTP clients, or a server of a thousand connections, need a thousand
    sockets: more than the common soft default of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # an unlimited hard limit is more than the kernel allows a soft one
        return soft
    return hard
