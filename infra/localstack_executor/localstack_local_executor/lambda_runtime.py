"""Runtime side of LocalStack's Lambda executor protocol, for the local-process executor.

Stands in for LocalStack's Go "init" binary (plus the AWS Python runtime client) and runs with the
Python of the function's runtime. Standard library only; Python 3.8+.

Two processes per execution environment:

* supervisor (this script, default mode): HTTP server on 127.0.0.1 (ephemeral port) taking
  ``POST /invoke`` from LocalStack, collecting logs, enforcing the function timeout, calling back
  LocalStack's executor endpoint (``LOCALSTACK_RUNTIME_ENDPOINT``):
    POST {endpoint}/status/{runtime_id}/ready        body {"port": N}
    POST {endpoint}/status/{runtime_id}/error        body init error JSON
    POST {endpoint}/invocations/{request_id}/logs     body {"logs": "..."}
    POST {endpoint}/invocations/{request_id}/response body: handler result JSON
    POST {endpoint}/invocations/{request_id}/error    body {"errorMessage", "errorType", ...}
* worker (``--worker``): imports the handler (init phase) and runs one invocation at a time,
  talking to the supervisor over two pipes (JSON lines). Its stdout/stderr are the function logs.
  On timeout the supervisor kills the worker's process group; the next invoke starts a new worker
  (a fresh init, as Lambda does after a timeout).
"""

import codecs
import datetime
import decimal
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SENTINEL = b"\x00\x1eLSEXEC-END\x1e\x00"
RUNTIME_FILE = os.path.abspath(__file__)
RUNTIME_DIR = os.path.dirname(RUNTIME_FILE)
LOG_BUFFER_CAP = 8 * 1024 * 1024  # per invocation, logs beyond that are truncated (head dropped)
ECHO_CAP = 16 * 1024 * 1024  # copy of function output in the runtime's own output (LocalStack log file)


def _utc_now_str():
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parent_watchdog(on_orphaned):
    """Exit when our parent goes away (LocalStack or the supervisor killed without cleanup)."""
    parent = os.getppid()

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                on_orphaned()

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


# ================================================================================================
# worker
# ================================================================================================
class FaultError(Exception):
    def __init__(self, error_type, message, stack=None):
        super().__init__(message)
        self.payload = {"errorMessage": message, "errorType": error_type, "stackTrace": stack or []}


class LambdaContext:
    """Mirrors awslambdaric's LambdaContext attributes."""

    def __init__(self, request_id, invoked_function_arn, deadline_ms, trace_id):
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

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},memory_limit_in_mb={self.memory_limit_in_mb},function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn}])"
        )


_CURRENT_REQUEST_ID = [""]


class _RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.aws_request_id = _CURRENT_REQUEST_ID[0]
        return True


def _setup_logging():
    """Root logger handler in the AWS Python runtime's format (level left at WARNING)."""
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    logging.getLogger().addHandler(handler)


def _user_stack(tb):
    frames = [f for f in traceback.extract_tb(tb) if os.path.abspath(f.filename) != RUNTIME_FILE]
    return traceback.format_list(frames)


def _error_payload(exc, request_id=None):
    payload = {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": _user_stack(exc.__traceback__),
    }
    if request_id:
        payload["requestId"] = request_id
    return payload


def _log_error(payload):
    lines = ["[ERROR] %s: %s" % (payload.get("errorType"), payload.get("errorMessage"))]
    if payload.get("stackTrace"):
        lines.append("Traceback (most recent call last):")
        lines.extend(s.rstrip("\n") for s in payload["stackTrace"])
    sys.stdout.write("\n".join(lines) + "\n")


def _load_handler(handler_name):
    """Same rules and error types as the AWS Python runtime (awslambdaric)."""
    import importlib

    try:
        modname, fname = handler_name.rsplit(".", 1)
    except ValueError as e:
        raise FaultError(
            "Runtime.MalformedHandlerName", "Bad handler '%s': %s" % (handler_name, e)
        )
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultError(
                "Runtime.BuiltInModuleConflict",
                "Cannot use built-in module %s as a handler module" % modname,
            )
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultError(
            "Runtime.ImportModuleError", "Unable to import module '%s': %s" % (modname, e)
        )
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultError(
            "Runtime.UserCodeSyntaxError", "Syntax error in module '%s': %s" % (modname, e), trace
        )
    try:
        return getattr(module, fname)
    except AttributeError:
        fault = FaultError(
            "Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (fname, modname)
        )

        def fault_handler(event, context):  # reported at invoke time, like AWS
            raise fault

        return fault_handler


def _json_default(obj):
    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _end_of_output():
    """Mark the end of an invocation's output in the log stream (stdout and stderr share a pipe)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(1, SENTINEL)


def worker_main():
    cmd_fd = int(os.environ.pop("_LSEXEC_CMD_FD"))
    res_fd = int(os.environ.pop("_LSEXEC_RES_FD"))
    layer_paths = [p for p in os.environ.pop("_LSEXEC_LAYER_PATHS", "").split(os.pathsep) if p]
    for key in [k for k in os.environ if k.startswith("_LSEXEC_")]:
        del os.environ[key]

    def orphaned():
        try:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        finally:
            os._exit(1)

    _parent_watchdog(orphaned)

    results = os.fdopen(res_fd, "w", encoding="utf-8")
    commands = os.fdopen(cmd_fd, "r", encoding="utf-8")

    def send(msg):
        results.write(json.dumps(msg) + "\n")
        results.flush()

    # sys.path like Lambda: task root first, then layers; never this runtime's own directory
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != RUNTIME_DIR]
    sys.path[0:0] = [task_root] + layer_paths
    os.chdir(task_root)
    _setup_logging()

    init_start = time.time()
    try:
        handler = _load_handler(os.environ.get("_HANDLER", ""))
    except FaultError as e:
        payload = e.payload
    except Exception as e:
        payload = _error_payload(e)
    else:
        payload = None
    init_ms = (time.time() - init_start) * 1000
    if payload is not None:
        _log_error(payload)
        _end_of_output()
        send({"type": "init_error", "error": payload, "init_ms": init_ms})
        sys.exit(1)
    _end_of_output()
    send({"type": "ready", "init_ms": init_ms})

    for line in commands:
        msg = json.loads(line)
        request_id = msg["invoke-id"]
        _CURRENT_REQUEST_ID[0] = request_id
        os.environ["_X_AMZN_TRACE_ID"] = msg.get("trace-id") or ""
        context = LambdaContext(
            request_id, msg.get("invoked-function-arn"), msg["deadline_ms"], msg.get("trace-id")
        )
        is_error = False
        try:
            raw = msg.get("payload") or ""
            try:
                event = json.loads(raw) if raw.strip() else {}
            except ValueError as e:
                raise FaultError("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % e)
            result = handler(event, context)
            try:
                body = result if isinstance(result, (bytes, bytearray)) else json.dumps(
                    result, default=_json_default
                )
                if isinstance(body, (bytes, bytearray)):
                    body = bytes(body).decode("utf-8", errors="replace")
            except (TypeError, ValueError) as e:
                raise FaultError("Runtime.MarshalError", "Unable to marshal response: %s" % e)
        except FaultError as e:
            is_error, error = True, dict(e.payload, requestId=request_id)
            _log_error(error)
        except Exception as e:
            is_error, error = True, _error_payload(e, request_id)
            _log_error(error)
        if is_error:
            body = json.dumps(error)
        _end_of_output()
        send({"type": "result", "is_error": is_error, "body": body})
        _CURRENT_REQUEST_ID[0] = ""


# ================================================================================================
# supervisor
# ================================================================================================
class LogCollector:
    """Function output since the last drain (like the Go init's LogCollector), echoed to stdout."""

    def __init__(self):
        self.lock = threading.Lock()
        self.parts = []
        self.size = 0
        self.echoed = 0

    def put(self, text):
        if not text:
            return
        with self.lock:
            self.parts.append(text)
            self.size += len(text)
            while self.size > LOG_BUFFER_CAP and len(self.parts) > 1:
                self.size -= len(self.parts.pop(0))
            if self.echoed < ECHO_CAP:
                self.echoed += len(text)
                try:
                    sys.stdout.write(text)
                    if self.echoed >= ECHO_CAP:
                        sys.stdout.write("\n[local-process runtime: further output not echoed]\n")
                    sys.stdout.flush()
                except Exception:
                    pass

    def drain(self):
        with self.lock:
            text, self.parts, self.size = "".join(self.parts), [], 0
        return text


class WorkerExited(Exception):
    pass


class Worker:
    def __init__(self, logs):
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        env = dict(os.environ)
        env["_LSEXEC_CMD_FD"] = str(cmd_r)
        env["_LSEXEC_RES_FD"] = str(res_w)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            [sys.executable, RUNTIME_FILE, "--worker"],
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

    def _pump_output(self):
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
            while True:
                idx = buf.find(SENTINEL)
                if idx < 0:
                    break
                self.logs.put(decoder.decode(buf[:idx]))
                buf = buf[idx + len(SENTINEL) :]
                self.output_marks.release()
            if len(buf) > keep:
                self.logs.put(decoder.decode(buf[:-keep]))
                buf = buf[-keep:]
        self.logs.put(decoder.decode(buf, final=True))
        self.output_marks.release()

    def wait_output_mark(self, timeout=2.0):
        self.output_marks.acquire(timeout=timeout)

    def send(self, msg):
        try:
            self.commands.write(json.dumps(msg) + "\n")
            self.commands.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise WorkerExited()

    def read(self, deadline):
        """Next message from the worker; None on timeout (deadline None = wait forever)."""
        while b"\n" not in self.res_buf:
            timeout = None if deadline is None else max(0.0, deadline - time.time())
            ready, _, _ = select.select([self.res_fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.res_fd, 1 << 20)
            if not chunk:
                raise WorkerExited()
            self.res_buf += chunk
        line, self.res_buf = self.res_buf.split(b"\n", 1)
        return json.loads(line.decode("utf-8"))

    def max_memory_mb(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(math.ceil(int(line.split()[1]) / 1024.0))
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.pump.join(timeout=1)  # collect what the worker printed before it was killed
        for closer in (self.commands.close, lambda: os.close(self.res_fd)):
            try:
                closer()
            except Exception:
                pass


def _code_fingerprint(root):
    newest, count = 0.0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            try:
                newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
                count += 1
            except OSError:
                pass
    return newest, count


class Supervisor:
    def __init__(self):
        self.endpoint = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"].rstrip("/")
        self.runtime_id = os.environ["LOCALSTACK_RUNTIME_ID"]
        self.host = os.environ.get("_LSEXEC_HOST", "127.0.0.1")
        self.timeout = int(float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT") or 3))
        self.memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.hot_reload = os.environ.get("_LSEXEC_HOT_RELOAD") == "1"
        self.task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
        self.fingerprint = None
        self.logs = LogCollector()
        self.worker = None
        self.pending_init_ms = None
        self.invocations = queue.Queue()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- callbacks to LocalStack -------------------------------------------------------------
    def post(self, path, body):
        if isinstance(body, str):
            body = body.encode("utf-8")
        url = self.endpoint + path
        for attempt in range(5):
            request = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with self.opener.open(request, timeout=30) as response:
                    response.read()
                return True
            except urllib.error.HTTPError as e:
                self.diag("callback %s answered HTTP %s" % (path, e.code))
                return False
            except (urllib.error.URLError, OSError) as e:
                self.diag("callback %s failed (%s), retrying" % (path, e))
                time.sleep(0.2 * (attempt + 1))
        return False

    @staticmethod
    def diag(message):
        sys.stdout.write("[local-process runtime] %s\n" % message)
        sys.stdout.flush()

    # --- worker management ---------------------------------------------------------------------
    def start_worker(self, deadline):
        """Start a worker and wait for its init. Returns None when ready, else an error payload
        (dict), or the string "timeout"."""
        spawned = time.time()
        worker = Worker(self.logs)
        if self.hot_reload:
            self.fingerprint = _code_fingerprint(self.task_root)
        try:
            msg = worker.read(deadline)
        except WorkerExited:
            code = worker.proc.wait()
            worker.wait_output_mark()
            worker.kill()
            return {
                "errorType": "Runtime.ExitError",
                "errorMessage": "Runtime exited with error: exit status %s" % code,
            }
        if msg is None:
            worker.kill()
            return "timeout"
        worker.wait_output_mark()
        if msg.get("type") != "ready":
            worker.kill()
            return msg.get("error") or {"errorMessage": "init failed", "errorType": "Runtime.Unknown"}
        self.worker = worker
        # interpreter start + handler import, reported once as "Init Duration"
        self.pending_init_ms = (time.time() - spawned) * 1000
        return None

    def discard_worker(self):
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def shutdown(self, *_):
        self.discard_worker()
        os._exit(0)

    # --- invocation ----------------------------------------------------------------------------
    def run_invocations(self):
        while True:
            request = self.invocations.get()
            try:
                self.handle(request)
            except Exception:
                self.diag("internal error:\n" + traceback.format_exc())
                request_id = request.get("invoke-id", "")
                self.post(
                    "/invocations/%s/error" % request_id,
                    json.dumps(
                        {
                            "errorType": "Runtime.LocalProcessExecutorError",
                            "errorMessage": traceback.format_exc(),
                        }
                    ),
                )

    def handle(self, request):
        request_id = request["invoke-id"]
        start = time.time()
        deadline = start + self.timeout
        self.logs.put("START RequestId: %s Version: %s\n" % (request_id, self.version))
        is_error, body, max_memory = True, None, 0

        if self.hot_reload and self.worker is not None:
            if _code_fingerprint(self.task_root) != self.fingerprint:
                self.discard_worker()
        if self.worker is None or not self.worker.alive():
            self.discard_worker()
            init_error = self.start_worker(deadline)
            if init_error == "timeout":
                body = self.timed_out(request_id)
            elif init_error is not None:
                if init_error.get("errorType") == "Runtime.ExitError":
                    _log_supervisor_error(self.logs, init_error)
                body = json.dumps(dict(init_error, requestId=request_id))

        if body is None:
            worker = self.worker
            message = dict(request, deadline_ms=int(deadline * 1000))
            try:
                worker.send(message)
                result = worker.read(deadline)
            except WorkerExited:
                code = worker.proc.wait()
                worker.wait_output_mark()
                text = "RequestId: %s Error: Runtime exited with error: exit status %s" % (
                    request_id,
                    code,
                )
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
            "REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\t"
            "Memory Size: %s MB\tMax Memory Used: %d MB"
            % (request_id, duration_ms, max(1, math.ceil(duration_ms)), self.memory, max_memory)
        )
        if self.pending_init_ms is not None:
            report += "\tInit Duration: %.2f ms" % self.pending_init_ms
            self.pending_init_ms = None
        self.logs.put("END RequestId: %s\n%s\t\n" % (request_id, report))
        self.post("/invocations/%s/logs" % request_id, json.dumps({"logs": self.logs.drain()}))
        outcome = "error" if is_error else "response"
        self.post("/invocations/%s/%s" % (request_id, outcome), body if body is not None else "null")

    def timed_out(self, request_id):
        """Kill the worker (its whole process group); the next invoke starts a fresh one."""
        self.discard_worker()
        message = "%s %s Task timed out after %d.00 seconds" % (
            _utc_now_str(),
            request_id,
            self.timeout,
        )
        self.logs.put(message + "\n")
        return json.dumps({"errorMessage": message})

    # --- startup -------------------------------------------------------------------------------
    def main(self):
        signal.signal(signal.SIGTERM, self.shutdown)
        signal.signal(signal.SIGINT, self.shutdown)
        _parent_watchdog(self.shutdown)
        supervisor = self

        class InvokeHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
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

            def do_GET(self):
                self._reply(200, b"OK")

            def _reply(self, status, body):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer((self.host, 0), InvokeHandler)
        server.daemon_threads = True
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, name="invoke-server", daemon=True).start()

        init_error = self.start_worker(None)  # LocalStack enforces the environment startup timeout
        if init_error is not None:
            if init_error == "timeout":  # not reachable without deadline, kept for safety
                init_error = {"errorMessage": "init timed out", "errorType": "Runtime.InitTimeout"}
            if init_error.get("errorType") == "Runtime.ExitError":
                _log_supervisor_error(self.logs, init_error)
            self.post("/status/%s/error" % self.runtime_id, json.dumps(init_error))
            # LocalStack stops the environment after a startup error; exit in any case
            time.sleep(1)
            self.shutdown()
        self.post("/status/%s/ready" % self.runtime_id, json.dumps({"port": port}))
        self.run_invocations()


def _log_supervisor_error(logs, payload):
    text = "[ERROR] %s: %s\n" % (payload.get("errorType"), payload.get("errorMessage"))
    logs.put(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main()
    else:
        Supervisor().main()
