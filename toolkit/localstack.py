"""A real LocalStack on the host, without Docker ("host mode").

LocalStack is a Python program; its Docker image only packages it. ``localstack-core``
goes into a virtualenv of its own, with Python 3.13 (what this release targets): it
pins boto3, cryptography and friends to versions that would clash with the app's.

    python -m toolkit.localstack install | start | stop  [--endpoint URL] [--data-dir DIR]
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
START_TIMEOUT_S, STOP_GRACE_S = 60.0, 10.0
# `python -m localstack.runtime.main` (what LocalStack's CLI and Docker entrypoint end up running), with
# the Twisted gateway bound to GATEWAY_LISTEN's host: see the script.
RUNTIME_SCRIPT = Path(__file__).with_name("localstack_runtime.py")
# The stamp's name and hash are those of every existing install: changing either reinstalls.
_STAMP_NAME = ".devstack-localstack.stamp"
# What would make the 3.13 interpreter load our 3.11 virtualenv's code.
_LEAKS = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__")

log = logs.get("localstack")


class LocalStackError(RuntimeError):
    """LocalStack could not be installed, started or stopped."""


class PythonNotFoundError(LocalStackError):
    """No usable Python 3.13 interpreter for LocalStack was found."""


def _requirements_hash() -> str:
    """What the install stamp records: a change in either file forces a reinstall."""
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in (REQUIREMENTS_FILE, CONSTRAINTS_FILE))).hexdigest()


def endpoint_answers(endpoint: str, timeout: float = 1.0) -> bool:
    """True if anything speaks HTTP at `endpoint`, whatever the status (a LocalStack in Docker,
    a previous run, something unrelated): reuse it, or start nothing there."""
    if not endpoint.startswith(("http://", "https://")):  # urlopen would read file:// too
        return False
    try:
        urllib.request.urlopen(endpoint.rstrip("/") + "/_localstack/health", timeout=timeout).close()  # noqa: S310
    except urllib.error.HTTPError:
        pass  # an answer all the same
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def _python_version(exe: Path | str) -> tuple[int, int] | None:
    """(major, minor) of an interpreter, or None if it does not run. It must really run:
    a pyenv shim named python3.13 is on PATH even when that version is not selected."""
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"Python (\d+)\.(\d+)", (out.stdout or out.stderr).strip()) if out.returncode == 0 else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def _candidate_pythons() -> Iterator[Path]:
    def newest_first(paths: Iterator[Path]) -> list[Path]:  # .../3.13.10/bin/python3.13 before .../3.13.9/...
        return sorted(paths, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)], reverse=True)

    if on_path := shutil.which("python3.13"):
        yield Path(on_path)
    for pyenv in [*([Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []), Path.home() / ".pyenv"]:
        yield from newest_first((pyenv / "versions").glob("3.13*/bin/python3.13"))
    yield from newest_first((Path.home() / ".local/share/uv/python").glob("cpython-3.13*/bin/python3.13"))  # uv's


def find_python313() -> Path:
    """A working Python 3.13: LOCALSTACK_PYTHON (an explicit choice always wins), else python3.13
    on PATH, pyenv's ($PYENV_ROOT, ~/.pyenv), uv's; each is run with --version before it is accepted."""
    if explicit := os.environ.get("LOCALSTACK_PYTHON"):
        if (version := _python_version(explicit)) != REQUIRED_PYTHON:
            found = f"is Python {version[0]}.{version[1]}" if version else f"does not run (`{explicit} --version` failed)"
            raise PythonNotFoundError(f"LOCALSTACK_PYTHON={explicit} {found}; LocalStack 2026.3 needs a working Python 3.13.")
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
        f"  * with Docker: `docker compose -f docker-compose.localstack.yml up -d`, AWS_ENDPOINT_URL={names.RUN_ENDPOINT}.")


class HostLocalStack:
    """A LocalStack process on this machine, in its own Python 3.13 virtualenv."""

    def __init__(self, venv_dir: Path = names.LOCALSTACK_VENV, data_dir: Path = names.LOCAL_DIR / "localstack",
                 endpoint: str = names.RUN_ENDPOINT) -> None:
        # Relative paths are the repository's: tests, scripts and the CLI share one install.
        self.venv_dir, self.data_dir, self.endpoint = names.ROOT / venv_dir, names.ROOT / data_dir, endpoint.rstrip("/")
        url = urllib.parse.urlsplit(self.endpoint)
        if url.scheme != "http" or not url.hostname or not url.port:
            raise LocalStackError(f"endpoint must look like http://HOST:PORT, got {endpoint!r}")
        self.host, self.port = url.hostname, url.port
        self.python = self.venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        # Another port gets a folder of its own: a second LocalStack from the same checkout
        # (tests beside `make run`) neither truncates the first one's log nor wipes its temp dir.
        self.run_dir = self.data_dir if self.port == names.RUN_LOCALSTACK_PORT else self.data_dir / f"port-{self.port}"
        self.log_file, self.pid_file = self.run_dir / "localstack.log", self.run_dir / "localstack.pid"
        self._executor: procs.Process | None = None

    def is_installed(self) -> bool:
        stamp = self.venv_dir / _STAMP_NAME
        return stamp.exists() and stamp.read_text().strip() == _requirements_hash() and self.python.exists()

    def ensure_installed(self) -> None:
        """Create the virtualenv and install LocalStack, unless the stamp says it is done (milliseconds)."""
        if self.is_installed():
            return
        # Two first runs at once (a test run beside `make run`) must not both pip install.
        with fasteners.InterProcessLock(self.data_dir / "install.lock"):
            if self.is_installed():
                return
            install_log, started = self.data_dir / "install.log", time.monotonic()
            # uv (make venv installs it beside this interpreter) when there is one: ~4x faster than pip here.
            # --seed: pip in it too, for the executor plugin (infra/deploy_localstack.py).
            uv = Path(sys.executable).with_name("uv")
            if _python_version(self.python) != REQUIRED_PYTHON:  # else reused: the installer applies the difference
                base = find_python313()
                log.info("creating %s with %s", self.venv_dir, base)
                self._run_logged([str(uv), "venv", "--quiet", "--clear", "--seed", "--python", str(base), str(self.venv_dir)]
                                 if uv.exists() else [str(base), "-m", "venv", "--clear", str(self.venv_dir)], install_log)
            log.info("installing LocalStack into %s (%s; log: %s)", self.venv_dir,
                     "uv, seconds with a warm cache" if uv.exists() else "pip, about a minute the first time", install_log)
            if uv.exists():
                install = [str(uv), "pip", "install", "--python", str(self.python)]
            else:
                install = [str(self.python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
            self._run_logged([*install, "-r", str(REQUIREMENTS_FILE), "-c", str(CONSTRAINTS_FILE)], install_log)
            # Written last, so an interrupted install is retried next time.
            (self.venv_dir / _STAMP_NAME).write_text(_requirements_hash() + "\n")
            log.info("LocalStack installed in %.0f s", time.monotonic() - started)

    @staticmethod
    def _run_logged(cmd: list[str], log_path: Path) -> None:
        with log_path.open("ab") as out:
            out.write(f"\n$ {' '.join(cmd)}\n".encode())
            out.flush()
            env = {k: v for k, v in os.environ.items() if k not in _LEAKS}
            code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
        if code != 0:
            raise LocalStackError(f"exit code {code}: {' '.join(cmd)}\n--- last lines of {log_path} ---\n{procs.tail(log_path)}")

    def environment(self, extra_env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment LocalStack is started with."""
        host_port = f"{self.host}:{self.port}"
        return {
            **{k: v for k, v in os.environ.items() if k not in _LEAKS},
            # Twisted, LocalStack's default: a quarter less CPU a request than Hypercorn. It ignores
            # GATEWAY_LISTEN's host (0.0.0.0: an unauthenticated AWS on the LAN) unless started by
            # RUNTIME_SCRIPT, which binds it there.
            "GATEWAY_LISTEN": host_port, "GATEWAY_SERVER": "twisted", "LOCALSTACK_HOST": host_port,
            # Path-style queue URLs (http://HOST:PORT/queue/REGION/ACCOUNT/NAME) need no DNS;
            # the default strategy invents sqs.REGION.localhost.localstack.cloud hosts.
            "SQS_ENDPOINT_STRATEGY": "path",
            # Its DNS server needs upstream DNS and port 53: neither offline nor unprivileged.
            "DNS_ADDRESS": "0",
            "SERVICES": DEFAULT_SERVICES,
            # State, caches and the temp dir, which defaults to the machine-wide /tmp/localstack
            # (wiped at start-up: two instances would clobber each other). LOCALSTACK_VOLUME_DIR
            # is read by its Docker CLI only; set for tools that look.
            "FILESYSTEM_ROOT": str(self.run_dir / "filesystem"), "LOCALSTACK_VOLUME_DIR": str(self.run_dir / "volume"),
            # It runs on this host, whatever it guesses: on a machine that looks like a container
            # to it (a CI runner, a dev container) it ignored FILESYSTEM_ROOT for the container's
            # /tmp/localstack and /var/lib/localstack, shared by every instance, and two starting at
            # once wrote and read one TLS certificate file there (a start failed on "PEM lib").
            "OVERRIDE_IN_DOCKER": "0",
            # No TLS certificate download at start (offline), no telemetry.
            "SKIP_SSL_CERT_DOWNLOAD": "1", "DISABLE_EVENTS": "1",
            # Per-message SQS metrics go to CloudWatch from background threads; at shutdown
            # botocore retries them against the stopped gateway: ~10 s stops instead of ~1 s.
            "SQS_DISABLE_CLOUDWATCH_METRICS": "1",
            **(extra_env or {}),
        }

    def start(self, extra_env: dict[str, str] | None = None, *, detach: bool = False) -> None:
        """Install if needed, start LocalStack and wait until it answers (at most 60 s). Refuses
        a port something holds. A `detach`ed LocalStack outlives this process; `stop()`, from
        any process, finds it by its pid file."""
        if who := procs.holder(self.port, self.host):
            raise LocalStackError(
                f"{self.endpoint} is taken by {who}. If it is a LocalStack you started (host or Docker), use it via "
                f"AWS_ENDPOINT_URL={self.endpoint}; otherwise stop it (`python -m toolkit.localstack stop` stops one started "
                "from here) or choose another endpoint (--endpoint http://127.0.0.1:PORT).")
        self.ensure_installed()
        for sub in ("filesystem", "volume"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.log_file.write_bytes(b"")
        try:
            self._executor = procs.start([str(self.python), "-P", str(RUNTIME_SCRIPT)],
                                         ready=f"{self.endpoint}/_localstack/health", log_file=self.log_file,
                                         env=self.environment(extra_env), timeout=START_TIMEOUT_S, cwd=self.run_dir,
                                         detach=detach)
        except procs.StartError as err:
            raise LocalStackError(f"LocalStack did not come up at {self.endpoint}: {err}") from err
        assert self._executor.process is not None
        self.pid_file.write_text(f"{self._executor.process.pid}\n")

    def running(self) -> psutil.Process | None:
        """The LocalStack started from this run dir (by any process), if it runs."""
        try:
            return procs.find(int(self.pid_file.read_text()), RUNTIME_SCRIPT.name)
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
    # Typed on the command line, a relative path means relative to the CWD.
    parser.add_argument("--data-dir", type=lambda path: Path(path).resolve(), default=names.LOCAL_DIR / "localstack",
                        help="state and logs (default: <repo>/.local/localstack)")
    args = parser.parse_args(argv)
    logs.setup()
    stack = HostLocalStack(data_dir=args.data_dir, endpoint=args.endpoint)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.command == "install":
            stack.ensure_installed()
        elif args.command == "start":  # in the foreground, until Ctrl-C or SIGTERM
            stack.start()
            print(f"LocalStack ready (log: {stack.log_file}). Ctrl-C to stop.\n  export AWS_ENDPOINT_URL={stack.endpoint}",
                  flush=True)
            if running := stack.running():
                running.wait()
    except LocalStackError as err:
        log.error("%s", err)
        return 1
    except (KeyboardInterrupt, SystemExit):  # also while it starts
        pass
    finally:
        if args.command != "install":  # `stop`, or the end of `start`
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
