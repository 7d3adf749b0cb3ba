"""The API keys of `make run`: a JSON file in its state dir, which its API server checks.

The deployed API's keys live in API Gateway's usage plan; `chalice local` has none and
checks no key. So that developers exercise the key path before deploying, `make run`
keeps its keys in `<LOCAL_STATE_DIR>/api-keys.json`: it creates the key of client
`local` at start (from API_KEY if set), devstack/chalice_local.py refuses any other with
the deployed API's own 403, and `make api-key ARGS="--make-run create|list|revoke"`
(ops/api_keys.py) manages more. Local keys have no quota or throttle.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fasteners

from toolkit import names

FILE_NAME = "api-keys.json"
DEFAULT_CLIENT = "local"  # the key make run creates for its own user


@dataclass(frozen=True, slots=True)
class LocalKey:
    client: str
    id: str
    value: str
    created: str


def new_value() -> str:
    """40 letters and digits, like the keys API Gateway generates (alphanumeric, 20-128)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(40))


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
        if self._cache is None or self._cache[0] != version:
            raw = json.loads(self.path.read_text())
            self._cache = (version, {k["client"]: LocalKey(**k) for k in raw.get("keys", [])})
        return dict(self._cache[1])

    def find(self, value: str) -> LocalKey | None:
        """The key with this value; compared in constant time, like any secret."""
        found = None
        for key in self.keys().values():
            if secrets.compare_digest(key.value.encode(), value.encode()):
                found = key
        return found

    def create(self, client: str, value: str | None = None) -> LocalKey:
        with self._lock:
            keys = self.keys()
            if client in keys:
                raise KeyError(f"client {client!r} already has a key ({keys[client].id}): revoke it first")
            return self._add(keys, client, value)

    def ensure(self, client: str, value: str | None = None) -> LocalKey:
        """The client's key: kept if it exists (and has this value, when one is given), else (re)made."""
        with self._lock:
            keys = self.keys()
            if client in keys and (value is None or keys[client].value == value):
                return keys[client]
            return self._add(keys, client, value)

    def _add(self, keys: dict[str, LocalKey], client: str, value: str | None) -> LocalKey:
        key = LocalKey(client=client, id=secrets.token_hex(5), value=value or new_value(),
                       created=datetime.now(UTC).isoformat(timespec="seconds"))
        self._write({**keys, client: key})
        return key

    def revoke(self, client: str) -> LocalKey:
        with self._lock:
            keys = self.keys()
            if client not in keys:
                raise KeyError(f"client {client!r} has no key here ({self.path})")
            key = keys.pop(client)
            self._write(keys)
        return key

    def _write(self, keys: dict[str, LocalKey]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"keys": [asdict(k) for k in keys.values()]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{FILE_NAME}.")
        with os.fdopen(fd, "w") as out:  # 0600 from mkstemp: the keys are secrets
            out.write(body)
        os.replace(tmp, self.path)


def forbidden_response() -> tuple[int, bytes]:
    """The deployed API's answer to a missing or wrong key: the INVALID_API_KEY gateway response
    of infra/resources.json (its template has no variables), so there is one definition."""
    resources: dict[str, Any] = json.loads(names.RESOURCES_FILE.read_text())["Resources"]
    response = resources["RestAPI"]["Properties"]["GatewayResponses"]["INVALID_API_KEY"]
    body = json.loads(response["ResponseTemplates"]["application/json"])  # checks it is plain JSON
    return int(response["StatusCode"]), json.dumps(body, separators=(",", ":")).encode()
