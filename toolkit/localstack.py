"""Run a real LocalStack on the host, without Docker.

LocalStack is a Python program; its Docker image is only a packaging of it. On
machines without Docker (CI here, some developer laptops) we install
``localstack-core`` into a virtualenv of its own and start its runtime
directly ("host mode"). It gets its own interpreter (Python 3.13, which this
LocalStack release targets) and its own virtualenv because it pins boto3,
cryptography and friends to versions that would clash with the application's.

Users with Docker can run ``docker-compose.localstack.yml`` instead and point
``AWS_ENDPOINT_URL`` at it; nothing here is then needed.

Usage::

    python -m toolkit.localstack install
    python -m toolkit.localstack start [--endpoint http://127.0.0.1:4566]
    python -m toolkit.localstack stop  [--endpoint ...]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from toolkit.files import file_lock, tail

# Paths are anchored at the repository, not the caller's CWD, so that tests,
# scripts and the CLI all share one install and one data dir.
DEVSTACK_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEVSTACK_DIR.parent
REQUIREMENTS_FILE = DEVSTACK_DIR / "localstack-requirements.txt"
CONSTRAINTS_FILE = DEVSTACK_DIR / "localstack-constraints.txt"

DEFAULT_ENDPOINT = "http://127.0.0.1:4566"
# Only what the project uses; every extra service costs start-up time.
DEFAULT_SERVICES = "sqs,iam,sts,cloudformation,apigateway,lambda,s3,logs,cloudwatch,secretsmanager,ssm"
REQUIRED_PYTHON = (3, 13)
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# The module LocalStack's own CLI (and its Docker entrypoint) ends up running.
RUNTIME_MODULE = "localstack.runtime.main"

_STAMP_NAME = ".devstack-localstack.stamp"
_PID_NAME = "localstack.pid"
_LOG_NAME = "localstack.log"


class LocalStackError(RuntimeError):
    """LocalStack could not be installed, started or stopped."""


class PythonNotFoundError(LocalStackError):
    """No usable Python 3.13 interpreter for LocalStack was found."""


def _resolve(path: Path) -> Path:
    return path if path.is_absolute() else (REPO_ROOT / path)




# --------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------


def _health_url(endpoint: str) -> str:
    # Only http(s): urlopen would also read file:// and friends (ruff S310).
    if not endpoint.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) endpoint: {endpoint!r}")
    return endpoint.rstrip("/") + "/_localstack/health"


def endpoint_answers(endpoint: str, timeout: float = 1.0) -> bool:
    """Return True if anything speaks HTTP at ``endpoint``.

    Any HTTP status counts: the point is to detect "the port is taken" (by a
    LocalStack in Docker, a previous run, or something unrelated) before we try
    to start another server there.
    """
    try:
        with urllib.request.urlopen(_health_url(endpoint), timeout=timeout):  # noqa: S310 - scheme checked
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP server answered, just not with 2xx
    except (urllib.error.URLError, OSError, ValueError):
        return False


def health(endpoint: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """LocalStack's health document, or None if it is not (yet) reachable."""
    try:
        with urllib.request.urlopen(_health_url(endpoint), timeout=timeout) as resp:  # noqa: S310 - scheme checked
            data = json.loads(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_ready(endpoint: str, timeout: float = 1.0) -> bool:
    """True once SQS (the service everything else waits on) is usable."""
    doc = health(endpoint, timeout)
    if doc is None:
        return False
    services = doc.get("services")
    if not isinstance(services, dict):
        return False
    # Services load lazily: "available" = will load on first call,
    # "running" = already loaded. Both mean requests will succeed.
    return services.get("sqs") in ("available", "running")


# --------------------------------------------------------------------------
# Finding Python 3.13
# --------------------------------------------------------------------------


def _python_version(exe: Path | str) -> tuple[int, int] | None:
    """(major, minor) of an interpreter, or None if it does not run.

    We must actually run it: a pyenv shim named python3.13 exists on PATH even
    when that version is not selected, and then it exits with an error.
    """
    try:
        out = subprocess.run(
            [str(exe), "--version"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    match = re.match(r"Python (\d+)\.(\d+)", (out.stdout or out.stderr).strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _version_key(path: Path) -> tuple[int, ...]:
    # ".../versions/3.13.10/bin/python3.13" sorts above ".../3.13.9/..."
    for part in path.parts:
        if re.fullmatch(r"\d+(\.\d+)*", part):
            return tuple(int(x) for x in part.split("."))
    return ()


def _candidate_pythons() -> Iterator[Path]:
    on_path = shutil.which("python3.13")
    if on_path:
        yield Path(on_path)
    roots: list[Path] = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(Path(os.environ["PYENV_ROOT"]))
    roots.append(Path.home() / ".pyenv")
    for root in roots:
        found = sorted(
            (root / "versions").glob("3.13*/bin/python3.13"),
            key=_version_key,
            reverse=True,
        )
        yield from found
    # Interpreters installed by `uv python install 3.13`.
    uv_dir = Path.home() / ".local" / "share" / "uv" / "python"
    yield from sorted(uv_dir.glob("cpython-3.13*/bin/python3.13"), reverse=True)


def find_python313() -> Path:
    """Locate a working Python 3.13 interpreter for LocalStack's virtualenv.

    Order: ``LOCALSTACK_PYTHON`` (an explicit choice always wins), then
    ``python3.13`` on PATH, then pyenv installs (``$PYENV_ROOT`` and
    ``~/.pyenv``), then uv-managed interpreters. Each candidate is run with
    ``--version`` before it is accepted.
    """
    explicit = os.environ.get("LOCALSTACK_PYTHON")
    if explicit:
        version = _python_version(explicit)
        if version is None:
            raise PythonNotFoundError(
                f"LOCALSTACK_PYTHON={explicit} does not run (`{explicit} --version` "
                "failed). Point it at a working Python 3.13 interpreter."
            )
        if version != REQUIRED_PYTHON:
            raise PythonNotFoundError(
                f"LOCALSTACK_PYTHON={explicit} is Python {version[0]}.{version[1]}; LocalStack 2026.3 needs Python 3.13."
            )
        return Path(explicit)

    tried: list[str] = []
    for candidate in _candidate_pythons():
        tried.append(str(candidate))
        if _python_version(candidate) == REQUIRED_PYTHON:
            return candidate
    tried_text = ", ".join(tried) if tried else "nothing found"
    raise PythonNotFoundError(
        "LocalStack runs on the host with Python 3.13, and no working Python 3.13 "
        f"was found (tried: {tried_text}). Do one of:\n"
        "  * install Python 3.13 (your OS packages, `pyenv install 3.13`, or "
        "`uv python install 3.13`);\n"
        "  * set LOCALSTACK_PYTHON=/path/to/python3.13;\n"
        "  * with Docker: `docker compose -f docker-compose.localstack.yml up -d` "
        "and set AWS_ENDPOINT_URL=http://127.0.0.1:4566."
    )


# --------------------------------------------------------------------------
# Host LocalStack
# --------------------------------------------------------------------------




def _host_port(endpoint: str) -> str:
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
        raise LocalStackError(f"endpoint must look like http://HOST:PORT, got {endpoint!r}")
    return f"{parsed.hostname}:{parsed.port}"


class HostLocalStack:
    """A LocalStack process on this machine, in its own Python 3.13 virtualenv."""

    def __init__(
        self,
        venv_dir: Path = Path(".venv-localstack"),
        data_dir: Path = Path(".local/localstack"),
        endpoint: str = DEFAULT_ENDPOINT,
    ) -> None:
        self.venv_dir = _resolve(Path(venv_dir))
        self.data_dir = _resolve(Path(data_dir))
        self.endpoint = endpoint.rstrip("/")
        _host_port(self.endpoint)  # validate early
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    # -- paths -------------------------------------------------------------

    @property
    def python(self) -> Path:
        """The virtualenv's interpreter."""
        if os.name == "nt":
            return self.venv_dir / "Scripts" / "python.exe"
        return self.venv_dir / "bin" / "python"

    @property
    def run_dir(self) -> Path:
        """Where this instance keeps its log, pid file and LocalStack state.

        ``data_dir`` itself for the default port; ``data_dir/port-N`` for any
        other, so a second LocalStack started from the same checkout (a test
        suite on a spare port next to `make run`) neither truncates the
        first one's log nor has its temp folder wiped at start-up.
        """
        port = urllib.parse.urlsplit(self.endpoint).port
        if port == urllib.parse.urlsplit(DEFAULT_ENDPOINT).port:
            return self.data_dir
        return self.data_dir / f"port-{port}"

    @property
    def log_file(self) -> Path:
        return self.run_dir / _LOG_NAME

    @property
    def pid_file(self) -> Path:
        return self.run_dir / _PID_NAME

    # -- install -----------------------------------------------------------

    @staticmethod
    def requirements_hash() -> str:
        """Hash of what we install; a change in either file forces a reinstall."""
        digest = hashlib.sha256()
        for path in (REQUIREMENTS_FILE, CONSTRAINTS_FILE):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def is_installed(self) -> bool:
        stamp = self.venv_dir / _STAMP_NAME
        try:
            recorded = stamp.read_text().strip()
        except OSError:
            return False
        return recorded == self.requirements_hash() and self.python.exists()

    def ensure_installed(self) -> None:
        """Create the virtualenv and install LocalStack, unless already done.

        A stamp file in the venv records the hash of the requirements and
        constraints; when it matches, this returns in milliseconds.
        """
        if self.is_installed():
            return
        with file_lock(self.data_dir / "install.lock"):
            if self.is_installed():  # another process finished it meanwhile
                return
            self._install()

    def _install(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "install.log"
        # Reuse an existing venv if its interpreter still works (pip then only
        # applies the difference); otherwise rebuild it from scratch.
        if _python_version(self.python) != REQUIRED_PYTHON:
            base = find_python313()
            print(f"devstack: creating {self.venv_dir} with {base}", file=sys.stderr)
            self._run_logged([str(base), "-m", "venv", "--clear", str(self.venv_dir)], log_path)
        print(
            f"devstack: installing LocalStack into {self.venv_dir} (about a minute the first time; log: {log_path})",
            file=sys.stderr,
        )
        started = time.monotonic()
        self._run_logged(
            [
                str(self.python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--progress-bar",
                "off",
                "-r",
                str(REQUIREMENTS_FILE),
                "-c",
                str(CONSTRAINTS_FILE),
            ],
            log_path,
        )
        # Written last, so an interrupted install is retried next time.
        (self.venv_dir / _STAMP_NAME).write_text(self.requirements_hash() + "\n")
        print(
            f"devstack: LocalStack installed in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )

    @staticmethod
    def _run_logged(cmd: list[str], log_path: Path) -> None:
        with open(log_path, "ab") as log:
            log.write(f"\n$ {' '.join(cmd)}\n".encode())
            log.flush()
            result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=_clean_env(), check=False)
        if result.returncode != 0:
            raise LocalStackError(
                f"command failed with exit code {result.returncode}: {' '.join(cmd)}\n"
                f"--- last lines of {log_path} ---\n{tail(log_path)}"
            )

    # -- run -----------------------------------------------------------------

    def environment(self, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment LocalStack is started with."""
        host_port = _host_port(self.endpoint)
        env = _clean_env()
        env.update(
            {
                "GATEWAY_LISTEN": host_port,
                # The default (twisted) gateway ignores the host part of
                # GATEWAY_LISTEN and binds 0.0.0.0 (fine inside a container,
                # not on a laptop: an unauthenticated AWS on the LAN).
                # Hypercorn, LocalStack's other built-in server, honours it.
                "GATEWAY_SERVER": "hypercorn",
                # Path-style queue URLs (http://HOST:PORT/queue/REGION/ACCOUNT/NAME)
                # resolve without any DNS; the default strategy invents
                # sqs.REGION.localhost.localstack.cloud host names.
                "SQS_ENDPOINT_STRATEGY": "path",
                "LOCALSTACK_HOST": host_port,
                # LocalStack's DNS server needs upstream DNS and privileged
                # port 53; neither is available offline / unprivileged.
                "DNS_ADDRESS": "0",
                "SERVICES": DEFAULT_SERVICES,
                # In host mode LocalStack keeps state, caches and its tmp dir
                # under FILESYSTEM_ROOT, which defaults to a folder inside the
                # installed package and whose tmp part would otherwise be the
                # machine-wide /tmp/localstack (wiped at start-up, so two
                # instances would clobber each other). LOCALSTACK_VOLUME_DIR is
                # only read by its Docker CLI; set too for tools that look at it.
                "FILESYSTEM_ROOT": str(self.run_dir / "filesystem"),
                "LOCALSTACK_VOLUME_DIR": str(self.run_dir / "volume"),
                # Do not try to download a TLS certificate at start (no internet).
                "SKIP_SSL_CERT_DOWNLOAD": "1",
                # No analytics/telemetry calls home.
                "DISABLE_EVENTS": "1",
                # Per-message SQS metrics are pushed to CloudWatch by background
                # threads; at shutdown the gateway is already gone and botocore
                # retries them, so a stop after any SendMessage took ~10 s
                # instead of ~1 s. Override with extra_env if a test needs them.
                "SQS_DISABLE_CLOUDWATCH_METRICS": "1",
            }
        )
        if extra_env:
            env.update(extra_env)
        return env

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        """Install if needed, start LocalStack, and wait until SQS is ready.

        Raises LocalStackError if something already answers at the endpoint
        (reuse it via AWS_ENDPOINT_URL, or pick another endpoint), if the
        process dies, or if it is not healthy within 60 s; the log tail is
        included in the message.
        """
        if self._proc is not None and self._proc.poll() is None:
            return  # already started by this object
        if endpoint_answers(self.endpoint):
            raise LocalStackError(
                f"something already answers at {self.endpoint}. If it is a LocalStack "
                f"you started (host or Docker), use it via AWS_ENDPOINT_URL={self.endpoint}; "
                "otherwise stop it (`python -m toolkit.localstack stop`) or choose "
                "another endpoint (--endpoint http://127.0.0.1:PORT)."
            )
        host, _, port = _host_port(self.endpoint).rpartition(":")
        if not _port_is_free(host, int(port)):
            # Something that is not an HTTP server (or not answering) holds
            # the port; LocalStack would only log a bind error and never
            # become healthy.
            raise LocalStackError(
                f"port {port} on {host} is in use by another program; choose another endpoint "
                "(--endpoint http://127.0.0.1:PORT) or stop that program."
            )
        self.ensure_installed()
        for sub in ("filesystem", "volume"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)

        started = time.monotonic()
        self._log_handle = open(self.log_file, "wb")
        self._proc = subprocess.Popen(
            [str(self.python), "-m", RUNTIME_MODULE],
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=self.environment(extra_env),
            cwd=str(self.run_dir),
            # Own process group: Ctrl-C in the terminal reaches only us, and
            # stop() can signal LocalStack together with anything it spawned.
            start_new_session=True,
        )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        # A crashed test run must not leave a LocalStack holding the port.
        atexit.register(self.stop)

        deadline = started + START_TIMEOUT_S
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._forget()
                raise LocalStackError(
                    f"LocalStack exited with code {code} during start-up.\n"
                    f"--- last lines of {self.log_file} ---\n{tail(self.log_file)}"
                )
            if is_ready(self.endpoint, timeout=0.5):
                return
            if "Address already in use" in tail(self.log_file, 200):
                # Lost a race for the port after our check above.
                self.stop()
                raise LocalStackError(
                    f"LocalStack could not listen at {self.endpoint} (port taken).\n"
                    f"--- last lines of {self.log_file} ---\n{tail(self.log_file)}"
                )
            time.sleep(0.2)
        self.stop()
        raise LocalStackError(
            f"LocalStack was not healthy at {self.endpoint} within {START_TIMEOUT_S:.0f} s.\n"
            f"--- last lines of {self.log_file} ---\n{tail(self.log_file)}"
        )

    def wait(self) -> int:
        """Block until the LocalStack process exits; return its exit code."""
        if self._proc is None:
            raise LocalStackError("LocalStack was not started by this object")
        return self._proc.wait()

    def stop(self) -> None:
        """Terminate LocalStack's process group: SIGTERM, then SIGKILL after 10 s.

        Works on a process started by this object, or (via the pid file) on
        one started by another process from the same data dir, e.g. the CLI.
        Does nothing if none is running.
        """
        if self._proc is not None:
            pid: int | None = self._proc.pid
        else:
            pid = self._pid_from_file()
        if pid is not None:
            _terminate_group(pid, self._proc)
        self._forget()

    def _pid_from_file(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        # Guard against pid reuse: only signal a LocalStack runtime process.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            try:
                os.kill(pid, 0)
            except OSError:
                return None
            # No /proc (macOS): trust the pid file.
            return pid
        return pid if RUNTIME_MODULE.encode() in cmdline else None

    def _forget(self) -> None:
        atexit.unregister(self.stop)
        self._proc = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        with contextlib.suppress(OSError):
            self.pid_file.unlink()


def _terminate_group(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it if still alive later."""

    def signal_group(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if hasattr(os, "killpg"):
                os.killpg(pid, sig)
            else:  # Windows
                os.kill(pid, sig)

    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    if not alive():
        signal_group(signal.SIGKILL)  # helpers may outlive their leader
        return
    signal_group(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    # Also reaps helpers LocalStack spawned into its group.
    signal_group(signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _port_is_free(host: str, port: int) -> bool:
    # SO_REUSEADDR: sockets in TIME_WAIT from a previous run do not count.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _clean_env() -> dict[str, str]:
    """os.environ minus what would make the 3.13 interpreter load the wrong code.

    We are typically run from the project's 3.11 venv; PYTHONPATH/PYTHONHOME or
    VIRTUAL_ENV leaking into LocalStack's interpreter would break it.
    """
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    return env


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolkit.localstack",
        description="Install, start or stop LocalStack on the host (no Docker).",
    )
    parser.add_argument("command", choices=("install", "start", "stop"))
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("LOCALSTACK_ENDPOINT", DEFAULT_ENDPOINT),
        help=f"where LocalStack listens (default {DEFAULT_ENDPOINT}, env LOCALSTACK_ENDPOINT)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="state and logs (default: <repo>/.local/localstack)",
    )
    args = parser.parse_args(argv)

    if args.data_dir is None:
        stack = HostLocalStack(endpoint=args.endpoint)
    else:
        # Typed on the command line, a relative path means relative to the CWD.
        stack = HostLocalStack(data_dir=args.data_dir.resolve(), endpoint=args.endpoint)
    try:
        if args.command == "install":
            stack.ensure_installed()
            print(f"LocalStack installed in {stack.venv_dir}")
        elif args.command == "stop":
            stack.stop()
            print("LocalStack stopped")
        else:
            # Foreground: run until Ctrl-C or SIGTERM, then shut LocalStack down.
            # The try covers start() too: Ctrl-C while waiting for readiness
            # must not leave LocalStack running.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                started = time.monotonic()
                stack.start()
                print(
                    f"LocalStack ready at {stack.endpoint} in {time.monotonic() - started:.1f} s "
                    f"(log: {stack.log_file}). Ctrl-C to stop.\n"
                    f"  export AWS_ENDPOINT_URL={stack.endpoint}",
                    flush=True,
                )
                return stack.wait()
            except (KeyboardInterrupt, SystemExit):
                return 0
            finally:
                stack.stop()
    except LocalStackError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
