"""A webhook receiver as a client would write one (issue 22; docs/webhooks.md#receiving): a small
HTTP server that verifies every delivery with the `standardwebhooks` package, refuses what does
not verify (a changed byte, a timestamp outside the tolerance, an unknown secret) with 400, and
dedupes on `webhook-id`. The tests and `make bench` receive with it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# path -> (status, headers) to answer with; None: 204. Lets a test play an outage, a 410, a 429.
Answer = Callable[[str], tuple[int, dict[str, str]] | None]


@dataclass
class Delivery:
    event_id: str
    path: str
    payload: dict[str, Any]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    # path -> the secrets a delivery to it may be signed with (any one suffices, as during a rotation)
    secrets: dict[str, list[str]] = field(default_factory=dict)
    answer: Answer | None = None
    verified: list[Delivery] = field(default_factory=list)  # every verified delivery, duplicates included
    unique: dict[str, Delivery] = field(default_factory=dict)  # the first of each webhook-id
    rejected: list[str] = field(default_factory=list)  # why, for each refused delivery
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def verify(self, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """The payload, if one of `path`'s secrets verifies it; WebhookVerificationError otherwise."""
        errors = []
        for secret in self.secrets.get(path, []):
            try:
                return dict(Webhook(secret).verify(body, headers))
            except WebhookVerificationError as exc:
                errors.append(str(exc))
        raise WebhookVerificationError("; ".join(errors) or f"no secret for {path}")

    def handle(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        planned = self.answer(path) if self.answer else None
        if planned is not None:
            return planned
        try:
            payload = self.verify(path, body, headers)
        except WebhookVerificationError as exc:
            with self.lock:
                self.rejected.append(str(exc))
            return 400, {}
        got = Delivery(headers["webhook-id"], path, payload, headers, body, time.time())
        with self.lock:
            self.verified.append(got)
            self.unique.setdefault(got.event_id, got)  # the dedupe a receiver does
        return 204, {}

    def events(self, event_type: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.unique.values() if event_type is None or d.payload["type"] == event_type]

    def wait_for(self, count: int, timeout: float, event_type: str | None = None) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event_type)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        return self.events(event_type)


@contextmanager
def serve(receiver: Receiver, host: str = "127.0.0.1") -> Iterator[Receiver]:
    """Run `receiver` on a free port in threads; its `url` is set while inside."""

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # a reply in one segment, not held for the sender's delayed ACK

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra = receiver.handle(self.path, body, headers)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    receiver.url = f"http://{host}:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def payload_of(delivery: Delivery) -> dict[str, Any]:
    return dict(json.loads(delivery.body))
