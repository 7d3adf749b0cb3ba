"""api_clients (migrations/V8): which client an API key id is, with its scopes; and
client_contracts (migrations/V9): the contract each client is pinned to.

Read by the API function on a cache miss (chalicelib/api/auth.py), written by
`make api-key` through the `migrate` function (docs/clients.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from chalicelib.domain.clients import CURRENT, Caller, Directory
from chalicelib.storage.db import Database


class ClientStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def lookup(self, key_id: str) -> Caller | None:
        with self._db.transaction() as cur:
            cur.execute(_SELECT + " WHERE a.key_id = %s", (key_id,))
            row = cur.fetchone()
        return _caller(row) if row else None

    def contract(self, client: str) -> str:
        """The contract `client` is pinned to (CURRENT without a pin)."""
        with self._db.transaction() as cur:
            cur.execute("SELECT contract FROM client_contracts WHERE client = %s", (client,))
            row = cur.fetchone()
        return str(row["contract"]) if row else CURRENT

    def pin(self, client: str, contract: str) -> None:
        """Pin `client` to `contract` (its keys' requests speak it within CLIENTS_CACHE_SECONDS)."""
        with self._db.transaction() as cur:
            cur.execute(
                "INSERT INTO client_contracts (client, contract) VALUES (%s, %s) "
                "ON CONFLICT (client) DO UPDATE SET contract = EXCLUDED.contract, updated_at = now()",
                (client, contract),
            )

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
            cur.execute(_SELECT + " ORDER BY a.client, a.key_id")
            return {r["key_id"]: _caller(r) for r in cur.fetchall()}


# No pin: 'current' (domain.clients.CURRENT).
_SELECT = ("SELECT a.key_id, a.client, a.scopes, COALESCE(c.contract, 'current') AS contract "
           "FROM api_clients a LEFT JOIN client_contracts c ON c.client = a.client")


def _caller(row: dict[str, object]) -> Caller:
    return Caller(str(row["client"]), frozenset(row["scopes"]), str(row["contract"]))  # type: ignore[call-overload]


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
