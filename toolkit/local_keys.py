"""The API keys of `make run`: a JSON file in its state dir, which its API server checks.

The deployed API's keys live in API Gateway's usage plan; `chalice local` has none and
checks no key. So that developers exercise the key path before deploying, `make run`
keeps its keys in `<LOCAL_STATE_DIR>/api-keys.json`: it creates the key of client
`local` at start (from API_KEY if set), devstack/chalice_local.py refuses any other with
the deployed API's own 403, and `make api-key ARGS="--make-run create|list|revoke"`
(ops/api_keys.py) manages more. Local keys have no quota or throttle.

Each key is stored as its SHA-256 with its client, id and scopes (docs/clients.md): the
value is shown once, at creation, as API Gateway does. (A key is 40 random letters and
digits, about 238 bits: a plain hash is enough, no password stretching.) make run's own
key is the exception: make run prints it at every start and the tools that drive it
(make load, the tests) read it, so its value is kept in `<state>/run-api-key` (0600).
The key store is also make run's client directory: key id -> client and scopes, as the
api_clients table is on a deployed stack (chalicelib/api/auth.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import string
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fasteners

from chalicelib.domain.clients import ALL_SCOPES, CURRENT, DEFAULT_SCOPES, SCOPES, Caller, default_scopes
from toolkit import names

FILE_NAME = "api-keys.json"
OWN_KEY_FILE = "run-api-key"  # make run's own key's value (see above)
DEFAULT_CLIENT = "local"  # the key make run creates for its own user: every scope


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LocalKey:
    """A key as stored: never its value."""

    client: str
    id: str
    sha256: str
    scopes: tuple[str, ...]
    created: str
    contract: str = CURRENT  # the contract its client is pinned to (docs/clients.md#contracts)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key with its value: what create (and ensure, for make run's own) hands out once."""

    key: LocalKey
    value: str

    @property
    def client(self) -> str:
        return self.key.client

    @property
    def id(self) -> str:
        return self.key.id


def new_value() -> str:
    """40 letters and digits, like the keys API Gateway generates (alphanumeric, 20-128)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(40))


def _ordered(scopes: Iterable[str]) -> tuple[str, ...]:
    return tuple(s for s in SCOPES if s in set(scopes))


def _stored(raw: dict[str, Any]) -> LocalKey:
    """An entry of the file; one written before keys were hashed (`value`) is hashed here, and
    rewritten so at the next change (it keeps working meanwhile, with the default scope)."""
    sha = raw.get("sha256") or digest(raw["value"])
    scopes = raw.get("scopes")
    if scopes is None:
        scopes = ALL_SCOPES if raw["client"] == DEFAULT_CLIENT else DEFAULT_SCOPES
    return LocalKey(raw["client"], raw["id"], sha, _ordered(scopes), raw["created"], raw.get("contract", CURRENT))


class LocalKeys:
    """The key file of one state dir. Writers hold a lock and replace the file whole, so a
    reader (the API server, on every request) sees either the old or the new list."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.path = (state_dir or names.state_dir()) / FILE_NAME
        self._lock = fasteners.InterProcessLock(self.path.with_name(f".{FILE_NAME}.lock"))
        self._cache: tuple[tuple[int, int], dict[str, LocalKey]] | None = None

    def keys(self) -> dict[str, LocalKey]:
        """Client -> key, re-read when the file changed (a stat per call; every write is a new
        inode, so a change within the file system's timestamp granularity is seen too)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        version = (stat.st_ino, stat.st_mtime_ns)
        cache = self._cache
        if cache is None or cache[0] != version:
            raw = json.loads(self.path.read_text())
            cache = self._cache = (version, {k["client"]: _stored(k) for k in raw.get("keys", [])})
        return dict(cache[1])

    def find(self, value: str) -> LocalKey | None:
        """The key with exactly this value (no trimming); hashes compared in constant time."""
        wanted, found = digest(value).encode(), None
        for key in self.keys().values():
            if secrets.compare_digest(key.sha256.encode(), wanted):
                found = key
        return found

    def lookup(self, key_id: str) -> Caller | None:
        """make run's client directory (chalicelib.domain.clients.Directory): key id -> client."""
        key = next((k for k in self.keys().values() if k.id == key_id), None)
        return Caller(key.client, frozenset(key.scopes), key.contract) if key else None

    def create(self, client: str, value: str | None = None, scopes: Iterable[str] | None = None,
               contract: str = CURRENT) -> IssuedKey:
        """A new key; without `scopes`, the default of its contract (legacy: submit and close)."""
        with self._lock:
            keys = self.keys()
            if client in keys:
                raise KeyError(f"client {client!r} already has a key ({keys[client].id}): revoke it first")
            return self._add(keys, client, value, default_scopes(contract) if scopes is None else scopes, contract)

    def pin(self, client: str, contract: str) -> LocalKey:
        """Pin the client's key to `contract`; the server reads it at the next request."""
        with self._lock:
            keys = self.keys()
            if client not in keys:
                raise KeyError(f"client {client!r} has no key here ({self.path})")
            keys[client] = replace(keys[client], contract=contract)
            self._write(keys)
            return keys[client]

    def ensure(self, client: str, value: str | None = None, scopes: Iterable[str] = ALL_SCOPES) -> IssuedKey:
        """make run's own key: kept if it exists with this value and these scopes, else (re)made.
        Its value is kept in OWN_KEY_FILE (when none is given, the one there is used)."""
        own = self.path.with_name(OWN_KEY_FILE)
        if value is None and own.is_file():
            value = own.read_text().strip() or None
        with self._lock:
            keys = self.keys()
            kept = keys.get(client)
            if kept and value is not None and kept.sha256 == digest(value) and set(kept.scopes) == set(scopes):
                issued = IssuedKey(kept, value)
            else:
                issued = self._add(keys, client, value, scopes)
            _write_private(own, issued.value + "\n")
            return issued

    def own_key(self) -> str:
        """make run's own key (DEFAULT_CLIENT), as make run last printed it."""
        return self.path.with_name(OWN_KEY_FILE).read_text().strip()

    def _add(self, keys: dict[str, LocalKey], client: str, value: str | None, scopes: Iterable[str],
             contract: str = CURRENT) -> IssuedKey:
        value = value or new_value()
        key = LocalKey(client=client, id=secrets.token_hex(5), sha256=digest(value), scopes=_ordered(scopes),
                       created=datetime.now(UTC).isoformat(timespec="seconds"), contract=contract)
        self._write({**keys, client: key})
        return IssuedKey(key, value)

    def revoke(self, client: str) -> LocalKey:
        with self._lock:
            keys = self.keys()
            if client not in keys:
                raise KeyError(f"client {client!r} has no key here ({self.path})")
            key = keys.pop(client)
            self._write(keys)
        return key

    def _write(self, keys: dict[str, LocalKey]) -> None:
        body = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2) + "\n"
        _write_private(self.path, body)


def _write_private(path: Path, body: str) -> None:
    """Replace `path` whole with `body`, readable by its owner only (mkstemp's 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(body)
    os.replace(tmp, path)


def forbidden_response() -> tuple[int, bytes]:
    """The deployed API's answer to a missing or wrong key: the INVALID_API_KEY gateway response
    of infra/resources.json (its template has no variables), so there is one definition."""
    resources: dict[str, Any] = json.loads(names.RESOURCES_FILE.read_text())["Resources"]
    response = resources["RestAPI"]["Properties"]["GatewayResponses"]["INVALID_API_KEY"]
    body = json.loads(response["ResponseTemplates"]["application/json"])  # checks it is plain JSON
    return int(response["StatusCode"]), json.dumps(body, separators=(",", ":")).encode()
