"""toolkit.procs' exit clean-up kills what its own executors started, never another process's.

mirakuru's exit hook SIGKILLs every process whose marker (the mirakuru_uuid variable)
contains the exiting interpreter's pid as a substring; its markers are "<pid>:<uuid4>".
Under pytest-xdist, a short-lived make run or deploy-localstack of one worker killed a
server of another that way (the SIGKILL once seen in tests/e2e/test_two_stacks.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress

import psutil
import pytest
from mirakuru.base import ENV_UUID
from mirakuru.base_env import processes_with_env

from toolkit import procs
from toolkit.names import ROOT

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture()
def sleeper() -> Iterator[procs.Process]:
    proc = procs.start(SLEEPER, env=os.environ, timeout=10)
    yield proc
    proc.kill()


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_marker_holds_no_pid(sleeper: procs.Process):
    assert sleeper.process is not None
    marker = psutil.Process(sleeper.process.pid).environ()[ENV_UUID]
    assert marker.startswith(procs.marker_prefix(os.getpid()))
    assert not any(c.isdigit() for c in marker), marker
    # What mirakuru's exit hook of any pid would look for: never found in ours.
    for digit in "0123456789":
        assert sleeper.process.pid not in processes_with_env(ENV_UUID, digit)


def test_an_exiting_interpreter_kills_its_leftovers_and_nothing_else():
    """The SIGKILL, reproduced: a process whose pid is a substring of another one's marker exits."""
    # The parent starts a sleeper and never stops it, then waits for a line before exiting.
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, sys; from toolkit import procs\n"
        f"p = procs.start({SLEEPER!r}, env=os.environ, timeout=10)\n"
        "print(p.process.pid, flush=True); sys.stdin.readline()\n")],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdin is not None and parent.stdout is not None
    leftover = int(parent.stdout.readline())
    # A bystander marked as mirakuru marks processes, by a pid that contains the parent's.
    bystander = subprocess.Popen(SLEEPER, env={**os.environ, ENV_UUID: f"9{parent.pid}:{'0' * 8}"})
    try:
        assert bystander.pid in processes_with_env(ENV_UUID, str(parent.pid))  # mirakuru's hook would kill it
        parent.stdin.close()
        assert parent.wait(30) == 0
        assert _gone(leftover), "the exiting interpreter left its server running"
        time.sleep(0.5)
        assert bystander.poll() is None, f"the bystander was killed ({bystander.returncode})"
    finally:
        bystander.kill()
        bystander.wait()
        with suppress(psutil.NoSuchProcess):
            psutil.Process(leftover).kill()
