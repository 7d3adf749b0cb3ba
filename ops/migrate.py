"""`make migrate`: apply the pending migrations to the PostgreSQL named by DATABASE_URL,
adopting an older service's database on the way, or preview them (docs/operations/migrations.md).

    python -m ops.migrate            apply; print what was applied
    python -m ops.migrate --status   what the database is, what is applied and pending; changes nothing
    python -m ops.migrate --client older-clients   the tasks already there (adopted ones too) are that
                                     client's when they get owners (migrations/V8; default `legacy`)

The same code as the deployed `migrate` function (chalicelib.operations.deploy_migrations.run),
over migrations/ instead of the copy the package ships. Without DATABASE_URL it uses
make run's embedded PostgreSQL (toolkit/names.py; EMBEDDED_PG_PORT moves it, as for
make run), which it never starts. On a database it cannot adopt it stops before
changing anything, and says what it found and what to do.
Exit codes: 0 done, 1 not done (the message says why), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from chalicelib.domain.clients import CLIENT_NAME, LEGACY_CLIENT
from chalicelib.operations import deploy_migrations
from chalicelib.storage import migrations as migrate
from toolkit import logs, names

log = logs.get("migrate")


def database_url() -> tuple[str, bool]:
    """DATABASE_URL, else make run's embedded server's; and whether it was the default."""
    if url := os.environ.get("DATABASE_URL"):
        return url, False
    return names.database_url(int(os.environ.get("EMBEDDED_PG_PORT") or names.RUN_PG_PORT)), True


def shown(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


def print_status(status: migrate.Status) -> None:
    print(f"database: {status.found}")
    print(f"applied ({len(status.applied)}): {', '.join(status.applied) or 'none'}")
    print(f"pending ({len(status.pending)}):" + ("" if status.pending else " none, up to date"))
    for step in status.pending:
        print(f"  {step}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.migrate",
        description="Apply pending migrations to DATABASE_URL (default: make run's embedded PostgreSQL).",
    )
    parser.add_argument("--status", action="store_true", help="show applied and pending migrations; change nothing")
    parser.add_argument("--client", default=None, metavar="NAME",
                        help="who owns the tasks already in the database (older services' included) when they get "
                        f"owners (migrations/V8); default {LEGACY_CLIENT!r} (docs/clients.md)")
    args = parser.parse_args(argv)
    logs.setup()
    url, default = database_url()
    if default:
        log.info("DATABASE_URL is not set: using make run's embedded PostgreSQL at %s (started by `make run`, not "
                 "here); for another server: DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME make migrate", url)
    else:
        log.info("database %s", shown(url))
    try:
        if args.status:
            print_status(migrate.status(url, names.MIGRATIONS_DIR))
            return 0
        if args.client is not None and not CLIENT_NAME.fullmatch(args.client):
            log.error("--client %r: 1-63 lower-case letters, digits and '-'", args.client[:70])
            return 2
        applied = deploy_migrations.run(url, names.MIGRATIONS_DIR, default_client=args.client)
    except migrate.MigrationError as exc:
        log.error("%s", exc)
        if default and str(exc).startswith("cannot connect"):
            log.error("is `make run` running? Or set DATABASE_URL to the database to migrate.")
        return 1
    for step in applied:
        print(f"applied {step}")
    if not applied:
        print("nothing to apply: the database is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
