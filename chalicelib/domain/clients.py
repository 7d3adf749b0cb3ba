"""Clients and their scopes (issue 20; docs/clients.md). Pure data.

Every caller is a client, known by the API key the gateway verified. What a key may
do is its scopes; which scope each route needs is the route table's
(chalicelib/api/routes.py, SCOPES).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple, Protocol

SUBMIT = "submit"  # submit tasks, score ads, read and list its own tasks
CLOSE = "close"  # close ads
MODERATE = "moderate"  # the human review queue: claim and decide reviews and appeals (issue 21)
ADMIN = "admin"  # read every client's tasks and events; operations routes
SCOPES = (SUBMIT, CLOSE, MODERATE, ADMIN)
DEFAULT_SCOPES = frozenset({SUBMIT})
ALL_SCOPES = frozenset(SCOPES)

# Client names, as `make api-key` accepts them (and api_clients' CHECK).
CLIENT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Who owns the tasks from before clients existed, and those adopted from the older
# services, unless `make migrate ARGS="--client NAME"` names another (migrations/V8).
LEGACY_CLIENT = "legacy"

# Which contract a client's requests speak (issue 25; docs/clients.md#contracts), pinned per client
# as Stripe pins API versions: CURRENT (this service's 400/202 and error shape) or LEGACY (the older
# FastAPI services' answers: 422 in FastAPI's shape, 200 on submit). A request may ask for the
# other one with CONTRACT_HEADER; chalicelib/api/auth.py decides, in one place.
CURRENT = "current"
LEGACY = "legacy"
CONTRACTS = (CURRENT, LEGACY)
CONTRACT_HEADER = "Moderation-Contract"
# A legacy client's key, unless `--scope` says otherwise: what the older services' clients call
# (submit, poll, score, close). The client `make migrate` moves over is pinned to LEGACY (migrations/V9).
LEGACY_SCOPES = frozenset({SUBMIT, CLOSE})


def parse_contract(value: str) -> str:
    """A contract name; ValueError naming the choices."""
    if value not in CONTRACTS:
        raise ValueError(f"unknown contract {value[:40]!r}: the contracts are {', '.join(CONTRACTS)}")
    return value


def default_scopes(contract: str) -> frozenset[str]:
    """The scopes of a new key given without `--scope`."""
    return LEGACY_SCOPES if contract == LEGACY else DEFAULT_SCOPES


def parse_scopes(values: Iterable[str]) -> frozenset[str]:
    """Scopes from `--scope a,b --scope c`; ValueError naming an unknown one."""
    scopes = {s.strip() for v in values for s in v.split(",") if s.strip()}
    unknown = sorted(scopes - ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}: the scopes are {', '.join(SCOPES)}")
    return frozenset(scopes)


class Caller(NamedTuple):
    """The client behind a request, as the gateway verified it."""

    client: str
    scopes: frozenset[str]
    contract: str = CURRENT  # the contract the client is pinned to

    @property
    def sees_all(self) -> bool:
        """`admin` reads every client's tasks; anyone else only their own."""
        return ADMIN in self.scopes

    @property
    def owner(self) -> str | None:
        """The client whose tasks a read may see; None: every client's."""
        return None if self.sees_all else self.client

    def may(self, needed: frozenset[str]) -> bool:
        """A route needing any of `needed` (empty: open to every key)."""
        return not needed or bool(needed & self.scopes)


class Directory(Protocol):
    """API key id -> its client (None: no client's key). The api_clients table on a
    deployed stack (chalicelib/storage/clients.py), make run's key store locally."""

    def lookup(self, key_id: str) -> Caller | None: ...
