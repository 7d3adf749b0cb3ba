"""Runtime side of LocalStack's Lambda executor protocol (README.md), for the local-process executor.

Stands in for LocalStack's Go "init" binary plus the AWS Python runtime client, under the
functions' interpreter (LOCALSTACK_LAMBDA_PYTHON); standard library only. Two processes per
execution environment:

* supervisor (default mode): serves ``POST /invoke`` from LocalStack on 127.0.0.1 (ephemeral
  port), collects logs, enforces the function timeout, and calls LocalStack's executor endpoint
  (``LOCALSTACK_RUNTIME_ENDPOINT``) back: ``status/<id>/ready`` or ``/error`` at start,
  ``invocations/<request id>/logs`` then ``/response`` or ``/error`` per invocation;
* worker (``--worker``): imports the handler (init) and runs one invocation at a time, talking to
  the supervisor over two pipes (JSON lines); its stdout/stderr are the function's logs. On a
  timeout the supervisor kills the worker's process group and the next invoke starts a new one
  (a fresh init, as Lambda does).
"""


from __future__ import annotations

import codecs
import contextlib
import datetime
import decimal
import importlib
import json
import logging
import math
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NoReturn

SENTINEL = b"\x00\x1eLSEXEC-END\x1e\x00"
RUNTIME_FILE = os.path.abspath(__file__)
HOST = "127.0.0.1"
LOG_BUFFER_CAP = 8 * 1024 * 1024  # per invocation, logs beyond that are truncated (head dropped)
ECHO_CAP = 16 * 1024 * 1024  # copy of function output in the runtime's own output (LocalStack log file)

Handler = Callable[[Any, "LambdaContext"], Any]


def _parent_watchdog(on_orphaned: Callable[[], object]) -> None:
    """Exit when our parent goes away (LocalStack or the supervisor killed without cleanup)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                on_orphaned()

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


# ================================================================================================
# worker
# ================================================================================================
class FaultError(Exception):
    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.payload: dict[str, Any] = {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


class LambdaContext:
    """Mirrors awslambdaric's LambdaContext attributes."""

    def __init__(self, request_id: str, invoked_function_arn: str | None, deadline_ms: int, trace_id: str | None) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        # a string, as in the AWS Python runtime
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.identity = None
        self.client_context = None
        self.tenant_id = None
        self.xray_trace_id = trace_id
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def log(self, msg: object) -> None:
        sys.stdout.write(str(msg))


_CURRENT_REQUEST_ID = [""]


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _CURRENT_REQUEST_ID[0]
        return True


def _setup_logging() -> None:
    """Root logger handler in the AWS Python runtime's format (level left at WARNING)."""
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


def _user_stack(tb: TracebackType | None) -> list[str]:
    frames = [f for f in traceback.extract_tb(tb) if os.path.abspath(f.filename) != RUNTIME_FILE]
    return traceback.format_list(frames)


def _error_payload(exc: BaseException, request_id: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": _user_stack(exc.__traceback__),
    }
    if request_id:
        payload["requestId"] = request_id
    return payload


def _error_text(payload: dict[str, Any]) -> str:
    """An error as the AWS runtime logs it."""
    lines = [f"[ERROR] {payload.get('errorType')}: {payload.get('errorMessage')}"]
    if payload.get("stackTrace"):
        lines.append("Traceback (most recent call last):")
        lines.extend(s.rstrip("\n") for s in payload["stackTrace"])
    return "\n".join(lines) + "\n"


def _load_handler(handler_name: str) -> Handler:
    """Same rules and error types as the AWS Python runtime (awslambdaric)."""
    try:
        modname, fname = handler_name.rsplit(".", 1)
    except ValueError as e:
        raise FaultError("Runtime.MalformedHandlerName", f"Bad handler '{handler_name}': {e}") from None
    if modname.split(".")[0] in sys.builtin_module_names:
        raise FaultError("Runtime.BuiltInModuleConflict", f"Cannot use built-in module {modname} as a handler module")
    try:
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultError("Runtime.ImportModuleError", f"Unable to import module '{modname}': {e}") from None
    except SyntaxError as e:
        trace = [f'  File "{e.filename}" Line {e.lineno}\n    {e.text}']
        raise FaultError("Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {e}", trace) from None
    try:
        handler: Handler = getattr(module, fname)
    except AttributeError:
        fault = FaultError("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")

        def fault_handler(event: Any, context: LambdaContext) -> NoReturn:  # reported at invoke time, like AWS
            raise fault from None

        return fault_handler
    return handler


def _json_default(obj: object) -> int | float:
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _end_of_output() -> None:
    """Mark the end of an invocation's output in the log stream (stdout and stderr share a pipe)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a handler may have closed or replaced it
            stream.flush()
    os.write(1, SENTINEL)


def _invoke(handler: Handler, msg: dict[str, Any]) -> tuple[bool, str]:
    """Run one invocation; (is_error, body)."""
    request_id = msg["invoke-id"]
    context = LambdaContext(request_id, msg.get("invoked-function-arn"), msg["deadline_ms"], msg.get("trace-id"))
    try:
        raw = msg.get("payload") or ""
        try:
            event = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise FaultError("Runtime.UnmarshalError", f"Unable to unmarshal input: {e}") from None
        result = handler(event, context)
        if isinstance(result, bytes | bytearray):
            return False, bytes(result).decode("utf-8", errors="replace")
        try:
            return False, json.dumps(result, default=_json_default)
        except (TypeError, ValueError) as e:
            raise FaultError("Runtime.MarshalError", f"Unable to marshal response: {e}") from None
    except FaultError as e:
        error = dict(e.payload, requestId=request_id)
    except Exception as e:  # noqa: BLE001 - the handler's error is the invocation's result
        error = _error_payload(e, request_id)
    sys.stdout.write(_error_text(error))
    return True, json.dumps(error)


def worker_main() -> None:
    cmd_fd = int(os.environ.pop("_LSEXEC_CMD_FD"))
    res_fd = int(os.environ.pop("_LSEXEC_RES_FD"))

    def orphaned() -> None:
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        finally:
            os._exit(1)

    _parent_watchdog(orphaned)
    results = os.fdopen(res_fd, "w", encoding="utf-8")
    commands = os.fdopen(cmd_fd, "r", encoding="utf-8")

    def send(msg: dict[str, Any]) -> None:
        results.write(json.dumps(msg) + "\n")
        results.flush()

    _setup_logging()

    init_start = time.time()
    try:
        handler = _load_handler(os.environ.get("_HANDLER", ""))
    except FaultError as e:
        init_error: dict[str, Any] | None = e.payload
    except Exception as e:  # noqa: BLE001 - any error of the handler's module is an init error
        init_error = _error_payload(e)
    else:
        init_error = None
    init_ms = (time.time() - init_start) * 1000
    if init_error is not None:
        sys.stdout.write(_error_text(init_error))
        _end_of_output()
        send({"type": "init_error", "error": init_error, "init_ms": init_ms})
        sys.exit(1)
    _end_of_output()
    send({"type": "ready", "init_ms": init_ms})

    for line in commands:
        msg = json.loads(line)
        _CURRENT_REQUEST_ID[0] = msg["invoke-id"]
        os.environ["_X_AMZN_TRACE_ID"] = msg.get("trace-id") or ""
        is_error, body = _invoke(handler, msg)
        _end_of_output()
        send({"type": "result", "is_error": is_error, "body": body})
        _CURRENT_REQUEST_ID[0] = ""


# ================================================================================================
# supervisor
# ================================================================================================
class LogCollector:
    """Function output since the last drain (like the Go init's LogCollector), echoed to stdout."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.parts: list[str] = []
        self.size = 0
        self.echoed = 0

    def put(self, text: str) -> None:
        if not text:
            return
        with self.lock:
            self.parts.append(text)
            self.size += len(text)
            while self.size > LOG_BUFFER_CAP and len(self.parts) > 1:
                self.size -= len(self.parts.pop(0))
            if self.echoed < ECHO_CAP:
                self.echoed += len(text)
                with contextlib.suppress(OSError, ValueError):  # our own stdout gone: logs still collected
                    sys.stdout.write(text)
                    if self.echoed >= ECHO_CAP:
                        sys.stdout.write("\n[local-process runtime: further output not echoed]\n")
                    sys.stdout.flush()

    def drain(self) -> str:
        with self.lock:
            text, self.parts, self.size = "".join(self.parts), [], 0
        return text


class WorkerExited(Exception):
    pass


class Worker:
    def __init__(self, logs: LogCollector) -> None:
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        env = {**os.environ, "_LSEXEC_CMD_FD": str(cmd_r), "_LSEXEC_RES_FD": str(res_w)}
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The handler's import path, as on Lambda: the task root first (-P: never this runtime's
        # own directory). The worker runs there: the supervisor's working directory is the code.
        task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [task_root, os.environ.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-P", RUNTIME_FILE, "--worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(cmd_r, res_w),
            start_new_session=True,
        )
        os.close(cmd_r)
        os.close(res_w)
        self.commands = os.fdopen(cmd_w, "w", encoding="utf-8")
        self.res_fd = res_r
        self.res_buf = b""
        self.logs = logs
        self.output_marks = threading.Semaphore(0)
        self.pump = threading.Thread(target=self._pump_output, name="worker-output", daemon=True)
        self.pump.start()

    def _pump_output(self) -> None:
        assert self.proc.stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.proc.stdout.fileno()
        buf = b""
        keep = len(SENTINEL) - 1
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while (idx := buf.find(SENTINEL)) >= 0:
                self.logs.put(decoder.decode(buf[:idx]))
                buf = buf[idx + len(SENTINEL) :]
                self.output_marks.release()
            if len(buf) > keep:
                self.logs.put(decoder.decode(buf[:-keep]))
                buf = buf[-keep:]
        self.logs.put(decoder.decode(buf, final=True))
        self.output_marks.release()

    def wait_output_mark(self, timeout: float = 2.0) -> None:
        self.output_marks.acquire(timeout=timeout)

    def send(self, msg: dict[str, Any]) -> None:
        try:
            self.commands.write(json.dumps(msg) + "\n")
            self.commands.flush()
        except (OSError, ValueError):
            raise WorkerExited from None

    def read(self, deadline: float | None) -> dict[str, Any] | None:
        """Next message from the worker; None on timeout (deadline None = wait forever)."""
        while b"\n" not in self.res_buf:
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            ready, _, _ = select.select([self.res_fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.res_fd, 1 << 20)
            if not chunk:
                raise WorkerExited
            self.res_buf += chunk
        line, self.res_buf = self.res_buf.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line.decode("utf-8"))
        return message

    def max_memory_mb(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return math.ceil(int(line.split()[1]) / 1024.0)
        except (OSError, ValueError, IndexError):
            pass  # no /proc (macOS), or the worker is gone: report 0
        return 0

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.pump.join(timeout=1)  # collect what the worker printed before it was killed
        with contextlib.suppress(OSError):
            self.commands.close()
        with contextlib.suppress(OSError):
            os.close(self.res_fd)

    def exit_error(self) -> dict[str, Any]:
        """After WorkerExited: wait for the process, collect its last output, describe the exit."""
        code = self.proc.wait()
        self.wait_output_mark()
        return {"errorType": "Runtime.ExitError", "errorMessage": f"Runtime exited with error: exit status {code}"}


class Supervisor:
    def __init__(self) -> None:
        self.endpoint = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"].rstrip("/")
        self.runtime_id = os.environ["LOCALSTACK_RUNTIME_ID"]
        self.timeout = int(float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT") or 3))
        self.memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.logs = LogCollector()
        self.worker: Worker | None = None
        self.pending_init_ms: float | None = None
        self.invocations: queue.Queue[dict[str, Any]] = queue.Queue()
        # LocalStack is on this machine: never through a proxy of the environment.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- callbacks to LocalStack ---------------------------------------------------------------
    def post(self, path: str, body: str) -> bool:
        url = self.endpoint + path  # http://<LocalStack's gateway>/_localstack_lambda/<id>
        for attempt in range(5):
            request = urllib.request.Request(  # noqa: S310 - LocalStack's http:// endpoint, from LocalStack
                url, data=body.encode(), method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with self.opener.open(request, timeout=30) as response:
                    response.read()
                return True
            except urllib.error.HTTPError as e:
                self.diag(f"callback {path} answered HTTP {e.code}")
                return False
            except OSError as e:  # URLError included
                self.diag(f"callback {path} failed ({e}), retrying")
                time.sleep(0.2 * (attempt + 1))
        return False

    @staticmethod
    def diag(message: str) -> None:
        sys.stdout.write(f"[local-process runtime] {message}\n")
        sys.stdout.flush()

    # --- worker management ---------------------------------------------------------------------
    def start_worker(self, deadline: float | None) -> dict[str, Any] | str | None:
        """Start a worker and wait for its init: None when ready, else an error payload, or "timeout"."""
        spawned = time.time()
        worker = Worker(self.logs)
        try:
            msg = worker.read(deadline)
        except WorkerExited:
            exited = worker.exit_error()
            worker.kill()
            return exited
        if msg is None:
            worker.kill()
            return "timeout"
        worker.wait_output_mark()
        if msg.get("type") != "ready":
            worker.kill()
            error: dict[str, Any] = msg.get("error") or {"errorMessage": "init failed", "errorType": "Runtime.Unknown"}
            return error
        self.worker = worker
        # interpreter start + handler import, reported once as "Init Duration"
        self.pending_init_ms = (time.time() - spawned) * 1000
        return None

    def discard_worker(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def shutdown(self, *_: object) -> NoReturn:
        self.discard_worker()
        os._exit(0)

    # --- invocation ----------------------------------------------------------------------------
    def run_invocations(self) -> None:
        while True:
            request = self.invocations.get()
            try:
                self.handle(request)
            except Exception:  # noqa: BLE001 - report it as the invocation's error, serve the next one
                self.diag("internal error:\n" + traceback.format_exc())
                error = {"errorType": "Runtime.LocalProcessExecutorError", "errorMessage": traceback.format_exc()}
                self.post(f"/invocations/{request.get('invoke-id', '')}/error", json.dumps(error))

    def handle(self, request: dict[str, Any]) -> None:
        request_id = request["invoke-id"]
        start = time.time()
        deadline = start + self.timeout
        self.logs.put(f"START RequestId: {request_id} Version: {self.version}\n")
        is_error, body, max_memory = True, None, 0

        if self.worker is None or self.worker.proc.poll() is not None:  # none yet, or it exited
            self.discard_worker()
            init_error = self.start_worker(deadline)
            if init_error == "timeout":
                body = self.timed_out(request_id)
            elif isinstance(init_error, dict):
                if init_error.get("errorType") == "Runtime.ExitError":
                    self.logs.put(_error_text(init_error))
                body = json.dumps(dict(init_error, requestId=request_id))

        if body is None and self.worker is not None:
            worker = self.worker
            try:
                worker.send(dict(request, deadline_ms=int(deadline * 1000)))
                result = worker.read(deadline)
            except WorkerExited:
                text = f"RequestId: {request_id} Error: {worker.exit_error()['errorMessage']}"
                self.logs.put(text + "\nRuntime.ExitError\n")
                body = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": text})
                self.discard_worker()
            else:
                max_memory = worker.max_memory_mb()
                if result is None:
                    body = self.timed_out(request_id)
                else:
                    worker.wait_output_mark()
                    is_error, body = bool(result.get("is_error")), result.get("body")

        duration_ms = (time.time() - start) * 1000
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: {math.ceil(duration_ms) or 1} ms\t"
            f"Memory Size: {self.memory} MB\tMax Memory Used: {max_memory} MB"
        )
        if self.pending_init_ms is not None:
            report += f"\tInit Duration: {self.pending_init_ms:.2f} ms"
            self.pending_init_ms = None
        self.logs.put(f"END RequestId: {request_id}\n{report}\t\n")
        self.post(f"/invocations/{request_id}/logs", json.dumps({"logs": self.logs.drain()}))
        outcome = "error" if is_error else "response"
        self.post(f"/invocations/{request_id}/{outcome}", body if body is not None else "null")

    def timed_out(self, request_id: str) -> str:
        """Kill the worker (its whole process group); the next invoke starts a fresh one."""
        self.discard_worker()
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = f"{now} {request_id} Task timed out after {self.timeout}.00 seconds"
        self.logs.put(message + "\n")
        return json.dumps({"errorMessage": message})

    # --- startup -------------------------------------------------------------------------------
    def main(self) -> None:
        signal.signal(signal.SIGTERM, self.shutdown)
        signal.signal(signal.SIGINT, self.shutdown)
        _parent_watchdog(self.shutdown)
        supervisor = self

        class InvokeHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # LocalStack keeps its connection alive: without TCP_NODELAY each reply's body (a second
            # send after the headers) waits for the delayed ACK, 40 ms an invocation.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.path.rstrip("/") != "/invoke":
                    self._reply(404, b"not found")
                    return
                try:
                    request = json.loads(raw.decode("utf-8"))
                    request["invoke-id"]
                except (ValueError, KeyError, TypeError):
                    self._reply(400, b"bad invoke request")
                    return
                supervisor.invocations.put(request)
                self._reply(200, b"OK")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((HOST, 0), InvokeHandler)
        server.daemon_threads = True
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="invoke-server", daemon=True).start()

        init_error = self.start_worker(None)  # LocalStack enforces the environment startup timeout
        if isinstance(init_error, dict):
            if init_error.get("errorType") == "Runtime.ExitError":
                self.logs.put(_error_text(init_error))
            self.post(f"/status/{self.runtime_id}/error", json.dumps(init_error))
            # LocalStack stops the environment after a startup error; exit in any case
            time.sleep(1)
            self.shutdown()
        self.post(f"/status/{self.runtime_id}/ready", json.dumps({"port": port}))
        self.run_invocations()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main()
    else:
        Supervisor().main()
