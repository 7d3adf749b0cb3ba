"""Sample the stack's processes with py-spy while it is under load, and meter their CPU.

Two py-spy recorders per process (py-spy reads the target's memory from
outside, so the app runs unmodified):
- `--gil`: only the thread holding the GIL, i.e. running Python: where the
  CPU goes. (py-spy's own idle detection counted waiting threads as busy in
  this container, up to "2.4 cores" for one process; GIL samples track the
  CPU time /proc reports. On a saturated machine a holder that the kernel
  preempts keeps the GIL, which inflates whatever it was doing: chalice
  local's accept loop above all, so its CPU is taken from /proc instead and
  the GIL view covers the request threads.)
- `--idle`: every thread, waiting or not: where a request's or a poller's
  wall time goes.
Both `--nonblocking`: pausing the target at every sample (py-spy's default)
cut the stack's throughput by four; without pausing it costs about a tenth.
CPU time per process (from /proc) says which part of the stack uses the
machine's cores, and how busy the machine is as a whole (other tenants too).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure.bench import profiles

# GIL samples are few (a process uses a fraction of a core), so sample them
# faster; wall samples cover every thread and need less.
CPU_RATE_HZ = 250
WALL_RATE_HZ = 100


def py_spy() -> str | None:
    """The py-spy binary beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def child_processes(parent: int) -> dict[int, str]:
    """pid -> command line of the direct children of `parent` (Linux /proc)."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # The command name in field 2 may hold spaces and parentheses: split after the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            out[int(entry.name)] = cmdline
    return out


def stack_processes(make_run_pid: int) -> dict[str, int]:
    """{"chalice": pid, "runner": pid} among `make run`'s children."""
    roles = {}
    for pid, cmd in child_processes(make_run_pid).items():
        if "chalice" in cmd and " local" in cmd:
            roles["chalice"] = pid
        elif "devstack.runner" in cmd:
            roles["runner"] = pid
    return roles


@dataclass
class Recorder:
    role: str
    idle: bool
    output: Path
    proc: subprocess.Popen[bytes]
    log: Path


class Sampler:
    """Start recorders on the stack's processes; stop them and summarise."""

    def __init__(self, make_run_pid: int, out_dir: Path) -> None:
        self._make_run_pid = make_run_pid
        self._out = out_dir
        self._recorders: list[Recorder] = []
        self._started = 0.0
        self.error: str | None = None

    def start(self) -> None:
        binary = py_spy()
        if binary is None:
            self.error = "py-spy not found (pip install py-spy into .venv to get the e2e profile)"
            return
        if not Path("/proc").exists():
            self.error = "no /proc: cannot find chalice local and the runner among make run's children"
            return
        pids = stack_processes(self._make_run_pid)
        if set(pids) != {"chalice", "runner"}:
            self.error = f"could not find both processes under make run (found {pids})"
            return
        self._out.mkdir(parents=True, exist_ok=True)
        for role, pid in pids.items():
            for idle in (False, True):
                name = f"pyspy_{role}_{'wall' if idle else 'cpu'}"
                output, log = self._out / f"{name}.txt", self._out / f"{name}.log"
                cmd = [binary, "record", "--pid", str(pid), "--format", "raw", "--full-filenames", "--nolineno",
                       "--nonblocking", "--output", str(output)]
                cmd += ["--rate", str(WALL_RATE_HZ), "--idle"] if idle else ["--rate", str(CPU_RATE_HZ), "--gil"]
                if role == "runner":
                    cmd.append("--subprocesses")  # in case the pollers become processes
                with log.open("wb") as f:
                    proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
                self._recorders.append(Recorder(role, idle, output, proc, log))
        self._started = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """Stop every recorder (SIGINT makes py-spy write its output) and summarise."""
        seconds = time.monotonic() - self._started
        for r in self._recorders:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGINT)
        for r in self._recorders:
            try:
                r.proc.wait(30)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
        if self.error:
            return {"error": self.error}
        out: dict[str, Any] = {"seconds": seconds, "tool": f"py-spy record --nonblocking: --gil at {CPU_RATE_HZ} Hz "
                                                           f"(CPU), --idle at {WALL_RATE_HZ} Hz (wall)"}
        for r in self._recorders:
            if not r.output.exists():
                out.setdefault("errors", []).append(f"{r.role}: {r.log.read_text(errors='replace')[-500:]}")
                continue
            with r.output.open(encoding="utf-8", errors="replace") as f:
                stacks = profiles.parse_collapsed(f)
            key = "wall" if r.idle else "cpu"
            summary = profiles.spy_wall(r.role, stacks) if r.idle else profiles.spy_cpu(r.role, stacks)
            out.setdefault(r.role, {})[key] = summary | {"file": str(r.output)}
        return out

    def abort(self) -> None:
        for r in self._recorders:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()


# --- CPU accounting ------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int, *, reaped_children: bool = False, thread: int | None = None) -> float:
    """User + system CPU of a process (its exited threads included), or of one of its threads;
    plus, if asked, of its exited and reaped children (PostgreSQL's backends)."""
    stat = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")": state is field 0, so utime/stime/cutime/cstime are 11..14.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def _machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, every core, every tenant."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _TICK, sum(values) / _TICK


class CpuMeter:
    """CPU used by each part of the stack over a window, in cores (1.0 = one core busy all along)."""

    def __init__(self, make_run_pid: int, pg_port: int) -> None:
        self._make_run_pid = make_run_pid
        self._pg_port = pg_port
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def _roles(self) -> dict[str, float]:
        out = {"bench clients (this process)": sum(os.times()[:2])}
        for pid, cmd in child_processes(self._make_run_pid).items():
            if "chalice" in cmd and " local" in cmd:
                out["chalice local"] = _cpu_seconds(pid)
                # Its main thread only accepts connections and starts a thread per request.
                out["  of which the accept loop (main thread)"] = _cpu_seconds(pid, thread=pid)
            elif "devstack.runner" in cmd:
                out["runner"] = _cpu_seconds(pid)
            elif "localstack" in cmd:
                out["LocalStack"] = _cpu_seconds(pid) + sum(_cpu_seconds(c) for c in child_processes(pid))
        postmaster = self._postmaster()
        if postmaster is not None:
            out["PostgreSQL"] = _cpu_seconds(postmaster, reaped_children=True) + sum(
                _cpu_seconds(c) for c in child_processes(postmaster))
        busy, total = _machine_busy_seconds()
        out["machine: all processes"], out["_machine_total"] = busy, total
        return out

    def _postmaster(self) -> int | None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"/postgres") and b"-p" in cmd and str(self._pg_port).encode() in cmd:
                return int(entry.name)
        return None

    def start(self) -> None:
        self._start = self._roles()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        end, wall = self._roles(), time.monotonic() - self._t0
        cores = {k: (end[k] - self._start.get(k, 0.0)) / wall for k in end if not k.startswith("_")}
        # Cores of the machine: the busy share of all CPU time, times the number of cores.
        machine_cores = (end["_machine_total"] - self._start["_machine_total"]) / wall
        return {"seconds": wall, "cores_busy": cores, "machine_cores": machine_cores}
