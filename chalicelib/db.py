"""One PostgreSQL connection per process, created lazily and reused.

A Lambda container handles one event at a time, so a single connection is the
right size (a pool would only hold idle sockets against the database's
connection budget). A broken connection is dropped and rebuilt on next use.
Driver errors become domain errors here and nowhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from chalicelib.errors import TransientError

logger = logging.getLogger(__name__)

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


class Database:
    def __init__(
        self,
        url: str,
        *,
        connect_timeout_seconds: int = 3,
        statement_timeout_ms: int = 5000,
        application_name: str = "ad-moderation",
    ) -> None:
        self._url = url
        self._connect_timeout = connect_timeout_seconds
        # idle_in_transaction_session_timeout frees row locks held by a
        # process that died mid-transaction without closing its socket.
        self._options = (
            f"-c statement_timeout={statement_timeout_ms} "
            f"-c idle_in_transaction_session_timeout={max(statement_timeout_ms * 6, 30000)}"
        )
        self._application_name = application_name
        self._conn: psycopg2.extensions.connection | None = None
        self._last_used = 0.0

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(
            self._url,
            connect_timeout=self._connect_timeout,
            options=self._options,
            application_name=self._application_name,
            # Notice a dead server within seconds instead of the OS default hours.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        conn.autocommit = False
        return conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """A cursor inside one transaction: committed on success, rolled back on error.

        Driver errors that may pass are raised as TransientError; the broken
        connection is discarded so the next call reconnects.
        """
        try:
            conn = self._usable_connection()
            with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                yield cur
            self._last_used = time.monotonic()
        except _TRANSIENT as exc:
            self.close()
            # Clients see a generic message; the driver's (hosts, ports) is logged.
            logger.warning("database error: %s", _first_line(exc))
            raise TransientError(f"database unavailable ({type(exc).__name__})") from exc

    def _usable_connection(self) -> psycopg2.extensions.connection:
        conn = self._conn
        if conn is not None and not conn.closed and time.monotonic() - self._last_used > PRE_PING_AFTER_IDLE_SECONDS:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.rollback()
            except psycopg2.Error:
                self.close()
                conn = None
        if conn is None or conn.closed:
            conn = self._conn = self._connect()
        return conn

    def ping(self) -> None:
        with self.transaction() as cur:
            cur.execute("SELECT 1")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
