"""`make statements ARGS="--since 2026-12-01"`: the statements of reasons of every block decided since a
time, as JSON lines for submission to the DSA Transparency Database (DSA Art. 24(5); docs/reviews.md#exporting-them).

Reads DATABASE_URL, else make run's embedded PostgreSQL (as `make migrate` does). The statements are the
ones `GET /moderation/moderation_result/{task_id}/statement` answers: one builder
(chalicelib/domain/reviews.py `statement`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from chalicelib.domain import reviews as rules
from chalicelib.storage.db import Database
from chalicelib.storage.reviews import ReviewStore
from toolkit import logs, names

PAGE = 1000


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or names.database_url(int(os.environ.get("EMBEDDED_PG_PORT") or names.RUN_PG_PORT))


def parse_since(text: str) -> datetime:
    """An ISO 8601 date or time; without a zone, UTC."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--since must be an ISO 8601 date or time, got {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def statements(store: ReviewStore, since: datetime, *, all_fields: bool, platform: str) -> Iterator[dict[str, Any]]:
    """Every block decided at or after `since`, by task id, a page at a time."""
    after = 0
    while True:
        rows = store.blocks_since(since, after_id=after, limit=PAGE)
        for row in rows:
            task = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
            full = rules.statement(task, platform=platform)
            yield full if all_fields else {k: full[k] for k in rules.DSA_FIELDS}
        if len(rows) < PAGE:
            return
        after = int(rows[-1]["task_id"])


def write(out: IO[str], lines: Iterator[dict[str, Any]]) -> int:
    n = 0
    for line in lines:
        out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        n += 1
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make statements", description=__doc__.split("\n\n")[0])
    parser.add_argument("--since", type=parse_since, required=True, help="ISO 8601 date or time (UTC unless given)")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    parser.add_argument("--all-fields", action="store_true", help="keep this service's fields beside the DSA ones")
    parser.add_argument("--platform", default="ad-moderation", help="platform_name in each statement")
    args = parser.parse_args(argv)
    logs.setup()
    log = logs.get("statements")
    db = Database(database_url())
    try:
        lines = statements(ReviewStore(db), args.since, all_fields=args.all_fields, platform=args.platform)
        if args.out is None:
            n = write(sys.stdout, lines)
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("w", encoding="utf-8") as out:
                n = write(out, lines)
    finally:
        db.close()
    log.info("%d statement(s) of reasons since %s%s", n, args.since.isoformat(), f" -> {args.out}" if args.out else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
