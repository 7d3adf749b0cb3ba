"""RuntimeExecutor that runs each Lambda execution environment as a local process.

LocalStack side of the executor protocol (see README.md for the whole protocol):

* ``start(env_vars)`` spawns ``lambda_runtime.py`` (stdlib only) with the Python interpreter that
  matches the function's runtime. That "runtime process" plays the part of LocalStack's Go init
  binary: it binds an HTTP server on 127.0.0.1 (ephemeral port), imports the handler and calls back
  ``POST {LOCALSTACK_RUNTIME_ENDPOINT}/status/{LOCALSTACK_RUNTIME_ID}/ready`` (body ``{"port": N}``)
  or ``.../error`` (body: the init error JSON).
* ``invoke(payload)`` is LocalStack's own ``ExecutorEndpoint.invoke``: it POSTs
  ``{"invoke-id", "invoked-function-arn", "payload", "trace-id"}`` to ``http://127.0.0.1:N/invoke``
  and waits for the runtime process to POST ``/invocations/<id>/logs`` then ``/response`` or
  ``/error`` to the executor endpoint (LocalStack's gateway, ``/_localstack_lambda/<executor-id>``).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import InvalidStateError
from pathlib import Path

from localstack import config
from localstack.aws.api.lambda_ import PackageType
from localstack.services.lambda_.invocation.executor_endpoint import (
    ExecutorEndpoint,
    StatusErrorException,
)
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)

from localstack_local_executor import PLUGIN_NAME, WRITTEN_FOR_LOCALSTACK

LOG = logging.getLogger(__name__)

RUNTIME_SCRIPT = Path(__file__).with_name("lambda_runtime.py")
PYTHON_OVERRIDE_ENV = "LOCALSTACK_LAMBDA_PYTHON"
# environment variables of the LocalStack process that are passed through to function processes
PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "LD_LIBRARY_PATH",
)
LOG_TAIL_BYTES = 64 * 1024
STOP_GRACE_SECONDS = 3

_PYTHON_CACHE: dict[str, str] = {}
_PYTHON_CACHE_LOCK = threading.Lock()


def _logs_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "lambda-local-process"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _probe_python(candidate: str) -> str | None:
    """Return "X.Y" for a working interpreter, None otherwise."""
    try:
        out = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=15,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _version_key(path: str) -> tuple:
    # sort pyenv dirs like 3.11.10 above 3.11.9
    match = re.search(r"/versions/([0-9.]+)", path)
    if not match:
        return ()
    return tuple(int(p) for p in match.group(1).split(".") if p.isdigit())


def _python_candidates(version: str) -> list[str]:
    exe = f"python{version}"
    candidates: list[str] = []
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = glob.glob(os.path.join(pyenv_root, "versions", f"{version}*", "bin", exe))
    candidates += sorted(found, key=_version_key, reverse=True)
    shims = os.path.join(pyenv_root, "shims")
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        # pyenv shims fail for versions that are not selected: use the real binaries above instead
        if not directory or os.path.abspath(directory) == os.path.abspath(shims):
            continue
        path = os.path.join(directory, exe)
        if os.access(path, os.X_OK):
            candidates.append(path)
    for path in (f"/usr/local/bin/{exe}", f"/usr/bin/{exe}"):
        if os.access(path, os.X_OK):
            candidates.append(path)
    seen: set[str] = set()
    return [c for c in candidates if not (c in seen or seen.add(c))]


def resolve_python(runtime: str) -> str:
    """Find the interpreter for a Lambda runtime such as ``python3.11``.

    ``LOCALSTACK_LAMBDA_PYTHON`` wins: either one interpreter path used for every Python runtime,
    or a JSON object mapping runtime names (or "*") to interpreter paths.
    """
    with _PYTHON_CACHE_LOCK:
        if runtime in _PYTHON_CACHE:
            return _PYTHON_CACHE[runtime]
        version = runtime[len("python") :]
        override = os.environ.get(PYTHON_OVERRIDE_ENV, "").strip()
        chosen = None
        if override:
            target = override
            if override.startswith("{"):
                try:
                    mapping = json.loads(override)
                except ValueError as e:
                    raise LambdaRuntimeException(f"{PYTHON_OVERRIDE_ENV} is not valid JSON: {e}")
                target = mapping.get(runtime) or mapping.get("*")
            if target:
                target = shutil.which(target) or target
                found_version = _probe_python(target)
                if not found_version:
                    raise LambdaRuntimeException(
                        f"{PYTHON_OVERRIDE_ENV} interpreter '{target}' does not run"
                    )
                if found_version != version:
                    LOG.warning(
                        "%s interpreter %s is Python %s but the function runtime is %s",
                        PYTHON_OVERRIDE_ENV,
                        target,
                        found_version,
                        runtime,
                    )
                chosen = target
        if not chosen:
            for candidate in _python_candidates(version):
                if _probe_python(candidate) == version:
                    chosen = candidate
                    break
        if not chosen:
            raise LambdaRuntimeException(
                f"No local interpreter found for runtime {runtime} (looked for python{version} in "
                f"pyenv versions, PATH, /usr/bin). Set {PYTHON_OVERRIDE_ENV} to an interpreter path."
            )
        LOG.debug("local-process executor: runtime %s -> %s", runtime, chosen)
        _PYTHON_CACHE[runtime] = chosen
        return chosen


def _layer_python_paths(function_version: FunctionVersion, version: str) -> list[str]:
    """Lambda puts layers at /opt; Python finds /opt/python and /opt/python/lib/pythonX.Y/site-packages."""
    paths = []
    for layer in function_version.config.layers or []:
        code = getattr(layer, "code", None)
        if not code:
            continue
        root = Path(code.get_unzipped_code_location())
        for sub in (root / "python" / "lib" / f"python{version}" / "site-packages", root / "python"):
            if sub.is_dir():
                paths.append(str(sub))
    return paths


class LocalProcessExecutorEndpoint(ExecutorEndpoint):
    """LocalStack's executor endpoint, plus: the runtime process reports its port in status/ready."""

    def __init__(self, executor_id: str) -> None:
        super().__init__(executor_id, container_address="127.0.0.1", container_port=None)
        self.current_request_id: str | None = None

    def status_ready(self, request, executor_id: str):
        try:
            data = json.loads(request.data or b"{}")
            if isinstance(data, dict) and data.get("port"):
                self.container_port = int(data["port"])
        except (ValueError, TypeError):
            LOG.warning("local-process runtime sent an unreadable ready payload: %r", request.data)
        return super().status_ready(request, executor_id)

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        self.current_request_id = payload.get("invoke-id")
        return super().invoke(payload)


class LocalProcessRuntimeExecutor(RuntimeExecutor):
    process: subprocess.Popen | None
    executor_endpoint: LocalProcessExecutorEndpoint

    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = LocalProcessExecutorEndpoint(self.id)
        self.process = None
        self.log_path = _logs_dir() / f"{self.id}.log"
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self, env_vars: dict[str, str]) -> None:
        self.executor_endpoint.start()
        config_ = self.function_version.config
        python = resolve_python(config_.runtime)
        version = config_.runtime[len("python") :]
        code_dir = str(config_.code.get_unzipped_code_location())

        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        env.update({k: str(v) for k, v in env_vars.items() if v is not None})
        env.setdefault("AWS_ACCESS_KEY_ID", "test")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
        # the Lambda paths point to this machine instead of /var/task, /var/runtime
        env["LAMBDA_TASK_ROOT"] = code_dir
        env["LAMBDA_RUNTIME_DIR"] = str(RUNTIME_SCRIPT.parent)
        env["_LSEXEC_HOST"] = "127.0.0.1"
        env["_LSEXEC_LAYER_PATHS"] = os.pathsep.join(
            _layer_python_paths(self.function_version, version)
        )
        if config_.code.is_hot_reloading():
            env["_LSEXEC_HOT_RELOAD"] = "1"

        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [python, "-u", str(RUNTIME_SCRIPT)],
                env=env,
                cwd=code_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        LOG.debug(
            "local-process executor %s: started runtime pid %s (%s) for %s",
            self.id,
            self.process.pid,
            python,
            self.function_version.qualified_arn,
        )
        threading.Thread(
            target=self._watch_process,
            args=(self.process,),
            name=f"lambda-local-process-watch-{self.id}",
            daemon=True,
        ).start()
        self.executor_endpoint.wait_for_startup()

    def _watch_process(self, process: subprocess.Popen) -> None:
        """Fail pending startup/invocation futures when the runtime process dies unexpectedly."""
        return_code = process.wait()
        if self._stopping:
            return
        LOG.debug("local-process runtime %s exited with %s", self.id, return_code)
        message = (
            f"Runtime exited with error: exit status {return_code}. "
            f"Runtime output (tail): {self.get_logs()[-2000:]}"
        )
        endpoint = self.executor_endpoint
        payload = json.dumps(
            {"errorType": "Runtime.ExitError", "errorMessage": message}
        ).encode()
        startup = endpoint.startup_future
        if startup is not None and not startup.done():
            try:
                startup.set_exception(StatusErrorException("Environment startup failed", payload))
            except InvalidStateError:
                pass
        invocation = endpoint.invocation_future
        if invocation is not None and not invocation.done():
            try:
                invocation.set_result(
                    InvocationResult(
                        request_id=endpoint.current_request_id or "",
                        payload=payload,
                        is_error=True,
                        logs=endpoint.logs or message,
                    )
                )
            except InvalidStateError:
                pass

    def stop(self) -> None:
        self._stopping = True
        try:
            self.executor_endpoint.shutdown()
        except Exception as e:  # e.g. never started
            LOG.debug("Error shutting down executor endpoint %s: %s", self.id, e)
        process = self.process
        if process is not None and process.poll() is None:
            try:
                # the runtime kills its handler worker on SIGTERM, then exits
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=STOP_GRACE_SECONDS)
            except ProcessLookupError:
                pass
        try:
            self.log_path.unlink(missing_ok=True)
        except OSError:
            pass

    # --- addresses -----------------------------------------------------------------------------
    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        if config.HOSTNAME_FROM_LAMBDA:
            return config.HOSTNAME_FROM_LAMBDA
        host = config.GATEWAY_LISTEN[0].host
        if host in ("", "0.0.0.0", "::", "[::]"):
            return "127.0.0.1"
        return host

    def get_runtime_endpoint(self) -> str:
        return (
            f"http://{self.get_endpoint_from_executor()}:{config.GATEWAY_LISTEN[0].port}"
            f"{self.executor_endpoint.get_endpoint_prefix()}"
        )

    # --- invocations ---------------------------------------------------------------------------
    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        return self.executor_endpoint.invoke(payload)

    def get_logs(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - LOG_TAIL_BYTES))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return "Runtime process logs not available"

    # --- versions ------------------------------------------------------------------------------
    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        config_ = function_version.config
        if config_.package_type != PackageType.Zip:
            raise LambdaRuntimeException(
                f"The {PLUGIN_NAME} executor only runs Zip-packaged functions"
            )
        runtime = config_.runtime or ""
        if not runtime.startswith("python"):
            raise LambdaRuntimeException(
                f"The {PLUGIN_NAME} executor only runs Python runtimes, not '{runtime}'"
            )
        resolve_python(runtime)
        start = time.perf_counter()
        if config_.code:
            config_.code.prepare_for_execution()
        for layer in config_.layers or []:
            if getattr(layer, "code", None):
                layer.code.prepare_for_execution()
        LOG.debug(
            "local-process executor prepared %s in %.1f ms",
            function_version.qualified_arn,
            (time.perf_counter() - start) * 1000,
        )

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        # the unzipped code is LocalStack's own cache (destroyed by the provider with the code)
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        try:
            from importlib.metadata import version

            installed = version("localstack-core")
            if installed != WRITTEN_FOR_LOCALSTACK:
                LOG.warning(
                    "%s executor was written for localstack-core %s, running on %s: the executor "
                    "protocol is internal to LocalStack and may have changed",
                    PLUGIN_NAME,
                    WRITTEN_FOR_LOCALSTACK,
                    installed,
                )
        except Exception:
            pass
        LOG.info("Lambda functions run as local processes (%s executor)", PLUGIN_NAME)
        return True
