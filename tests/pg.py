"""A real PostgreSQL server for the test session (pytest plugin: ``pytest_plugins = ["tests.pg"]``).

The server lives in a temporary directory, listens on 127.0.0.1 on a free port with trust authentication
and ``fsync=off`` (the data is thrown away, so durability only costs time), and is stopped and deleted at the
end of the session. PostgreSQL refuses to run as root, and CI runs as root, so the server then runs as an
unprivileged system user (``amphigory-pg``, created on first use, or ``nobody``).

Fixtures:

- ``postgres_server`` (session): the running :class:`PostgresServer`.
- ``postgres_url`` (session): ``postgresql+psycopg://…`` of one database shared by the whole session.
- ``fresh_postgres_url`` (function): ``postgresql+psycopg://…`` of a new, empty database for one test.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql

PG_SYSTEM_USER = "amphigory-pg"
SUPERUSER = "amphigory"
SESSION_DATABASE = "amphigory_test"
START_ATTEMPTS = 3
MISSING_BINARIES = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found via `pg_config --bindir` nor in "
    "/usr/lib/postgresql/*/bin: run scripts/test, which installs everything the tests need."
)


@dataclass(frozen=True)
class RunAs:
    """The account the server's processes run as (None ids: the current user)."""

    uid: int | None
    gid: int | None
    home: Path | None


@dataclass
class PostgresServer:
    """A running throw-away PostgreSQL server and the helpers to make databases on it."""

    bindir: Path
    root: Path
    port: int
    run_as: RunAs
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    @property
    def datadir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        """The server's log file (read it when a test is puzzled by the server)."""
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit psycopg connection to ``database`` (the caller closes it)."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=database,
            autocommit=True,
            connect_timeout=10,
        )

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (``test_<n>`` when no name is given) and return its name."""
        name = name or f"test_{next(self._counter)}"
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending connections a test left open (they would otherwise pile up)."""
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl`` on this cluster as the server's account."""
        return _run(self.run_as, [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args], self.root)


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres, or None when the server is not installed."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        # pg_config may come from libpq-dev alone, so its answer counts only if initdb is really there.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                candidates.append(Path(out.stdout.strip()))

    def major(path: str) -> int:
        version = Path(path).parent.parent.name
        return int(version) if version.isdigit() else 0

    for initdb in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major, reverse=True):
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _system_account() -> RunAs:
    """Who runs the server: ourselves, or an unprivileged account when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return RunAs(None, None, None)
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        # A non-login root shell may lack /usr/sbin in PATH.
        useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
        if useradd:
            # Another test session may create it at the same moment: only the lookup afterwards decides.
            argv = [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"]
            subprocess.run([*argv, PG_SYSTEM_USER], capture_output=True, check=False)
        try:
            entry = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            entry = pwd.getpwnam("nobody")
    return RunAs(entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def _run(run_as: RunAs, argv: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell) as ``run_as``, from ``cwd`` which that account can enter."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "LC_ALL": "C",
        "LANG": "C",
    }
    return subprocess.run(
        list(argv),
        cwd=cwd,
        env=env,
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=[] if run_as.uid is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _reachable_tmp() -> str:
    """A temp base directory every account can traverse (TMPDIR may point somewhere private to root)."""
    base = Path(tempfile.gettempdir()).resolve()
    for directory in (base, *base.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            return "/tmp"
    return str(base)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (another process may still take it: we retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fail(what: str, result: subprocess.CompletedProcess[str], logfile: Path | None = None) -> NoReturn:
    """Fail the session with the command's own words (and the server log's tail) instead of a traceback."""
    detail = (result.stdout + result.stderr).strip()
    if logfile is not None and logfile.exists():
        tail = logfile.read_text(errors="replace").splitlines()[-30:]
        detail += f"\n--- {logfile} ---\n" + "\n".join(tail)
    pytest.fail(f"{what} failed (exit {result.returncode}):\n{detail}", pytrace=False)


def start_server(bindir: Path) -> PostgresServer:
    """initdb a cluster in a new temp dir and start it; the caller must call :func:`stop_server`."""
    run_as = _system_account()
    root = Path(tempfile.mkdtemp(prefix="amphigory-pg-", dir=_reachable_tmp()))
    try:
        (root / "sock").mkdir()
        if run_as.uid is not None and run_as.gid is not None:
            for path in (root, root / "sock"):
                os.chown(path, run_as.uid, run_as.gid)
        server = PostgresServer(bindir=bindir, root=root, port=0, run_as=run_as)
        initdb = [str(bindir / "initdb"), "-D", str(server.datadir), "-U", SUPERUSER, "--auth=trust"]
        initdb += ["--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"]
        result = _run(run_as, initdb, root)
        if result.returncode != 0:
            _fail("initdb", result)
        base_conf = (server.datadir / "postgresql.conf").read_text()
        for _attempt in range(START_ATTEMPTS):
            server.port = _free_port()
            # Settings go into postgresql.conf rather than `pg_ctl -o`, which pg_ctl hands to a shell.
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(server.port),
                "unix_socket_directories": f"'{root / 'sock'}'",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "200",
                "shared_buffers": "32MB",
            }
            extra = "".join(f"{key} = {value}\n" for key, value in settings.items())
            (server.datadir / "postgresql.conf").write_text(base_conf + "\n# amphigory tests\n" + extra)
            result = server.pg_ctl("start", "-w", "-t", "60", "-l", str(server.logfile))
            if result.returncode == 0:
                return server
        # Losing the port race is the only expected cause; after the last try the log says what went wrong.
        _fail("pg_ctl start", result, server.logfile)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def stop_server(server: PostgresServer) -> None:
    """Stop the server at once (its data is disposable) and delete its directory."""
    try:
        server.pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (started on first use, stopped and deleted at session end)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(MISSING_BINARIES, pytrace=False)
    server = start_server(bindir)
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of a database shared by the whole session: ``postgresql+psycopg://USER@127.0.0.1:PORT/DB``."""
    return postgres_server.url(postgres_server.create_database(SESSION_DATABASE))


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a new, empty database for one test; dropped (with any connections left open) afterwards."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
