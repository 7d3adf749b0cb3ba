"""`make migrate` (ops/migrate.py) as a user runs it: DATABASE_URL, `--status`
before and after, the applied migrations printed, a refusal explained."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from chalicelib.storage.migrations import MIGRATIONS_DIR
from ops import migrate
from tests.helpers import execute, free_port
from tests.integration.test_adoption import seeded
from toolkit import names


@pytest.fixture()
def run(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture):
    """main(args) -> (exit code, stdout, the log lines: stderr outside pytest)."""

    caplog.set_level(logging.INFO, logger="migrate")

    def main(*args: str) -> tuple[int, str, str]:
        caplog.clear()
        code = migrate.main(list(args))
        return code, capsys.readouterr().out, caplog.text

    return main


def test_status_apply_again_on_seed_002(empty_db: str, monkeypatch, run) -> None:
    seeded(empty_db, "002")
    monkeypatch.setenv("DATABASE_URL", empty_db)
    code, out, _ = run("--status")
    assert code == 0
    assert out.splitlines()[:4] == [
        "database: an older service's database (pgmigrate schema_version: 1, 2, 4, 5): seed 002's users and "
        "advertisements and an older service's moderation_results (seeds 000, 001, 002)",
        "applied (0): none",
        f"pending ({len(list(MIGRATIONS_DIR.glob('V*.sql')))}):",
        "  V1__users_and_advertisements (adopting seed 002's users and advertisements)",
    ]
    code, out, _ = run()
    assert code == 0
    assert out.splitlines()[0] == "applied V1__users_and_advertisements (adopting seed 002's users and advertisements)"
    applied = {line.split()[1] for line in out.splitlines() if line.startswith("applied ")}
    assert applied == {f.stem for f in MIGRATIONS_DIR.glob("V*.sql")}
    code, out, _ = run()
    assert (code, out) == (0, "nothing to apply: the database is up to date\n")
    code, out, _ = run("--status")
    every = len(list(MIGRATIONS_DIR.glob("V*.sql")))
    assert out.splitlines()[0] == f"database: ad-moderation's database ({every} migrations recorded in _yoyo_migration)"
    assert out.splitlines()[-1] == "pending (0): none, up to date"


def test_a_database_it_cannot_adopt_exits_1_and_says_why(empty_db: str, monkeypatch, run) -> None:
    execute(empty_db, "CREATE TABLE moderation_results (id uuid PRIMARY KEY, verdict text)")
    monkeypatch.setenv("DATABASE_URL", empty_db)
    code, out, err = run()
    assert code == 1 and out == ""
    assert "Nothing was changed" in err and "moderation_results.id is uuid" in err and "What to do" in err
    assert execute(empty_db, "SELECT to_regclass('_yoyo_migration'), to_regclass('yoyo_lock')") == [(None, None)]


def test_without_database_url_it_names_make_runs_database_and_starts_nothing(monkeypatch, run) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("EMBEDDED_PG_PORT", str(free_port()))  # nothing listens there
    code, out, err = run("--status")
    assert code == 1 and out == ""
    assert "DATABASE_URL is not set: using make run's embedded PostgreSQL" in err and "not here" in err
    assert "cannot connect to the database" in err and "is `make run` running?" in err


def test_make_migrate_is_the_module_command() -> None:
    out = subprocess.run(["make", "-s", "-n", "migrate", "ARGS=--status"], cwd=names.ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "-m ops.migrate --status" in out
    helped = subprocess.run([sys.executable, "-m", "ops.migrate", "--help"], capture_output=True, text=True, check=True)
    assert "--status" in helped.stdout
