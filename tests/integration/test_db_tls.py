"""TLS to PostgreSQL, verified (issue 14): with DB_REQUIRE_TLS the app connects only with
sslmode=verify-full against the CA bundle it is given, and refuses to start without one.

A throwaway CA generated here signs a server certificate for 127.0.0.1. The embedded
PostgreSQL wheel is built without OpenSSL (with ssl=on it stops: "SSL is not supported by
this build"), so the TLS end is a small proxy that speaks PostgreSQL's own TLS negotiation
(SSLRequest, then the handshake) in front of it, as a TLS-terminating server would: what is
under test is the client, the app. The right CA connects over TLS; another CA, a certificate
for another host name, or a server without TLS are refused; no CA bundle is a configuration
error.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chalicelib import config, deps
from chalicelib.errors import TransientError
from tests.helpers import Ca, pem

# PostgreSQL's negotiation requests (protocol.html, "SSL Session Encryption").
SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class PostgresTlsProxy:
    """127.0.0.1:<port>: answers SSLRequest with 'S' and a TLS handshake (the given certificate),
    GSSENCRequest with 'N', then relays the decrypted stream to a plain PostgreSQL server."""

    def __init__(self, upstream: tuple[str, int], cert: Path, key: Path) -> None:
        self.upstream = upstream
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            with client:
                first = b""
                while True:
                    header = _recv_exact(client, 8)
                    length, code = struct.unpack("!II", header)
                    if code == GSSENC_REQUEST:
                        client.sendall(b"N")
                    elif code == SSL_REQUEST:
                        client.sendall(b"S")
                        client = self.context.wrap_socket(client, server_side=True)
                        break
                    else:  # a plain startup: relayed as it is (the server accepts both)
                        first = header + _recv_exact(client, length - 8)
                        break
                with socket.create_connection(self.upstream) as server:
                    server.sendall(first)
                    self._relay(client, server)
        except (OSError, ConnectionError, ssl.SSLError):
            pass  # a refused handshake or a closed connection ends this one

    @staticmethod
    def _relay(client: socket.socket, server: socket.socket) -> None:
        # One thread per connection: an SSL socket must not be read and written concurrently.
        while True:
            pending = isinstance(client, ssl.SSLSocket) and client.pending()
            readable = [client] if pending else select.select([client, server], [], [], 5)[0]
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (server if sock is client else client).sendall(data)

    def close(self) -> None:
        self.listener.close()


@dataclass
class TlsServer:
    url: str  # postgresql://postgres@127.0.0.1:<proxy port>/<db>, TLS available
    ca_file: Path  # the CA that signed the server's certificate
    other_ca_file: Path  # a CA that did not


@pytest.fixture(scope="module")
def tls_server(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    root = tmp_path_factory.mktemp("tls")
    ca, other = Ca.new("throwaway test CA"), Ca.new("another CA")
    # The certificate names 127.0.0.1 only: verify-full checks the host name too.
    cert, key = ca.issue(dns=["db.test.invalid"], ips=["127.0.0.1"])
    (root / "server.crt").write_bytes(cert)
    (root / "server.key").write_bytes(key)
    (root / "ca.pem").write_bytes(pem(ca.cert))
    (root / "other-ca.pem").write_bytes(pem(other.cert))
    host_port = pg_server.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = PostgresTlsProxy((host, int(port)), root / "server.crt", root / "server.key")
    try:
        yield TlsServer(pg_server.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/"), root / "ca.pem",
                        root / "other-ca.pem")
    finally:
        proxy.close()


@pytest.fixture()
def app_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The app's settings, rebuilt from the environment each test sets."""
    for name in ("DATABASE_URL", "DATABASE_SECRET_ARN", "DB_REQUIRE_TLS", "DB_SSL_ROOT_CERT"):
        monkeypatch.delenv(name, raising=False)
    deps.reset()
    yield monkeypatch
    deps.reset()


def _ssl_of_session() -> tuple[bool, str | None]:
    """The app's own connection: TLS in use, and its protocol (libpq's view; the server
    behind the proxy sees a plain connection)."""
    with deps.database().transaction() as cur:
        cur.execute("SELECT 1")
        info = cur.connection.info
        return bool(info.ssl_in_use), info.ssl_attribute("protocol")


def test_verify_full_with_the_right_ca_connects_over_tls(tls_server: TlsServer, app_env: pytest.MonkeyPatch) -> None:
    # The URL asks for no TLS at all: DB_REQUIRE_TLS overrides it.
    app_env.setenv("DATABASE_URL", tls_server.url + "?sslmode=disable")
    app_env.setenv("DB_REQUIRE_TLS", "true")
    app_env.setenv("DB_SSL_ROOT_CERT", str(tls_server.ca_file))
    assert config.get_settings().db_require_tls
    ssl, version = _ssl_of_session()
    assert ssl and version and version.startswith("TLS")


@pytest.mark.parametrize("why", ["another CA", "another host name"])
def test_verify_full_refuses_a_certificate_it_cannot_verify(tls_server: TlsServer, app_env: pytest.MonkeyPatch,
                                                            why: str) -> None:
    url, ca_file = tls_server.url, tls_server.ca_file
    if why == "another CA":
        ca_file = tls_server.other_ca_file
    else:  # the certificate names 127.0.0.1, not localhost (verify-ca would accept it)
        url = url.replace("@127.0.0.1:", "@localhost:")
    app_env.setenv("DATABASE_URL", url)
    app_env.setenv("DB_REQUIRE_TLS", "true")
    app_env.setenv("DB_SSL_ROOT_CERT", str(ca_file))
    with pytest.raises(TransientError) as err:
        deps.database().ping()
    cause = str(err.value.__cause__)
    assert "certificate verify failed" in cause or "does not match host name" in cause, cause


def test_a_server_without_tls_is_refused(pg_server: str, tls_server: TlsServer, app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("DATABASE_URL", pg_server)  # the session's server: no ssl=on
    app_env.setenv("DB_REQUIRE_TLS", "true")
    app_env.setenv("DB_SSL_ROOT_CERT", str(tls_server.ca_file))
    with pytest.raises(TransientError) as err:
        deps.database().ping()
    assert "SSL" in str(err.value.__cause__), err.value.__cause__


@pytest.mark.parametrize("root_cert", [None, "chalicelib/certs/no-such-bundle.pem"])
def test_tls_required_without_a_ca_bundle_refuses_to_start(tls_server: TlsServer, app_env: pytest.MonkeyPatch,
                                                           root_cert: str | None) -> None:
    app_env.setenv("DATABASE_URL", tls_server.url)
    app_env.setenv("DB_REQUIRE_TLS", "true")
    if root_cert:
        app_env.setenv("DB_SSL_ROOT_CERT", root_cert)
    with pytest.raises(config.ConfigurationError) as err:
        deps.database()
    assert "DB_REQUIRE_TLS" in str(err.value) and "DB_SSL_ROOT_CERT" in str(err.value)


def test_without_tls_required_the_url_decides(tls_server: TlsServer, app_env: pytest.MonkeyPatch) -> None:
    """dev and make run: libpq's default (`prefer`), or whatever the URL says."""
    app_env.setenv("DATABASE_URL", tls_server.url + "?sslmode=disable")
    assert _ssl_of_session() == (False, None)
