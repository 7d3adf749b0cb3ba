"""api_clients (migrations/V8): which client an API key id is, with its scopes.

Read by the API function on a cache miss (chalicelib/api/auth.py), written by
`make api-key` through the `migrate` function (docs/clients.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from chalicelib.domain.clients import Caller, Directory
from chalicelib.storage.db import Database


class ClientStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def lookup(self, key_id: str) -> Caller | None:
        with self._db.transaction() as cur:
            cur.execute("SELECT client, scopes FROM api_clients WHERE key_id = %s", (key_id,))
            row = cur.fetchone()
        return Caller(row["client"], frozenset(row["scopes"])) if row else None

    def put(self, key_id: str, client: str, scopes: Iterable[str]) -> None:
        with self._db.transaction() as cur:
            cur.execute(
                "INSERT INTO api_clients (key_id, client, scopes) VALUES (%s, %s, %s) "
                "ON CONFLICT (key_id) DO UPDATE SET client = EXCLUDED.client, scopes = EXCLUDED.scopes, "
                "updated_at = now()",
                (key_id, client, sorted(scopes)),
            )

    def delete(self, key_id: str) -> bool:
        with self._db.transaction() as cur:
            cur.execute("DELETE FROM api_clients WHERE key_id = %s RETURNING key_id", (key_id,))
            return cur.fetchone() is not None

    def all(self) -> dict[str, Caller]:
        """key id -> client, for `make api-key list`."""
        with self._db.transaction() as cur:
            cur.execute("SELECT key_id, client, scopes FROM api_clients ORDER BY client, key_id")
            return {r["key_id"]: Caller(r["client"], frozenset(r["scopes"])) for r in cur.fetchall()}


class CachedDirectory:
    """`source`'s answers kept `ttl_seconds` per key id (unknown ids too) in a warm
    container: one query per key and minute instead of one per request
    (docs/clients.md#where-scopes-live-and-why). A scope change takes effect within the TTL."""

    MAX_ENTRIES = 10_000  # key ids come from the gateway; still, never grow without bound

    def __init__(self, source: Directory, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._source, self._ttl, self._clock = source, ttl_seconds, clock
        self._seen: dict[str, tuple[float, Caller | None]] = {}
        self._lock = threading.Lock()  # chalice local serves on threads

    def lookup(self, key_id: str) -> Caller | None:
        now = self._clock()
        hit = self._seen.get(key_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        found = self._source.lookup(key_id)
        with self._lock:
            if len(self._seen) >= self.MAX_ENTRIES:
                self._seen.clear()
            self._seen[key_id] = (now, found)
        return found
