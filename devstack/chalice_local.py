"""`chalice local`, with JSON errors where Chalice's server answers HTML or 403, API keys, and a bound on load.

The very server `chalice local --stage local --no-autoreload` builds, changed only
outside the app's routes (JSON 404 for an unknown path, 405 + `Allow` for a method a
path lacks or no handler has, JSON for what http.server rejects before routing; see
docs/local-stack.md), with a real listen backlog and daemon request threads. Like
API Gateway, and unlike `chalice local`, it refuses a route that needs an API key
without a valid `x-api-key` (the keys of the state dir, toolkit/local_keys.py) with
the deployed API's own 403.

Overload: a thread per connection means a thousand clients are a thousand requests
queued on the database pool, each answered late. Instead at most API_MAX_IN_FLIGHT
requests run in the app at once; one that finds no place within
API_ADMIT_TIMEOUT_SECONDS is answered 503 `overloaded` with Retry-After, having
done nothing (docs/performance.md#under-overload-make-load-profileoverload). The health probes are never refused: an
overloaded API is not a broken one, and a load balancer that took it out of
rotation would only move its load elsewhere.

Run: python -m devstack.chalice_local [--host 127.0.0.1] [--port 8000] [--stage local]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from http import HTTPStatus
from pathlib import Path
from typing import Any

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, LocalDevServer, LocalGateway, RouteMatcher, ThreadedHTTPServer

from chalicelib import deps
from chalicelib.api.routes import NEVER_SHED
from chalicelib.errors import Overloaded
from toolkit import logs, names, procs
from toolkit.local_keys import LocalKeys, forbidden_response

DEFAULT_STAGE = "local"
# Pending connections the kernel queues while every accept is busy: socketserver's 5
# drops connections when a few dozen clients arrive at once. Linux caps it at somaxconn.
REQUEST_QUEUE_SIZE = 1024
# Paths and methods are echoed in error messages (twice: `message` and `detail`); a fuzzer
# sends long ones. No error body repeats more than 200 characters of a request (docs/clients.md).
_ECHO_LIMIT = 80
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
API_KEY_HEADER = "x-api-key"
# The bound on requests in flight (read once, at start). 32, four times the stage's DB_POOL_SIZE: a
# submit holds a connection for part of its time only (its SQS send is outside the transaction).
# Measured with 256 clients: 16 refused 1.4-2.3 times as many submits as 32 at the same p99.
DEFAULT_MAX_IN_FLIGHT = 32
# 2 s, not 1: with 256 clients 1 s refused 7-10 % of the submits and 2 s under 0.5 %, at a p99 of 2 s
# (1.4-2.0 s before the bound); 1,024 clients' p99 stays 2.4-2.6 s (docs/performance.md#under-overload-make-load-profileoverload).
DEFAULT_ADMIT_TIMEOUT_SECONDS = 2.0
# A refused client may come straight back: places free up within milliseconds.
OVERLOADED_RETRY_AFTER_SECONDS = "1"
# Refusals are logged as a count at most this often, not one line each.
REFUSAL_LOG_SECONDS = 10.0
log = logs.get("chalice local")

# Statuses http.server itself sends (send_error) -> the error code in the body.
_ERROR_CODES = {HTTPStatus.BAD_REQUEST: "bad_request", HTTPStatus.NOT_FOUND: "not_found",
                HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed", HTTPStatus.REQUEST_URI_TOO_LONG: "uri_too_long",
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "headers_too_large",
                HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: "http_version_not_supported"}


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO_LIMIT else text[:_ECHO_LIMIT] + "..."


class Admission:
    """At most `limit` requests in the app at once; a request that finds no place within
    `wait_seconds` is refused (enter() is False). Refusals are counted, and logged now and then."""

    def __init__(self, limit: int, wait_seconds: float) -> None:
        if limit < 1 or wait_seconds < 0:
            raise ValueError(f"the bound on requests in flight must be at least 1 with a wait of 0 s or more, "
                             f"got {limit} and {wait_seconds}")
        self.limit, self.wait_seconds = limit, wait_seconds
        self._places = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._refused, self._since = 0, time.monotonic()

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ[str] = os.environ) -> Admission:
        """API_MAX_IN_FLIGHT and API_ADMIT_TIMEOUT_SECONDS, or the defaults."""
        try:
            limit = int(environ.get("API_MAX_IN_FLIGHT") or DEFAULT_MAX_IN_FLIGHT)
            wait = float(environ.get("API_ADMIT_TIMEOUT_SECONDS") or DEFAULT_ADMIT_TIMEOUT_SECONDS)
            return cls(limit, wait)
        except ValueError as err:
            raise ValueError(f"API_MAX_IN_FLIGHT (an integer >= 1) and API_ADMIT_TIMEOUT_SECONDS (seconds >= 0): "
                             f"{err}") from None

    def enter(self) -> bool:
        if self._places.acquire(timeout=self.wait_seconds):
            return True
        with self._lock:
            self._refused += 1
            now = time.monotonic()
            if now - self._since < REFUSAL_LOG_SECONDS:
                return False
            refused, seconds, self._refused, self._since = self._refused, now - self._since, 0, now
        log.warning("overloaded: refused %d requests in %.0f s (503, Retry-After): %d in flight, none left within "
                    "%.1f s (API_MAX_IN_FLIGHT, API_ADMIT_TIMEOUT_SECONDS)", refused, seconds, self.limit,
                    self.wait_seconds)
        return False

    def leave(self) -> None:
        self._places.release()


class KeyedGateway(LocalGateway):
    """Chalice's LocalGateway, filling in `requestContext.identity.apiKeyId` as API Gateway does:
    the id of the key the server verified (`key_id` of the request's headers), and nothing a
    client sent. The app learns who calls from there alone (chalicelib/api/auth.py)."""

    def __init__(self, app_object: Chalice, config: Config, key_id: Callable[[Mapping[str, str]], str | None]) -> None:
        super().__init__(app_object, config)
        self._key_id = key_id

    def _generate_lambda_event(self, method: str, path: str, headers: Any, body: bytes | None) -> Any:
        event = super()._generate_lambda_event(method, path, headers, body)
        identity = event["requestContext"].setdefault("identity", {})
        identity.pop("apiKeyId", None)
        if (key_id := self._key_id(headers)) is not None:
            identity["apiKeyId"] = key_id
        return event


class _HeaderRecorder:
    """The request's header lines as sent (http.server's parser trims each value's leading
    whitespace; an API key is compared exactly)."""

    def __init__(self, inner: Any) -> None:
        self.inner: Any = inner
        self.lines: list[bytes] = []

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.inner.readline(limit)
        self.lines.append(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class JsonErrorsRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler, with JSON answers for what no route handles."""

    server: LocalServer
    # TCP_NODELAY on each connection (socketserver's own switch). http.server writes the headers and
    # then the body in two sends; on a kept-alive connection Nagle's algorithm holds the body until the
    # client ACKs the headers, which it delays by 40 ms: every request after a connection's first took
    # 44 ms instead of 2-4 (a requests.Session, locust, schemathesis).
    disable_nagle_algorithm = True

    def __init__(self, request: Any, client_address: Any, server: Any, app_object: Chalice, config: Config) -> None:
        # Set before the base __init__, which handles the request right away.
        self._routes: dict[str, dict[str, Any]] = app_object.routes
        self._matcher = RouteMatcher(list(app_object.routes))
        self._payload: tuple[dict[str, str], bytes | None] | None = None
        self._app_and_config = (app_object, config)
        self._verified_key_id: str | None = None
        self._raw_headers: list[bytes] = []
        super().__init__(request, client_address, server, app_object, config)

    @property
    def local_gateway(self) -> LocalGateway:
        return self._gateway

    @local_gateway.setter
    def local_gateway(self, _plain: LocalGateway) -> None:
        # Chalice's __init__ sets a plain LocalGateway; this one adds the key id this server verified.
        self._gateway = KeyedGateway(*self._app_and_config, key_id=lambda _headers: self._verified_key_id)

    def parse_request(self) -> bool:
        inner: Any = self.__dict__["rfile"]
        recorder = _HeaderRecorder(inner)
        self.__dict__["rfile"] = recorder
        try:
            return bool(super().parse_request())
        finally:
            self.__dict__["rfile"], self._raw_headers = inner, recorder.lines

    def _parse_payload(self) -> tuple[dict[str, str], bytes | None]:
        """The request's headers and body, read once: before admission (a client slow to send its
        body must not hold a place in the app), then again by Chalice's handler."""
        if self._payload is None:
            self._payload = super()._parse_payload()
        return self._payload

    def _route(self) -> str | None:
        """The route this path matches, exactly as Chalice's LocalGateway matches it."""
        try:
            return str(self._matcher.match_route(self.path).route)
        except ValueError:
            return None

    def _allowed(self, route: str | None) -> list[str]:
        """The methods of a route, or of every route; OPTIONS is always answered (CORS preflight)."""
        methods = set(self._routes[route]) if route else {m for views in self._routes.values() for m in views}
        return sorted(methods | {"OPTIONS"})

    def _routed_handle(self) -> None:
        self._payload, self._verified_key_id = None, None  # a kept-alive connection's previous request had its own
        if not self._content_length_valid():
            self.close_connection = True  # where its body ends is unknown: no reuse
            return self._send_json_error(HTTPStatus.BAD_REQUEST, "Content-Length must be a non-negative integer")
        route = self._route()
        if route is not None and (self.command == "OPTIONS" or self.command in self._routes[route]):
            if self.command == "OPTIONS" or not self._routes[route][self.command].api_key_required or self._key_valid():
                return self._admitted_handle(route)
            self._parse_payload()
            return self._send_forbidden()
        self._parse_payload()  # read what Chalice would have, so a kept-alive connection stays in sync
        if route is None:
            self._send_json_error(HTTPStatus.NOT_FOUND, f"no route for {_echo(self.command)} {_echo(self.path)}")
        else:
            self._send_json_error(HTTPStatus.METHOD_NOT_ALLOWED, f"{_echo(self.command)} is not allowed on {route}",
                                  allow=self._allowed(route))

    def _admitted_handle(self, route: str) -> None:
        """The app answers, once there is a place for the request (CORS preflights and the
        probes go straight in); else 503 `overloaded`, and nothing was done."""
        if self.command == "OPTIONS" or route in NEVER_SHED:
            return self._generic_handle()
        self._parse_payload()
        admission = self.server.admission
        if not admission.enter():
            error = Overloaded(f"too many requests in flight ({admission.limit}); retry after "
                               f"{OVERLOADED_RETRY_AFTER_SECONDS} s")
            return self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, error.to_dict(),
                                   {"Retry-After": OVERLOADED_RETRY_AFTER_SECONDS})
        try:
            return self._generic_handle()
        finally:
            admission.leave()

    def _content_length_valid(self) -> bool:
        """Chalice's handler takes int() of it, and a ValueError used to end the thread unanswered."""
        given = self.headers.get_all("content-length") or []
        return not given or (len(set(given)) == 1 and _CONTENT_LENGTH.fullmatch(given[0].strip()) is not None)

    def _api_key(self) -> str | None:
        """The x-api-key value exactly as sent: after the colon and one optional space, nothing
        trimmed (`x-api-key:  KEY` is not KEY). None when absent or sent twice."""
        found = []
        for line in self._raw_headers:
            name, colon, rest = line.decode("latin-1").partition(":")
            if colon and name.lower() == API_KEY_HEADER:
                value = rest.removesuffix("\n").removesuffix("\r")
                found.append(value[1:] if value.startswith(" ") else value)
        return found[0] if len(found) == 1 else None

    def _key_valid(self) -> bool:
        """API Gateway's check: the x-api-key header is a key of the usage plan (here: the state dir's).
        The key's id then goes to the app in the request context, as API Gateway's does."""
        value = self._api_key()
        key = self.server.api_keys.find(value) if value else None
        self._verified_key_id = key.id if key else None
        return key is not None

    def _send_forbidden(self) -> None:
        status, body = self.server.forbidden
        self._send(status, body, {})

    # Chalice binds these to its own _generic_handle at class creation, so
    # overriding that method alone would change nothing.
    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _routed_handle

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's errors (HTML by default) as JSON. Its 501, for a method without a
        do_<METHOD>, is a method this API never allows: 405 with the methods it does allow."""
        self.close_connection = True  # the request's body (if any) is not read: no reuse
        # A request line too broken to tell its version leaves http.server assuming
        # HTTP/0.9, which gets a bare body: answer with a status line.
        if getattr(self, "request_version", None) == "HTTP/0.9":
            self.request_version = self.protocol_version
        if code == HTTPStatus.NOT_IMPLEMENTED and getattr(self, "command", None):
            route = self._route()
            message = f"{_echo(self.command)} is not allowed" + (f" on {route}" if route else "")
            self._send_json_error(HTTPStatus.METHOD_NOT_ALLOWED, message, allow=self._allowed(route))
            return
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._send_json_error(status, message or status.phrase)

    def _send_json_error(self, status: HTTPStatus, message: str, *, allow: list[str] | None = None) -> None:
        # The app's own error shape (chalicelib/errors.py), `detail` for clients of the FastAPI services.
        error = {"code": _ERROR_CODES.get(status, "http_error"), "message": message, "detail": message}
        self._send_json(status, error, {"Allow": ", ".join(allow)} if allow else {})

    def _send_json(self, status: HTTPStatus, error: Mapping[str, object], headers: Mapping[str, str]) -> None:
        self._send(status, json.dumps(error).encode(), headers)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        """A JSON answer of our own (not the app's)."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        # HEAD gets the headers, never a body (a kept-alive connection's next response would start in it).
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)


class LocalServer(ThreadedHTTPServer):
    request_queue_size = REQUEST_QUEUE_SIZE
    daemon_threads = True  # as Chalice's: Ctrl-C never waits for a client's open connection
    # The valid keys, and the deployed API's answer to any other (set by build_server).
    api_keys: LocalKeys
    forbidden: tuple[int, bytes]
    # The bound on requests in the app at once (set by build_server).
    admission: Admission


def build_server(host: str, port: int, *, stage: str = DEFAULT_STAGE, project_dir: Path | None = None,
                 admission: Admission | None = None) -> LocalDevServer:
    """What `chalice local --stage STAGE` builds (chalice.cli.create_local_server), with our handler and server.
    `admission`: the bound on requests in flight (default: API_MAX_IN_FLIGHT, API_ADMIT_TIMEOUT_SECONDS).
    `project_dir`: the app's (default names.app_dir(): the repository, or DEVSTACK_APP_DIR)."""
    from chalice.cli import factory
    from chalice.deploy.validate import validate_routes
    from chalice.local import CustomLocalChalice, LocalChalice

    # The CLI's own set-up: app code may look at this, and the factory loads app.py
    # from the project directory after adding the stage's environment to os.environ.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    project_dir = project_dir or names.app_dir()
    os.chdir(project_dir)
    cli = factory.CLIFactory(str(project_dir), environ=os.environ)
    config = cli.create_config_obj(chalice_stage_name=stage)
    app_obj = config.chalice_app
    validate_routes(app_obj.routes)
    # chalice.local.create_local_server does this before building its server:
    # current_request becomes thread-local, as the threaded server needs.
    if not isinstance(app_obj, LocalChalice):  # once per process (tests/helpers.py's keyed_client does it too)
        CustomLocalChalice.__bases__ = (LocalChalice, app_obj.__class__)
        app_obj.__class__ = CustomLocalChalice
    dev_server = LocalDevServer(app_obj, config, host, port, handler_cls=JsonErrorsRequestHandler, server_cls=LocalServer)
    dev_server.server.api_keys, dev_server.server.forbidden = LocalKeys(), forbidden_response()
    # The app looks clients up in the same key store the server checks keys against.
    deps.use_clients(dev_server.server.api_keys)
    dev_server.server.admission = admission or Admission.from_env()
    return dev_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=names.HOST)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or names.RUN_API_PORT))
    parser.add_argument("--stage", default=DEFAULT_STAGE)
    args = parser.parse_args(argv)
    logs.setup()  # the app logs with Powertools, to stdout as on Lambda; this is for the libraries
    # A thread and a socket per connection: a thousand clients need more than the usual 1,024 files.
    procs.raise_open_file_limit()
    try:
        admission = Admission.from_env()  # read once; a bad value stops the server with the reason
    except ValueError as err:
        log.error("%s", err)
        return 2
    server = build_server(args.host, args.port, stage=args.stage, admission=admission)
    log.info("at most %d requests in flight; one without a place within %.1f s is answered 503 overloaded",
             admission.limit, admission.wait_seconds)
    # serve_forever() runs on this thread, so shutdown() would deadlock: leave it by an
    # exception instead (request threads are daemons).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with suppress(KeyboardInterrupt):
            server.serve_forever()
    finally:
        server.server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
