"""Outbound HTTP for webhooks (issue 22; docs/webhooks.md#safe-to-run-on-the-internet): one POST,
to an address checked after resolving the name, on the connection to that very address.

On the deployed stack (`allow_private` off) the name is resolved once, every address it
resolves to must be public (chalicelib/domain/webhooks.py check_address: no private, loopback,
link-local or metadata address), and the socket is opened to the address that was checked, so a
DNS answer that changes between the check and the connect (rebinding) cannot move the request
inside. TLS still verifies the certificate against the host name (SNI and the Host header keep
the name). Redirects are not followed. The standard library only: nothing for a cold start to load.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from chalicelib.domain.webhooks import UrlRefused, check_address

READ_LIMIT = 64 * 1024  # what is read of an answer: its status matters, not its body


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int | None
    latency_ms: int
    retry_after: str | None = None
    error: str | None = None


def resolve(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to: the first the name resolves to, once all of them passed the check."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UrlRefused(f"the host name does not resolve ({exc.strerror or exc})") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise UrlRefused("the host name resolves to nothing")
    if not allow_private:
        for address in addresses:
            check_address(ipaddress.ip_address(address.split("%", 1)[0]))
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post(url: str, body: bytes, headers: dict[str, str], *, timeout_seconds: float, allow_private: bool) -> Answer:
    """POST `body`; the answer's status, or the error that stood for it. Never raises."""
    started = time.perf_counter()

    def elapsed() -> int:
        return int((time.perf_counter() - started) * 1000)

    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname or "", parts.port or (443 if https else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        address = resolve(host, port, allow_private=allow_private)
    except UrlRefused as exc:
        return Answer(None, elapsed(), error=f"refused: {exc}")
    conn = (_PinnedHTTPS if https else _PinnedHTTP)(host, port, address, timeout_seconds)
    try:
        conn.request("POST", path, body=body, headers={**headers, "user-agent": "ad-moderation-webhooks/1"})
        response = conn.getresponse()
        response.read(READ_LIMIT)
        return Answer(response.status, elapsed(), retry_after=response.getheader("retry-after"))
    except TimeoutError:
        return Answer(None, elapsed(), error=f"timed out after {timeout_seconds:g} s")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(None, elapsed(), error=f"{type(exc).__name__}: {exc}"[:300])
    finally:
        conn.close()
