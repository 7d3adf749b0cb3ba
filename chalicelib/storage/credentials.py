"""The database URL from Secrets Manager, read once and again when PostgreSQL rejects it.

A warm function keeps its URL for its whole life. When the password is rotated
(docs/operations/secret-rotation.md), its next connect fails authentication;
chalicelib/storage/db.py then asks `SecretUrl.reread` for something else to try:

- the secret's AWSCURRENT version (one GetSecretValue): rotation has finished
  and the function holds the old URL;
- if AWSCURRENT is still the URL that was just rejected, its AWSPENDING
  version (a second call): a single-user rotation between `setSecret` (the new
  password is already the database's) and `finishSecret` (AWSCURRENT not yet
  moved). Without it, every connect in that window would fail.

Re-reads are throttled per process: one at a time (a thread that waits for
another's re-read gets its result), and at most one per `min_interval_seconds`,
so a password that is really wrong costs a failed connect per request, not a
Secrets Manager call per request. The first read, on first use, is not
throttled.

The secret holds a `postgresql://` URL, or the JSON of Secrets Manager's RDS
rotation functions (`{"username", "password", "host", "port", "dbname"}`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from chalicelib.config import ConfigurationError
from chalicelib.errors import TransientError
from chalicelib.logs import logger

CURRENT, PENDING = "AWSCURRENT", "AWSPENDING"
REREAD_MIN_INTERVAL_SECONDS = 5.0


def url_from_secret(text: str) -> str:
    """The connection URL a secret string holds: a URL as it is, or one built from
    the JSON the RDS rotation functions keep (their `dbname` is required here: a
    default database would be the wrong one)."""
    text = text.strip()
    if not text.startswith("{"):
        return text
    try:
        fields = json.loads(text)
        user, password, host, dbname = (str(fields[k]) for k in ("username", "password", "host", "dbname"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            "the database secret is JSON without username, password, host and dbname: it must hold a "
            "postgresql:// URL or those fields (docs/operations/secret-rotation.md)"
        ) from exc
    port = int(fields.get("port") or 5432)
    return f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(dbname, safe='')}"


class SecretUrl:
    """chalicelib.storage.db.Credentials backed by a Secrets Manager secret.

    `client` builds the secretsmanager client, on first use.
    """

    def __init__(self, secret_id: str, client: Callable[[], Any], *,
                 min_interval_seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._secret_id = secret_id
        self._new_client = client
        self._sm: Any = None
        self._min_interval = REREAD_MIN_INTERVAL_SECONDS if min_interval_seconds is None else min_interval_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._url: str | None = None
        self._reread_at: float | None = None
        self._offered: list[str] = []
        self.rereads = 0  # GetSecretValue rounds after a rejection (tests, logs)

    def url(self) -> str:
        with self._lock:
            if self._url is None:
                self._url = self._current()
            return self._url

    def reread(self, rejected: str) -> list[str]:
        """URLs worth trying after `rejected` failed authentication, best first; empty
        when the secret offers nothing new (or was re-read too recently)."""
        with self._lock:
            now = self._clock()
            if self._reread_at is not None and now - self._reread_at < self._min_interval:
                # Another thread's re-read just finished (use its result), or a wrong password is being retried.
                return [u for u in self._offered if u != rejected]
            self._reread_at = now
            self.rereads += 1
            self._url = current = self._current()
            pending = self._pending() if current == rejected else None
            self._offered = [current] + ([pending] if pending is not None and pending != current else [])
            logger.warning("database secret re-read after a rejected password", extra={
                "current_changed": current != rejected, "pending_found": pending is not None, "rereads": self.rereads})
            return [u for u in self._offered if u != rejected]

    def _current(self) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return url_from_secret(self._get(CURRENT))
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable(CURRENT, exc) from exc

    def _pending(self) -> str | None:
        """AWSPENDING's URL; None when no rotation is under way (no version has the stage)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return url_from_secret(self._get(PENDING))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise _unavailable(PENDING, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(PENDING, exc) from exc

    def _get(self, stage: str) -> str:
        self._sm = self._sm or self._new_client()
        return str(self._sm.get_secret_value(SecretId=self._secret_id, VersionStage=stage)["SecretString"])


def _unavailable(stage: str, exc: Exception) -> TransientError:
    """Secrets Manager unreachable or refusing: 503 on the API, a retried batch on the scorer."""
    logger.warning("could not read the database secret", extra={"stage": stage, "error": str(exc)})
    return TransientError("database credentials unavailable (Secrets Manager)")
