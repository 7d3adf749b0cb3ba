"""Apply the SQL migrations in order, once each, to any PostgreSQL, and adopt the
databases of the older services on the way (docs/moving-over.md).

`make migrate` (ops/migrate.py), `make run` and the deployed `migrate` function
(chalicelib/operations/deploy_migrations.py) all run `apply_migrations`; `status` is its
read-only preview.

yoyo-migrations reads the files (`V<N>__<name>.sql`; each after V1 names its
predecessor with `-- depends:`, so V10 comes after V9) and keeps the ledger,
`_yoyo_migration`. Around it:

- **The check comes first.** Before anything is written, the database is read
  (in a read-only transaction): a pending migration that would CREATE a table
  that already exists is either stood in for by the conversion of a shape we
  know (the older services' tables, chalicelib/storage/adoption/*.sql, checked column by
  column and row by row), or the run stops, naming what it found and what to
  do. yoyo itself is only started after that: it creates its tables on connect.
- **Never half applied.** Each migration (or its stand-in) and its ledger row
  commit in one transaction. (yoyo alone applies and records in two.)
- **One at a time.** A PostgreSQL advisory lock is held for the whole run, from
  before the check (yoyo's own lock is a table it would have to create first);
  yoyo's lock is taken too, for older copies of this code. DDL waits at most
  `LOCK_TIMEOUT` for a table lock, so a migration stuck behind a long query
  fails instead of queueing the service's queries behind it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from yoyo import get_backend, read_migrations
from yoyo.exceptions import LockTimeout
from yoyo.migrations import Migration

from chalicelib.storage.db import first_line

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
ADOPTION_DIR = Path(__file__).resolve().parent / "adoption"
LEDGER = "_yoyo_migration"
# The course project's (seed 002) pgmigrate ledger, and the versions of its last release.
PGMIGRATE_LEDGER = "schema_version"
SEED_002_RELEASE = (1, 2, 4, 5)
ADVISORY_LOCK = 7_162_636_971_633_761  # any constant: "ad-moderation migrations"
LOCK_WAIT_SECONDS = 30.0
LOCK_TIMEOUT = "10s"

# The column types (information_schema's names) a stand-in converts.
INT4 = frozenset({"integer"})
INT4_OR_8 = frozenset({"integer", "bigint"})
BOOLEAN = frozenset({"boolean"})
TEXT = frozenset({"text", "character varying"})
FLOAT = frozenset({"double precision", "real"})
TIMESTAMP = frozenset({"timestamp without time zone", "timestamp with time zone"})


class MigrationError(RuntimeError):
    """The migrations cannot run; the message says why and what to do. Nothing was changed."""


class SchemaNotRecognised(MigrationError):
    """Tables the migrations would create exist with shapes or rows they cannot adopt."""


@dataclass(frozen=True, slots=True)
class StandIn:
    """A conversion that takes the place of one migration on an older service's database.

    It applies when every table the migration creates exists with exactly these
    columns (name -> accepted types) and an `id` with a sequence, and no row
    fails a check; it leaves the tables exactly as the migration would create
    them, with every row.
    """

    migration: str
    source: str  # whose tables, for people
    sql: str  # file in ADOPTION_DIR
    shapes: Mapping[str, Mapping[str, frozenset[str]]]
    # (SQL counting the rows it cannot take, what is wrong with them)
    checks: tuple[tuple[str, str], ...] = ()
    # Seed 002: its pgmigrate ledger must be at its last release.
    pgmigrate: tuple[int, ...] | None = None


LEGACY_RESULTS = {
    "id": INT4_OR_8, "item_id": INT4_OR_8, "status": TEXT, "is_violation": BOOLEAN, "probability": FLOAT,
    "error_message": TEXT, "created_at": TIMESTAMP, "processed_at": TIMESTAMP,
}

# Rows V2's constraints (and the API's contract) could not hold: (SQL counting them, what is wrong).
_RESULTS = "SELECT count(*) FROM moderation_results WHERE "
RESULT_CHECKS = (
    (_RESULTS + "status NOT IN ('pending', 'processing', 'completed', 'failed')",
     "a status other than pending, processing, completed, failed"),
    (_RESULTS + "status = 'completed' AND (is_violation IS NULL OR probability IS NULL)",
     "status completed and no verdict"),
    (_RESULTS + "probability < 0 OR probability > 1", "a probability outside [0, 1]"),
    (_RESULTS + "item_id IS NULL OR item_id < 1 OR created_at IS NULL", "no positive item_id, or no created_at"),
)

STAND_INS = {
    s.migration: s
    for s in (
        StandIn(
            "V1__users_and_advertisements",
            "seed 002's users and advertisements",
            "V1__users_and_advertisements.seed_002.sql",
            {
                "users": {"id": INT4, "is_verified_seller": BOOLEAN},
                "advertisements": {
                    "id": INT4, "seller_id": INT4, "name": TEXT, "description": TEXT, "category": INT4,
                    "images_qty": INT4, "is_closed": BOOLEAN,
                },
            },
            checks=(("SELECT count(*) FROM advertisements WHERE images_qty < 0", "a negative images_qty"),),
            pgmigrate=SEED_002_RELEASE,
        ),
        StandIn(
            "V2__moderation_results",
            "an older service's moderation_results (seeds 000, 001, 002)",
            "V2__moderation_results.legacy.sql",
            {"moderation_results": LEGACY_RESULTS},
            checks=RESULT_CHECKS,
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Step:
    migration: str
    adoption: StandIn | None = None

    def __str__(self) -> str:
        return f"{self.migration} (adopting {self.adoption.source})" if self.adoption else self.migration


@dataclass(frozen=True, slots=True)
class Status:
    found: str  # what the database is, in words
    applied: list[str]
    pending: list[Step] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Found:
    columns: dict[str, dict[str, str]]  # our tables that exist: column -> data type
    serial: set[str]  # ... whose id has a sequence
    applied: list[str]
    pgmigrate: tuple[int, ...] | None


def apply_migrations(database_url: str, directory: Path = MIGRATIONS_DIR, *, default_client: str | None = None) -> list[str]:
    """Apply pending migrations (adopting an older service's tables where a
    stand-in fits); return what was applied, empty when up to date. Raises
    MigrationError, having changed nothing, if the database cannot be adopted.

    `default_client`: who owns the tasks already there when V8 gives tasks owners
    (adopted ones included; docs/clients.md); None: `legacy`."""
    migrations = read_migrations(str(directory))
    with _connect(database_url) as conn:
        _lock(conn)
        steps = _plan(conn, migrations).pending
        if not steps:
            return []
        by_id = {m.id: m for m in migrations}
        backend = get_backend(database_url)  # creates yoyo's lock table: only now
        try:
            backend.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            if default_client is not None:  # read by migrations/V8__clients.sql
                backend.cursor().execute("SELECT set_config('moderation.default_client', %s, false)", (default_client,))
            with backend.lock():
                pending = {m.id for m in backend.to_apply(migrations)}  # creates yoyo's ledger if missing
                done: list[str] = []
                for step in steps:
                    if step.migration not in pending:  # applied meanwhile by an older copy of this code
                        continue
                    migration = by_id[step.migration]
                    try:
                        with backend.transaction():
                            if step.adoption is None:
                                migration.process_steps(backend, "apply")
                            else:
                                _adopt(backend.cursor(), step.adoption)
                            backend.log_migration(migration, "apply")
                            backend.mark_one(migration, log=False)
                    except psycopg2.Error as exc:
                        before = f"; applied before it, and kept: {', '.join(done)}" if done else ""
                        raise MigrationError(f"{step} failed and was rolled back{before}: {first_line(exc)}") from exc
                    done.append(str(step))
        except LockTimeout as exc:
            raise MigrationError(
                f"{exc}. With no other migration running, a run that died left its row: DELETE FROM yoyo_lock;"
            ) from exc
        finally:
            backend.connection.close()
    return done


def status(database_url: str, directory: Path = MIGRATIONS_DIR) -> Status:
    """What the database is, what is applied and what `apply_migrations` would do.
    Reads only (one read-only transaction); raises SchemaNotRecognised as
    `apply_migrations` would."""
    with _connect(database_url) as conn:
        return _plan(conn, read_migrations(str(directory)))


# --- the check ----------------------------------------------------------------------


def creates(migration: Migration) -> list[str]:
    """The tables a migration file creates."""
    sql = Path(migration.path).read_text(encoding="utf-8")
    return re.findall(r"^\s*CREATE TABLE\s+(?:IF NOT EXISTS\s+)?(\w+)", sql, re.IGNORECASE | re.MULTILINE)


def _plan(conn: psycopg2.extensions.connection, migrations: Sequence[Migration]) -> Status:
    ours = sorted({table for m in migrations for table in creates(m)})
    conn.set_session(readonly=True, autocommit=False)
    try:
        with conn.cursor() as cur:
            found = _inspect(cur, ours)
            applied = set(found.applied)
            steps, problems = [], []
            # By V<N>: yoyo's sort reads `depends` via a process-wide registry other threads replace (put V10 first)
            for m in sorted((m for m in migrations if m.id not in applied), key=lambda m: int(m.id[1:].split("__", 1)[0])):
                existing = [t for t in creates(m) if t in found.columns]
                if not existing:
                    steps.append(Step(m.id))
                    continue
                stand_in = STAND_INS.get(m.id)
                why = _mismatch(cur, found, stand_in, creates(m)) if stand_in else ["it belongs to something else"]
                if why:
                    problems += [_describe(t, found.columns[t], m.id, stand_in) for t in existing] + [f"    {w}" for w in why]
                else:
                    steps.append(Step(m.id, stand_in))
    finally:
        conn.rollback()
        conn.set_session(readonly=False, autocommit=True)
    if problems:
        raise SchemaNotRecognised(_refusal(problems))
    return Status(_found(found, steps), found.applied, steps)


def _inspect(cur: Any, tables: list[str]) -> _Found:
    cur.execute(
        """
        SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = ANY(%s) ORDER BY table_name, ordinal_position
        """,
        (tables,),
    )
    columns: dict[str, dict[str, str]] = {}
    for table, column, data_type in cur.fetchall():
        columns.setdefault(table, {})[column] = data_type
    cur.execute(
        "SELECT t FROM unnest(%s::text[]) AS t WHERE pg_get_serial_sequence(quote_ident(t), 'id') IS NOT NULL",
        ([t for t, cols in columns.items() if "id" in cols],),
    )
    serial = {r[0] for r in cur.fetchall()}
    applied: list[str] = []
    if _has_columns(cur, LEDGER, "migration_id"):
        cur.execute(f"SELECT migration_id FROM {LEDGER} ORDER BY applied_at_utc")
        applied = [r[0] for r in cur.fetchall()]
    pgmigrate = None
    if _has_columns(cur, PGMIGRATE_LEDGER, "version"):
        cur.execute(f"SELECT version FROM {PGMIGRATE_LEDGER} ORDER BY version")
        pgmigrate = tuple(int(r[0]) for r in cur.fetchall())
    return _Found(columns, serial, applied, pgmigrate)


def _has_columns(cur: Any, table: str, column: str) -> bool:
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s AND column_name = %s)",
        (table, column),
    )
    return bool(cur.fetchone()[0])


def _mismatch(cur: Any, found: _Found, stand_in: StandIn, tables: list[str]) -> list[str]:
    """Why the stand-in does not fit (empty: it fits): shapes first, then rows."""
    why = []
    for table in tables:
        shape, columns = stand_in.shapes[table], found.columns.get(table)
        if columns is None:
            why.append(f"{table} does not exist, but {stand_in.source} include it")
            continue
        if missing := sorted(set(shape) - set(columns)):
            why.append(f"{table} lacks {', '.join(missing)}")
        if unknown := sorted(set(columns) - set(shape)):
            why.append(f"{table} has columns ad-moderation does not know: {', '.join(unknown)}")
        for column in sorted(set(shape) & set(columns)):
            if columns[column] not in shape[column]:
                why.append(f"{table}.{column} is {columns[column]}, expected {' or '.join(sorted(shape[column]))}")
        if "id" in columns and table not in found.serial:
            why.append(f"{table}.id has no sequence (not a SERIAL)")
    if stand_in.pgmigrate is not None and found.pgmigrate is not None and found.pgmigrate != stand_in.pgmigrate:
        at = ", ".join(map(str, found.pgmigrate)) or "none"
        why.append(
            f"its pgmigrate ledger ({PGMIGRATE_LEDGER}) records versions {at}, not the last release's "
            f"{', '.join(map(str, stand_in.pgmigrate))}: bring it to that release with its own migrations first"
        )
    if why:
        return why
    for sql, what in stand_in.checks:
        cur.execute(sql)
        if n := int(cur.fetchone()[0]):
            why.append(f"{n} row(s) with {what} (query: {sql})")
    return why


def _describe(table: str, columns: Mapping[str, str], migration: str, stand_in: StandIn | None) -> str:
    have = ", ".join(f"{c} {t}" for c, t in columns.items())
    line = f"  - table {table} exists ({have}); migration {migration} would create it"
    return line + (f", and adopts only {stand_in.source}:" if stand_in else ":")


def _refusal(problems: list[str]) -> str:
    return "\n".join(
        [
            "this database has tables ad-moderation would create, in shapes it cannot adopt. Nothing was changed.",
            *problems,
            "What to do: back the database up (pg_dump), then either point DATABASE_URL at an empty database",
            "(createdb moderation), or move the tables above out of the way (ALTER TABLE <name> SET SCHEMA old;)",
            "or fix the rows named, and run again. docs/moving-over.md lists what is adopted.",
        ]
    )


def _found(found: _Found, steps: list[Step]) -> str:
    if found.applied:
        return f"ad-moderation's database ({len(found.applied)} migrations recorded in {LEDGER})"
    adopted = [s.adoption.source for s in steps if s.adoption]
    if not adopted:
        return "no ad-moderation tables yet"
    ledger = f" (pgmigrate {PGMIGRATE_LEDGER}: {', '.join(map(str, found.pgmigrate))})" if found.pgmigrate else ""
    return "an older service's database" + ledger + ": " + " and ".join(adopted)


# --- applying -------------------------------------------------------------------------


@contextmanager
def _connect(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    try:
        conn = psycopg2.connect(database_url, connect_timeout=10, application_name="ad-moderation migrations")
    except psycopg2.OperationalError as exc:
        raise MigrationError(f"cannot connect to the database: {first_line(exc)}") from exc
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def _lock(conn: psycopg2.extensions.connection) -> None:
    """Hold the advisory lock for this session; wait up to LOCK_WAIT_SECONDS for it."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK,))
            if cur.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                cur.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                    "(classid::bigint << 32 | objid::bigint) = %s",
                    (ADVISORY_LOCK,),
                )
                holders = ", ".join(str(r[0]) for r in cur.fetchall()) or "?"
                raise MigrationError(f"another migration run holds the lock (backend pid {holders}); try again when it ends")
            time.sleep(0.5)


def _adopt(cur: Any, stand_in: StandIn) -> None:
    """Run a stand-in's conversion in the caller's transaction (helpers first)."""
    _set_stuck_horizon(cur)
    cur.execute((ADOPTION_DIR / "helpers.sql").read_text(encoding="utf-8"))
    cur.execute((ADOPTION_DIR / stand_in.sql).read_text(encoding="utf-8"))


def _set_stuck_horizon(cur: Any) -> None:
    """The reconciler's stuck-task horizon (STUCK_AFTER_SECONDS), for this transaction:
    adopted unfinished tasks younger than it are handed to the pipeline, older ones
    fail as stuck (adoption/V2__moderation_results.legacy.sql)."""
    import os

    from chalicelib.config import STUCK_AFTER_SECONDS_DEFAULT

    seconds = int(os.environ.get("STUCK_AFTER_SECONDS") or STUCK_AFTER_SECONDS_DEFAULT)
    cur.execute("SELECT set_config('ad_moderation.stuck_after_seconds', %s, true)", (str(seconds),))

