"""A real LocalStack on the host, without Docker ("host mode").

LocalStack is a Python program; its Docker image only packages it. We install
``localstack-core`` into a virtualenv of its own, with Python 3.13 (what this
release targets), because it pins boto3, cryptography and friends to versions
that would clash with the application's. With Docker, run
``docker-compose.localstack.yml`` and point ``AWS_ENDPOINT_URL`` at it instead.

    python -m toolkit.localstack install | start | stop  [--endpoint URL]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import fasteners
import psutil

from toolkit import logs, names, procs

REQUIREMENTS_FILE = Path(__file__).with_name("localstack-requirements.txt")
CONSTRAINTS_FILE = Path(__file__).with_name("localstack-constraints.txt")
# Only what the project uses; every extra service costs start-up time.
DEFAULT_SERVICES = "sqs,iam,sts,cloudformation,apigateway,lambda,s3,logs,cloudwatch,secretsmanager,ssm"
REQUIRED_PYTHON = (3, 13)
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# The module LocalStack's own CLI (and its Docker entrypoint) ends up running.
RUNTIME_MODULE = "localstack.runtime.main"
# The name and the hash are those of every existing install: changing either reinstalls.
_STAMP_NAME = ".devstack-localstack.stamp"
# What would make the 3.13 interpreter load our 3.11 virtualenv's code.
_LEAKS = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__")

log = logs.get("localstack")


class LocalStackError(RuntimeError):
    """LocalStack could not be installed, started or stopped."""


class PythonNotFoundError(LocalStackError):
    """No usable Python 3.13 interpreter for LocalStack was found."""


def endpoint_answers(endpoint: str, timeout: float = 1.0) -> bool:
    """True if anything speaks HTTP at `endpoint`, whatever the status: the port is taken
    (by a LocalStack in Docker, a previous run, or something unrelated)."""
    if not endpoint.startswith(("http://", "https://")):  # urlopen would read file:// too
        return False
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + "/_localstack/health", timeout=timeout):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


# --- Finding Python 3.13 -----------------------------------------------------------


def _python_version(exe: Path | str) -> tuple[int, int] | None:
    """(major, minor) of an interpreter, or None if it does not run. It must really run:
    a pyenv shim named python3.13 is on PATH even when that version is not selected."""
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"Python (\d+)\.(\d+)", (out.stdout or out.stderr).strip()) if out.returncode == 0 else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def _version_key(path: Path) -> tuple[int, ...]:
    # ".../versions/3.13.10/bin/python3.13" sorts above ".../3.13.9/..."
    return next((tuple(map(int, p.split("."))) for p in path.parts if re.fullmatch(r"\d+(\.\d+)*", p)), ())


def _candidate_pythons() -> Iterator[Path]:
    if on_path := shutil.which("python3.13"):
        yield Path(on_path)
    for pyenv in [*([Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []), Path.home() / ".pyenv"]:
        yield from sorted((pyenv / "versions").glob("3.13*/bin/python3.13"), key=_version_key, reverse=True)
    # `uv python install 3.13`
    yield from sorted((Path.home() / ".local/share/uv/python").glob("cpython-3.13*/bin/python3.13"), reverse=True)


def find_python313() -> Path:
    """A working Python 3.13: LOCALSTACK_PYTHON (an explicit choice always wins), else python3.13
    on PATH, pyenv's ($PYENV_ROOT, ~/.pyenv), uv's; each is run with --version before it is accepted."""
    if explicit := os.environ.get("LOCALSTACK_PYTHON"):
        version = _python_version(explicit)
        if version is None:
            raise PythonNotFoundError(f"LOCALSTACK_PYTHON={explicit} does not run (`{explicit} --version` failed). "
                                      "Point it at a working Python 3.13 interpreter.")
        if version != REQUIRED_PYTHON:
            raise PythonNotFoundError(f"LOCALSTACK_PYTHON={explicit} is Python {version[0]}.{version[1]}; "
                                      "LocalStack 2026.3 needs Python 3.13.")
        return Path(explicit)
    tried = []
    for candidate in _candidate_pythons():
        if _python_version(candidate) == REQUIRED_PYTHON:
            return candidate
        tried.append(str(candidate))
    raise PythonNotFoundError(
        "LocalStack runs on the host with Python 3.13, and no working Python 3.13 was found "
        f"(tried: {', '.join(tried) or 'nothing found'}). Do one of:\n"
        "  * install Python 3.13 (your OS packages, `pyenv install 3.13`, or `uv python install 3.13`);\n"
        "  * set LOCALSTACK_PYTHON=/path/to/python3.13;\n"
        "  * with Docker: `docker compose -f docker-compose.localstack.yml up -d` "
        f"and set AWS_ENDPOINT_URL={names.RUN_ENDPOINT}."
    )


# --- LocalStack on the host --------------------------------------------------------


class HostLocalStack:
    """A LocalStack process on this machine, in its own Python 3.13 virtualenv."""

    def __init__(self, venv_dir: Path = names.LOCALSTACK_VENV, data_dir: Path = names.LOCAL_DIR / "localstack",
                 endpoint: str = names.RUN_ENDPOINT) -> None:
        # Relative paths are the repository's: tests, scripts and the CLI share one install.
        self.venv_dir, self.data_dir = names.ROOT / venv_dir, names.ROOT / data_dir
        self.endpoint = endpoint.rstrip("/")
        parsed = urllib.parse.urlsplit(self.endpoint)
        if parsed.scheme != "http" or not parsed.hostname or not parsed.port:
            raise LocalStackError(f"endpoint must look like http://HOST:PORT, got {endpoint!r}")
        self.host, self.port = parsed.hostname, parsed.port
        self.python = self.venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        # Another port gets a folder of its own: a second LocalStack from the same checkout
        # (tests beside `make run`) neither truncates the first one's log nor wipes its temp dir.
        self.run_dir = self.data_dir if self.port == names.RUN_LOCALSTACK_PORT else self.data_dir / f"port-{self.port}"
        self.log_file, self.pid_file = self.run_dir / "localstack.log", self.run_dir / "localstack.pid"
        self._executor: procs.Process | None = None

    # -- install ---------------------------------------------------------------------

    @staticmethod
    def requirements_hash() -> str:
        """A change in either file forces a reinstall."""
        digest = hashlib.sha256()
        for path in (REQUIREMENTS_FILE, CONSTRAINTS_FILE):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def is_installed(self) -> bool:
        try:
            stamp = (self.venv_dir / _STAMP_NAME).read_text().strip()
        except OSError:
            return False
        return stamp == self.requirements_hash() and self.python.exists()

    def ensure_installed(self) -> None:
        """Create the virtualenv and install LocalStack unless the stamp says it is done (milliseconds)."""
        if self.is_installed():
            return
        # Two first runs at once (a test run beside `make run`) must not both pip install.
        with fasteners.InterProcessLock(self.data_dir / "install.lock"):
            if self.is_installed():
                return
            install_log = self.data_dir / "install.log"
            # A venv whose interpreter still works is reused (pip applies the difference).
            if _python_version(self.python) != REQUIRED_PYTHON:
                base = find_python313()
                log.info("creating %s with %s", self.venv_dir, base)
                self._run_logged([str(base), "-m", "venv", "--clear", str(self.venv_dir)], install_log)
            log.info("installing LocalStack into %s (about a minute the first time; log: %s)", self.venv_dir, install_log)
            started = time.monotonic()
            self._run_logged([str(self.python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar",
                              "off", "-r", str(REQUIREMENTS_FILE), "-c", str(CONSTRAINTS_FILE)], install_log)
            # Written last, so an interrupted install is retried next time.
            (self.venv_dir / _STAMP_NAME).write_text(self.requirements_hash() + "\n")
            log.info("LocalStack installed in %.0f s", time.monotonic() - started)

    @staticmethod
    def _run_logged(cmd: list[str], log_path: Path) -> None:
        with log_path.open("ab") as out:
            out.write(f"\n$ {' '.join(cmd)}\n".encode())
            out.flush()
            env = {k: v for k, v in os.environ.items() if k not in _LEAKS}
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
        if result.returncode != 0:
            raise LocalStackError(f"exit code {result.returncode}: {' '.join(cmd)}\n"
                                  f"--- last lines of {log_path} ---\n{procs.tail(log_path)}")

    # -- run -------------------------------------------------------------------------

    def environment(self, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment LocalStack is started with."""
        host_port = f"{self.host}:{self.port}"
        return {
            **{k: v for k, v in os.environ.items() if k not in _LEAKS},
            "GATEWAY_LISTEN": host_port,
            # The default (twisted) gateway ignores the host of GATEWAY_LISTEN and binds
            # 0.0.0.0: an unauthenticated AWS on the LAN. Hypercorn honours it.
            "GATEWAY_SERVER": "hypercorn",
            # Path-style queue URLs (http://HOST:PORT/queue/REGION/ACCOUNT/NAME) need no
            # DNS; the default strategy invents sqs.REGION.localhost.localstack.cloud hosts.
            "SQS_ENDPOINT_STRATEGY": "path",
            "LOCALSTACK_HOST": host_port,
            # Its DNS server needs upstream DNS and port 53: neither offline nor unprivileged.
            "DNS_ADDRESS": "0",
            "SERVICES": DEFAULT_SERVICES,
            # State, caches and the temp dir, which defaults to the machine-wide
            # /tmp/localstack (wiped at start-up: two instances would clobber each other).
            # LOCALSTACK_VOLUME_DIR is read by its Docker CLI only; set for tools that look.
            "FILESYSTEM_ROOT": str(self.run_dir / "filesystem"),
            "LOCALSTACK_VOLUME_DIR": str(self.run_dir / "volume"),
            # No TLS certificate download at start (offline), no telemetry.
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            # Per-message SQS metrics go to CloudWatch from background threads; at shutdown
            # botocore retries them against the stopped gateway: ~10 s stops instead of ~1 s.
            "SQS_DISABLE_CLOUDWATCH_METRICS": "1",
            **(extra_env or {}),
        }

    def start(self, extra_env: dict[str, str] | None = None, *, detach: bool = False) -> None:
        """Install if needed, start LocalStack and wait until it answers (at most 60 s).

        Refuses an endpoint something already holds. A `detach`ed LocalStack outlives
        this process; `stop()` (from any process) finds it by its pid file.
        """
        if endpoint_answers(self.endpoint):
            raise LocalStackError(
                f"something already answers at {self.endpoint}. If it is a LocalStack you started (host or Docker), "
                f"use it via AWS_ENDPOINT_URL={self.endpoint}; otherwise stop it (`python -m toolkit.localstack stop`) "
                "or choose another endpoint (--endpoint http://127.0.0.1:PORT).")
        if who := procs.holder(self.port, self.host):
            raise LocalStackError(f"port {self.port} on {self.host} is in use by {who}; choose another endpoint "
                                  "(--endpoint http://127.0.0.1:PORT) or stop that program.")
        self.ensure_installed()
        for sub in ("filesystem", "volume"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.log_file.write_bytes(b"")
        try:
            self._executor = procs.start([str(self.python), "-m", RUNTIME_MODULE], ready=f"{self.endpoint}/_localstack/health",
                                         log_file=self.log_file, env=self.environment(extra_env), timeout=START_TIMEOUT_S,
                                         cwd=self.run_dir, detach=detach)
        except procs.StartError as err:
            raise LocalStackError(f"LocalStack did not come up at {self.endpoint}: {err}") from err
        self.pid_file.write_text(f"{self._executor.pid}\n")

    def running(self) -> psutil.Process | None:
        """The LocalStack started from this run dir (by any process), if it runs."""
        try:
            return procs.find(int(self.pid_file.read_text()), RUNTIME_MODULE)
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop our LocalStack, or the one the pid file names; nothing if none runs."""
        if self._executor is not None:
            procs.stop(self._executor)
        elif leftover := self.running():
            procs.stop_tree(leftover, STOP_GRACE_S)
        self._executor = None
        self.pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.localstack", description="LocalStack on the host (no Docker).")
    parser.add_argument("command", choices=("install", "start", "stop"))
    parser.add_argument("--endpoint", default=os.environ.get("LOCALSTACK_ENDPOINT", names.RUN_ENDPOINT),
                        help=f"where LocalStack listens (default {names.RUN_ENDPOINT}, env LOCALSTACK_ENDPOINT)")
    parser.add_argument("--data-dir", type=Path, default=None, help="state and logs (default: <repo>/.local/localstack)")
    args = parser.parse_args(argv)
    logs.setup()
    # Typed on the command line, a relative path means relative to the CWD.
    stack = HostLocalStack(endpoint=args.endpoint, **({"data_dir": args.data_dir.resolve()} if args.data_dir else {}))
    try:
        if args.command == "install":
            stack.ensure_installed()
            print(f"LocalStack installed in {stack.venv_dir}")
        elif args.command == "stop":
            stack.stop()
            print("LocalStack stopped")
        else:
            # In the foreground until Ctrl-C or SIGTERM; either, even while starting, stops it.
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                started = time.monotonic()
                stack.start()
                print(f"LocalStack ready at {stack.endpoint} in {time.monotonic() - started:.1f} s (log: {stack.log_file}). "
                      f"Ctrl-C to stop.\n  export AWS_ENDPOINT_URL={stack.endpoint}", flush=True)
                return psutil.Process(stack._executor.pid).wait() if stack._executor else 1
            except (KeyboardInterrupt, SystemExit):
                return 0
            finally:
                stack.stop()
    except LocalStackError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
