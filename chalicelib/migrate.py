"""Apply the SQL migrations in order, once each (yoyo-migrations).

yoyo records applied migrations in `_yoyo_migration` and takes a lock, so
concurrent or repeated runs are safe. Files are `V<N>__<name>.sql`; each one
after V1 names its predecessor with `-- depends:` so order never depends on
how file names sort (V10 after V9).
"""

from __future__ import annotations

from pathlib import Path

from yoyo import get_backend, read_migrations

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def apply_migrations(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the ids applied (empty when up to date)."""
    backend = get_backend(database_url)
    migrations = read_migrations(str(directory))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return [m.id for m in pending]
