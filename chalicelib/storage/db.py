"""PostgreSQL connections: a small bounded pool, created lazily and reused.

Two transactions never share a connection: each `transaction()` checks one out
for its duration. The pool size is the process's share of the database's
connection budget (`DB_POOL_SIZE`):

- on Lambda a container handles one event at a time, so the size is 1 (the
  default): one connection per warm container, as before;
- `chalice local` serves requests on threads and the local runner polls with
  several threads, so `make run` gives each a handful
  (docs/local-stack.md#connection-budget). A thread that finds every connection busy waits up to
  `DB_ACQUIRE_TIMEOUT_SECONDS` and then gets a TransientError (503 + retry),
  never a shared connection.

A broken connection is dropped and rebuilt on next use. Driver errors become
domain errors here and nowhere else.

With `ssl_root_cert` (prod: DB_REQUIRE_TLS), every connection is TLS with the
server's certificate and host name verified against that CA bundle
(sslmode=verify-full), whatever the URL says: a server without TLS, or with a
certificate the bundle does not vouch for, is refused, never talked to.

The URL comes from `Credentials` (on AWS, chalicelib/storage/credentials.py's secret).
A connect the server refuses for its password is retried once with what the
credentials re-read (a rotated secret), so warm processes follow a password
rotation without a deploy (docs/operations/secret-rotation.md). Sessions the
server ended (pg_terminate_backend, a failover) are noticed before use.
"""

from __future__ import annotations

import re
import select
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeAlias

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from chalicelib.errors import TransientError
from chalicelib.logs import logger

# A connection idle longer than this is checked before use: after a server
# restart, failover or idle timeout the first request then reconnects instead
# of failing. Busy connections skip the round trip.
PRE_PING_AFTER_IDLE_SECONDS = 5.0

# Errors after which the same statement may succeed: the server went away, a
# timeout fired, we lost a deadlock or serialization race, or the server is
# shutting down / out of connections.
_TRANSIENT = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.QueryCanceled,
    psycopg2.errors.DeadlockDetected,
    psycopg2.errors.SerializationFailure,
    psycopg2.errors.AdminShutdown,
    psycopg2.errors.TooManyConnections,
)

# A lock not granted: waited too long (lock_timeout), or chosen as a deadlock's victim.
_CONTENTION = (psycopg2.errors.LockNotAvailable, psycopg2.errors.DeadlockDetected)


class LockContention(TransientError):
    """A row lock was not granted: the wait timed out or PostgreSQL broke a deadlock
    with this transaction. Trying again soon usually succeeds."""


# What a transaction hands the data-access calls made inside it (rows as dicts).
Cursor: TypeAlias = psycopg2.extras.RealDictCursor

# The server refused the credentials. A failed connect carries no SQLSTATE in
# psycopg2 (pgcode is None: libpq has no result to read it from), so the
# server's message decides; 28P01 invalid_password / 28000
# invalid_authorization_specification when a code is there.
_AUTH_SQLSTATES = frozenset({"28P01", "28000"})
_AUTH_MESSAGE = re.compile(
    r"password authentication failed|authentication failed for user|no password supplied"
    r"|role \".*\" does not exist|no pg_hba\.conf entry|pg_hba\.conf rejects connection",
    re.IGNORECASE,
)


def is_auth_failure(exc: psycopg2.Error) -> bool:
    """Did the server refuse these credentials (rather than be unreachable or busy)?"""
    return exc.pgcode in _AUTH_SQLSTATES or bool(_AUTH_MESSAGE.search(str(exc)))


class Credentials(Protocol):
    """Where a Database's URL comes from."""

    def url(self) -> str:
        """The URL to connect with (read on first use, then kept)."""
        ...

    def reread(self, rejected: str) -> Sequence[str]:
        """After `rejected` failed authentication: URLs to try instead, best first (none: nothing new)."""
        ...


class FixedUrl:
    """A URL that never changes (DATABASE_URL, tests)."""

    def __init__(self, url: str) -> None:
        self._url = url

    def url(self) -> str:
        return self._url

    def reread(self, rejected: str) -> Sequence[str]:
        return ()


class Database:
    def __init__(
        self,
        url: str | Credentials,
        *,
        connect_timeout_seconds: int = 3,
        statement_timeout_ms: int = 5000,
        pool_size: int = 1,
        acquire_timeout_seconds: float = 5.0,
        application_name: str = "ad-moderation",
        ssl_root_cert: Path | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.pool_size = pool_size
        self._acquire_timeout = acquire_timeout_seconds
        # idle_in_transaction_session_timeout frees row locks held by a
        # process that died mid-transaction without closing its socket.
        options = (
            f"-c statement_timeout={statement_timeout_ms} "
            f"-c idle_in_transaction_session_timeout={max(statement_timeout_ms * 6, 30000)}"
        )
        self._generation = 0  # bumped by close(): connections out at the time are not kept
        self._credentials: Credentials = FixedUrl(url) if isinstance(url, str) else url
        self._url: str | None = None  # the URL that last connected (a re-read one after a rotation)
        self._connect_kwargs: dict[str, object] = dict(
            connect_timeout=connect_timeout_seconds,
            options=options,
            application_name=application_name,
            # Notice a dead server within seconds instead of the OS default hours.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        if ssl_root_cert is not None:
            # Keyword arguments win over the URL's own sslmode/sslrootcert (psycopg2.extensions.make_dsn).
            self._connect_kwargs.update(sslmode="verify-full", sslrootcert=str(ssl_root_cert))
        # Not psycopg2.pool: it keeps at most `minconn` idle connections and
        # closes the rest on return (minconn=0 reconnects every transaction),
        # and it opens `minconn` connections eagerly at construction. Here:
        # opened on demand, kept idle up to the size, handed out newest first.
        self._idle: list[psycopg2.extensions.connection] = []
        self._idle_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._last_used: dict[int, float] = {}

    def _connect(self) -> psycopg2.extensions.connection:
        url = self._url or self._credentials.url()
        try:
            conn = self._open(url)
        except psycopg2.OperationalError as exc:
            if not is_auth_failure(exc):
                raise
            return self._reauthenticate(url, exc)
        self._url = url
        return conn

    def _open(self, url: str) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(dsn=url, **self._connect_kwargs)
        conn.autocommit = False
        return conn

    def _reauthenticate(self, rejected: str, exc: psycopg2.OperationalError) -> psycopg2.extensions.connection:
        """Connect with what the credentials re-read; the original error if nothing new gets in.

        Raised, it becomes a TransientError in transaction(): 503 + Retry-After on
        the API, a retried batch on the scorer.
        """
        logger.warning("database credentials rejected", extra={"error": first_line(exc)})
        candidates = [u for u in self._credentials.reread(rejected) if u != rejected]
        for url in candidates:
            try:
                conn = self._open(url)
            except psycopg2.OperationalError as again:
                if not is_auth_failure(again):
                    raise
                continue
            self._url = url
            logger.info("connected with the re-read database credentials")
            return conn
        logger.warning("no re-read database credentials connect", extra={"tried": len(candidates)})
        raise exc

    def close(self) -> None:
        """Close every idle connection (checked-out ones are closed when returned)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for conn in idle:
            _close_quietly(conn)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor inside one transaction: committed on success, rolled back on error.

        Driver errors that may pass are raised as TransientError; the broken
        connection is discarded so the next call reconnects.
        """
        with self._unit(autocommit=False) as cur:
            yield cur

    @contextmanager
    def _unit(self, *, autocommit: bool) -> Iterator[Cursor]:
        if not self._slots.acquire(timeout=self._acquire_timeout):
            logger.warning("no free database connection", extra={"pool_size": self.pool_size})
            raise TransientError("database busy: no free connection")
        generation, conn, broken = self._generation, None, False
        try:
            conn = self._checkout()
            if autocommit:  # client-side flag: no round trip. Not `with conn`: it would send BEGIN anyway
                conn.autocommit = True
                try:
                    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                        yield cur
                finally:
                    if not conn.closed:
                        conn.autocommit = False  # the pool's connections open transactions
            else:
                with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    yield cur
        except _TRANSIENT as exc:
            broken = True
            # Clients see a generic message; the driver's (hosts, ports) is logged.
            logger.warning("database error", extra={"error": first_line(exc)})
            error = LockContention if isinstance(exc, _CONTENTION) else TransientError
            raise error(f"database unavailable ({type(exc).__name__})") from exc
        finally:
            if conn is not None:
                self._checkin(conn, keep=not broken and not conn.closed and generation == self._generation)
            self._slots.release()

    @contextmanager
    def statement(self) -> Iterator[Cursor]:
        """transaction(), for a unit of work that is ONE execute: it commits itself (autocommit).

        psycopg2 opens a transaction with a BEGIN round trip of its own and closes it with a
        COMMIT: a single statement (a CTE writing several tables is one) is atomic without
        them, so it costs one round trip instead of three (issue 24: a submit's two units of
        work were seven round trips, now two). One execute may hold several statements
        (`SET LOCAL ...; WITH ...`): PostgreSQL runs them as one implicit transaction. A
        second execute is a transaction of its own, under the same READ COMMITTED rules as
        a second statement of a transaction."""
        with self._unit(autocommit=True) as cur:
            yield cur

    def _checkout(self) -> psycopg2.extensions.connection:
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            return self._connect()
        idle = time.monotonic() - self._last_used.get(id(conn), 0.0)
        if idle > PRE_PING_AFTER_IDLE_SECONDS or _has_unread_input(conn):
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.rollback()
            except psycopg2.Error:
                self._forget(conn)
                return self._connect()
        return conn

    def _checkin(self, conn: psycopg2.extensions.connection, *, keep: bool) -> None:
        if not keep:
            self._forget(conn)
            return
        self._last_used[id(conn)] = time.monotonic()
        with self._idle_lock:
            self._idle.append(conn)

    def _forget(self, conn: psycopg2.extensions.connection) -> None:
        self._last_used.pop(id(conn), None)
        _close_quietly(conn)

    def ping(self) -> None:
        with self.transaction() as cur:
            cur.execute("SELECT 1")


@contextmanager
def lock_wait(cur: Cursor, milliseconds: int) -> Iterator[None]:
    """Statements inside wait at most `milliseconds` for a row lock. If one is not
    granted, only they are undone (a savepoint) and LockContention is raised: the
    caller's transaction and the locks it already holds go on."""
    cur.execute("SAVEPOINT lock_wait")
    cur.execute("SET LOCAL lock_timeout = %s", (f"{milliseconds}ms",))
    try:
        yield
    except _CONTENTION as exc:
        cur.execute("ROLLBACK TO SAVEPOINT lock_wait")  # also undoes SET LOCAL
        raise LockContention(first_line(exc)) from exc
    cur.execute("RELEASE SAVEPOINT lock_wait")
    cur.execute("SET LOCAL lock_timeout = DEFAULT")


def _has_unread_input(conn: psycopg2.extensions.connection) -> bool:
    """An idle connection with bytes waiting: the server spoke unasked, which it does
    when it ends the session (pg_terminate_backend, shutdown, failover: an error,
    then EOF). No NOTIFY is listened for here. One poll(2), no round trip."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def first_line(exc: BaseException) -> str:
    """A driver error's first line: what is logged or told, without libpq's detail lines."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _close_quietly(conn: psycopg2.extensions.connection) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass
