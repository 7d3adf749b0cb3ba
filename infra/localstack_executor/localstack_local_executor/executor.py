"""RuntimeExecutor that runs each Lambda execution environment as a local process (README.md).

``start(env_vars)`` spawns ``lambda_runtime.py`` under LOCALSTACK_LAMBDA_PYTHON; that runtime
process plays LocalStack's Go init: it serves ``POST /invoke`` on 127.0.0.1 and reports to
LocalStack's executor endpoint, whose own ``invoke`` this executor uses unchanged.
"""


from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
from concurrent.futures import InvalidStateError
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from localstack import config
from localstack.aws.api.lambda_ import PackageType
from localstack.services.lambda_.invocation.executor_endpoint import ExecutorEndpoint, StatusErrorException
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

from localstack_local_executor import PLUGIN_NAME, WRITTEN_FOR_LOCALSTACK

LOG = logging.getLogger(__name__)

RUNTIME_SCRIPT = Path(__file__).with_name("lambda_runtime.py")
# The interpreter that runs function code, chosen by whoever starts LocalStack
# (infra/deploy_localstack.py passes the project's own, which has the app's dependencies the
# Lambda runtime provides on AWS). This plugin runs inside LocalStack's interpreter and cannot
# import the project's toolkit, so it does not look for one itself.
PYTHON_ENV = "LOCALSTACK_LAMBDA_PYTHON"
# Environment variables of the LocalStack process passed through to function processes.
PASSTHROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
                   "REQUESTS_CA_BUNDLE", "LD_LIBRARY_PATH")
LOOPBACK = "127.0.0.1"
LOG_TAIL_BYTES = 64 * 1024
STOP_GRACE_SECONDS = 3


def _python() -> str:
    python = os.environ.get(PYTHON_ENV, "").strip()
    if not python:
        raise LambdaRuntimeException(f"set {PYTHON_ENV} to the interpreter that runs the functions' code")
    return python


class LocalProcessExecutorEndpoint(ExecutorEndpoint):
    """LocalStack's executor endpoint, plus: the runtime process reports its port in status/ready."""

    def __init__(self, executor_id: str) -> None:
        super().__init__(executor_id, container_address=LOOPBACK, container_port=None)
        self.current_request_id: str | None = None

    def status_ready(self, request: Any, executor_id: str) -> Any:
        try:
            self.container_port = int(json.loads(request.data or b"{}")["port"])
        except (ValueError, TypeError, KeyError):
            LOG.warning("local-process runtime sent an unreadable ready payload: %r", request.data)
        return super().status_ready(request, executor_id)

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        self.current_request_id = payload.get("invoke-id")
        return super().invoke(payload)


class LocalProcessRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id=id, function_version=function_version)
        self.executor_endpoint = LocalProcessExecutorEndpoint(self.id)
        self.process: subprocess.Popen[bytes] | None = None
        logs_dir = Path(tempfile.gettempdir()) / "lambda-local-process"
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = logs_dir / f"{self.id}.log"
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, env_vars: dict[str, str]) -> None:
        self.executor_endpoint.start()
        code_dir = str(self.function_version.config.code.get_unzipped_code_location())
        env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
        # LocalStack's variables include the credentials its STS issued for the function's role.
        env.update({k: str(v) for k, v in env_vars.items() if v is not None})
        # The Lambda paths point to this machine instead of /var/task, /var/runtime.
        env["LAMBDA_TASK_ROOT"] = code_dir
        env["LAMBDA_RUNTIME_DIR"] = str(RUNTIME_SCRIPT.parent)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [_python(), "-u", str(RUNTIME_SCRIPT)],
                env=env,
                cwd=code_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        LOG.debug("local-process executor %s: runtime pid %s for %s", self.id, self.process.pid,
                  self.function_version.qualified_arn)
        threading.Thread(target=self._watch, args=(self.process,), name=f"lambda-local-process-watch-{self.id}",
                         daemon=True).start()
        self.executor_endpoint.wait_for_startup()

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        """Fail the pending startup or invocation when the runtime process dies unexpectedly."""
        code = process.wait()
        if self._stopping:
            return
        message = f"Runtime exited with error: exit status {code}. Runtime output (tail): {self.get_logs()[-2000:]}"
        payload = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": message}).encode()
        endpoint = self.executor_endpoint
        # InvalidStateError: LocalStack completed the future meanwhile.
        startup = endpoint.startup_future
        if startup is not None and not startup.done():
            with contextlib.suppress(InvalidStateError):
                startup.set_exception(StatusErrorException("Environment startup failed", payload))
        invocation = endpoint.invocation_future
        if invocation is not None and not invocation.done():
            result = InvocationResult(request_id=endpoint.current_request_id or "", payload=payload, is_error=True,
                                      logs=endpoint.logs or message)
            with contextlib.suppress(InvalidStateError):
                invocation.set_result(result)

    def stop(self) -> None:
        self._stopping = True
        try:
            self.executor_endpoint.shutdown()
        except Exception as exc:  # noqa: BLE001 - e.g. never started; stopping must go on
            LOG.debug("Error shutting down executor endpoint %s: %s", self.id, exc)
        process = self.process
        if process is not None and process.poll() is None:
            # The runtime kills its handler worker on SIGTERM, then exits.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_GRACE_SECONDS)
        self.log_path.unlink(missing_ok=True)

    # --- addresses -------------------------------------------------------------------------------
    def get_address(self) -> str:
        return LOOPBACK

    def get_endpoint_from_executor(self) -> str:
        if config.HOSTNAME_FROM_LAMBDA:
            return str(config.HOSTNAME_FROM_LAMBDA)
        host = str(config.GATEWAY_LISTEN[0].host)
        return LOOPBACK if host in ("", "0.0.0.0", "::", "[::]") else host  # noqa: S104 - compared, not bound

    def get_runtime_endpoint(self) -> str:
        return (f"http://{self.get_endpoint_from_executor()}:{config.GATEWAY_LISTEN[0].port}"
                f"{self.executor_endpoint.get_endpoint_prefix()}")

    # --- invocations -----------------------------------------------------------------------------
    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        return self.executor_endpoint.invoke(payload)

    def get_logs(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                return f.read().decode("utf-8", errors="replace")
        except OSError:
            return "Runtime process logs not available"

    # --- versions --------------------------------------------------------------------------------
    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        config_ = function_version.config
        if config_.package_type != PackageType.Zip:
            raise LambdaRuntimeException(f"The {PLUGIN_NAME} executor only runs Zip-packaged functions")
        if not (config_.runtime or "").startswith("python"):
            raise LambdaRuntimeException(f"The {PLUGIN_NAME} executor only runs Python runtimes, not {config_.runtime!r}")
        if config_.layers:
            raise LambdaRuntimeException(f"The {PLUGIN_NAME} executor does not support layers")
        _python()
        config_.code.prepare_for_execution()  # unzips the code

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass  # the unzipped code is LocalStack's own cache, destroyed with the code

    @classmethod
    def validate_environment(cls) -> bool:
        with contextlib.suppress(PackageNotFoundError):
            installed = version("localstack-core")
            if installed != WRITTEN_FOR_LOCALSTACK:
                LOG.warning("%s executor was written for localstack-core %s, running on %s: the executor protocol is "
                            "internal to LocalStack and may have changed", PLUGIN_NAME, WRITTEN_FOR_LOCALSTACK, installed)
        LOG.info("Lambda functions run as local processes (%s executor)", PLUGIN_NAME)
        return True
