"""Factories shared by the test suites: SQS records and ads.

Every SQS record gets a fresh messageId and receiptHandle, as Lambda's would.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from toolkit.procs import free_port  # noqa: F401  (re-exported: the suites import it from here)

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:moderation"


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A throwaway HTTP server on a free loopback port, in a thread; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def sqs_record(body: Any, *, attempt: int = 1, message_id: str | None = None, receipt: str | None = None) -> dict:
    text = body if isinstance(body, str) else json.dumps(body)
    return {
        "messageId": message_id or str(uuid.uuid4()),
        "receiptHandle": receipt or f"rh-{uuid.uuid4()}",
        "body": text,
        "attributes": {
            "ApproximateReceiveCount": str(attempt),
            "SentTimestamp": "1763900000000",
            "SenderId": "AIDATEST",
            "ApproximateFirstReceiveTimestamp": "1763900000001",
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    }


def task_body(task_id: int, item_id: int) -> dict:
    return {"task_id": task_id, "item_id": item_id, "timestamp": "2026-11-23T12:00:00Z"}


def insert_ad(
    url: str,
    *,
    name: str = "iPhone 13",
    description: str = "Good condition, original box",
    category: int = 1,
    images_qty: int = 3,
    verified: bool = True,
    closed: bool = False,
) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO users (name, is_verified) VALUES ('seller', %s) RETURNING id", (verified,))
        seller = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO advertisements (seller_id, name, description, category, images_qty, is_closed) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (seller, name, description, category, images_qty, closed),
        )
        item_id = int(cur.fetchone()[0])
    conn.close()
    return item_id


def fetch_task(url: str, task_id: int) -> dict:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id, item_id, status, is_violation, probability, model_version, error_message, error_kind, "
            "attempts, last_error, enqueued_at, processed_at, decision FROM moderation_results WHERE id = %s",
            (task_id,),
        )
        row = cur.fetchone()
        cols = [d.name for d in cur.description]
    conn.close()
    return dict(zip(cols, row, strict=True)) if row else {}


def execute(url: str, sql: str, params: Any = None) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def install_verdict_audit(url: str) -> None:
    """Count every transition into 'completed' per task: the observable for
    "a verdict is never written twice". SECURITY DEFINER: the trigger writes as
    its creator, so it works whatever role the functions connect as (the
    deployed stack's moderation_app may not write to the test's table)."""
    execute(url, """
        CREATE TABLE IF NOT EXISTS verdict_writes (task_id bigint NOT NULL);
        TRUNCATE verdict_writes;
        CREATE OR REPLACE FUNCTION audit_verdict_write() RETURNS trigger AS $$
        BEGIN
            IF NEW.status = 'completed' AND OLD.status <> 'completed' THEN
                INSERT INTO verdict_writes VALUES (NEW.id);
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql SECURITY DEFINER;
        DROP TRIGGER IF EXISTS audit_verdict_write ON moderation_results;
        CREATE TRIGGER audit_verdict_write AFTER UPDATE ON moderation_results
            FOR EACH ROW EXECUTE FUNCTION audit_verdict_write();
    """)


def drop_verdict_audit(url: str) -> None:
    execute(url, "DROP TRIGGER IF EXISTS audit_verdict_write ON moderation_results; DROP TABLE IF EXISTS verdict_writes")


@contextmanager
def verdicts_counted(url: str) -> Iterator[None]:
    """install_verdict_audit for the block only: a stack shared with other tests is left without the trigger."""
    install_verdict_audit(url)
    try:
        yield
    finally:
        drop_verdict_audit(url)


# --- a throwaway certificate authority (TLS to the database, the CA bundle make package ships) ---
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, name: str) -> Ca:
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, *, dns: list[str], ips: list[str]) -> tuple[bytes, bytes]:
        """A server certificate for these names, and its key, as PEM."""
        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder().subject_name(_name(dns[0] if dns else ips[0])).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return pem(cert), key_pem


# --- clients (issue 20; docs/clients.md) -------------------------------------------------

# API key value -> (key id, client, scopes) of the clients the integration tests call as. The
# value is what a test sends as x-api-key; the gateway stand-in (keyed_client) turns it into
# the key id in the request context, as API Gateway does; api_clients maps that to the client.
TEST_CLIENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "key-tester": ("id-tester", "tester", ("submit", "close", "moderate", "admin")),
    "key-a": ("id-a", "client-a", ("submit",)),
    "key-b": ("id-b", "client-b", ("submit",)),
    "key-closer": ("id-closer", "closer", ("close",)),
    "key-ops": ("id-ops", "ops", ("admin",)),
    "key-moderator": ("id-moderator", "moderator", ("moderate",)),
    "key-legacy": ("id-legacy", "legacy", ("submit",)),  # migrations/V8's default owner of older tasks
    "key-older": ("id-older", "older-clients", ("submit",)),  # a name given to make migrate --client
}
DEFAULT_TEST_KEY = "key-tester"  # what a request without x-api-key is sent as (see keyed_client)


def register_test_clients(url: str) -> None:
    """The api_clients rows of TEST_CLIENTS."""
    for key_id, client, scopes in TEST_CLIENTS.values():
        execute(url, "INSERT INTO api_clients (key_id, client, scopes) VALUES (%s, %s, %s) "
                     "ON CONFLICT (key_id) DO UPDATE SET client = EXCLUDED.client, scopes = EXCLUDED.scopes",
                (key_id, client, list(scopes)))


def with_keys(client: Any, app: Any, default_key: str | None = DEFAULT_TEST_KEY) -> Any:
    """Chalice's test client behind a stand-in for API Gateway's key check: x-api-key (else
    `default_key`, so the suites written before clients need no header) becomes
    `identity.apiKeyId` in the request context (devstack.chalice_local.KeyedGateway). An
    unknown key reaches the app with no key id, which answers 403: API Gateway would have."""
    from devstack.chalice_local import KeyedGateway

    def key_id(headers: Any) -> str | None:
        value = headers.get("x-api-key", default_key)
        return TEST_CLIENTS[value][0] if value in TEST_CLIENTS else None

    http = client.http
    http._local_gateway = KeyedGateway(app, http._config, key_id=key_id)
    return client


@contextmanager
def keyed_client(app: Any, default_key: str | None = DEFAULT_TEST_KEY, **kwargs: Any) -> Iterator[Any]:
    """with_keys over `Client(app, **kwargs)`, as a context manager."""
    from chalice.local import CustomLocalChalice, LocalChalice
    from chalice.test import Client

    # Chalice keeps the request being handled in app.current_request, one attribute for every thread;
    # the suites that send requests from threads at once (8 moderators) need it per thread, as
    # `chalice local` and devstack/chalice_local.py make it (the same class swap).
    if not isinstance(app, LocalChalice):
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
    # Chalice's test client swaps os.environ for each request and puts back what it found; requests
    # from several threads at once can leave another request's environment (STAGE=dev) behind.
    # The very object is put back when the client is done, so the next test starts from it.
    environ = os.environ
    try:
        with Client(app, **kwargs) as client:
            yield with_keys(client, app, default_key)
    finally:
        os.environ = environ  # noqa: B003 - the object itself, not its contents
