"""`chalice local`, with JSON errors where Chalice's server answers HTML or 403, and API keys.

The very server `chalice local --stage local --no-autoreload` builds, changed only
outside the app's routes (JSON 404 for an unknown path, 405 + `Allow` for a method a
path lacks or no handler has, JSON for what http.server rejects before routing; see
README, "Local stack"), with a real listen backlog and daemon request threads. Like
API Gateway, and unlike `chalice local`, it refuses a route that needs an API key
without a valid `x-api-key` (the keys of the state dir, toolkit/local_keys.py) with
the deployed API's own 403.

Run: python -m devstack.chalice_local [--host 127.0.0.1] [--port 8000] [--stage local]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from contextlib import suppress
from http import HTTPStatus
from pathlib import Path
from typing import Any

from chalice.app import Chalice
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, LocalDevServer, RouteMatcher, ThreadedHTTPServer

from toolkit import logs, names
from toolkit.local_keys import LocalKeys, forbidden_response

DEFAULT_STAGE = "local"
# Pending connections the kernel queues while every accept is busy: socketserver's 5
# drops connections when a few dozen clients arrive at once. Linux caps it at somaxconn.
REQUEST_QUEUE_SIZE = 1024
# Paths and methods are echoed in error messages; a fuzzer sends long ones.
_ECHO_LIMIT = 200

# Statuses http.server itself sends (send_error) -> the error code in the body.
_ERROR_CODES = {HTTPStatus.BAD_REQUEST: "bad_request", HTTPStatus.NOT_FOUND: "not_found",
                HTTPStatus.METHOD_NOT_ALLOWED: "method_not_allowed", HTTPStatus.REQUEST_URI_TOO_LONG: "uri_too_long",
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "headers_too_large",
                HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: "http_version_not_supported"}


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO_LIMIT else text[:_ECHO_LIMIT] + "..."


class JsonErrorsRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler, with JSON answers for what no route handles."""

    def __init__(self, request: Any, client_address: Any, server: Any, app_object: Chalice, config: Config) -> None:
        # Set before the base __init__, which handles the request right away.
        self._routes: dict[str, dict[str, Any]] = app_object.routes
        self._matcher = RouteMatcher(list(app_object.routes))
        super().__init__(request, client_address, server, app_object, config)

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
        route = self._route()
        if route is not None and (self.command == "OPTIONS" or self.command in self._routes[route]):
            if self.command == "OPTIONS" or not self._routes[route][self.command].api_key_required or self._key_valid():
                return self._generic_handle()
            self._parse_payload()
            return self._send_forbidden()
        self._parse_payload()  # read what Chalice would have, so a kept-alive connection stays in sync
        if route is None:
            self._send_json_error(HTTPStatus.NOT_FOUND, f"no route for {_echo(self.command)} {_echo(self.path)}")
        else:
            self._send_json_error(HTTPStatus.METHOD_NOT_ALLOWED, f"{_echo(self.command)} is not allowed on {route}",
                                  allow=self._allowed(route))

    def _key_valid(self) -> bool:
        """API Gateway's check: the x-api-key header is a key of the usage plan (here: the state dir's)."""
        value = self.headers.get("x-api-key")
        return bool(value) and self.server.api_keys.find(value) is not None

    def _send_forbidden(self) -> None:
        status, body = self.server.forbidden
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

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
        body = json.dumps({"code": _ERROR_CODES.get(status, "http_error"), "message": message, "detail": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow:
            self.send_header("Allow", ", ".join(allow))
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


def build_server(host: str, port: int, *, stage: str = DEFAULT_STAGE, project_dir: Path = names.ROOT) -> LocalDevServer:
    """What `chalice local --stage STAGE` builds (chalice.cli.create_local_server), with our handler and server."""
    from chalice.cli import factory
    from chalice.deploy.validate import validate_routes
    from chalice.local import CustomLocalChalice, LocalChalice

    # The CLI's own set-up: app code may look at this, and the factory loads app.py
    # from the project directory after adding the stage's environment to os.environ.
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    os.chdir(project_dir)
    cli = factory.CLIFactory(str(project_dir), environ=os.environ)
    config = cli.create_config_obj(chalice_stage_name=stage)
    app_obj = config.chalice_app
    validate_routes(app_obj.routes)
    # chalice.local.create_local_server does this before building its server:
    # current_request becomes thread-local, as the threaded server needs.
    CustomLocalChalice.__bases__ = (LocalChalice, app_obj.__class__)
    app_obj.__class__ = CustomLocalChalice
    dev_server = LocalDevServer(app_obj, config, host, port, handler_cls=JsonErrorsRequestHandler, server_cls=LocalServer)
    dev_server.server.api_keys, dev_server.server.forbidden = LocalKeys(), forbidden_response()
    return dev_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=names.HOST)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or names.RUN_API_PORT))
    parser.add_argument("--stage", default=DEFAULT_STAGE)
    args = parser.parse_args(argv)
    logs.setup()  # the app logs with Powertools, to stdout as on Lambda; this is for the libraries
    server = build_server(args.host, args.port, stage=args.stage)
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
