"""The session's PostgreSQL server is real, writable, and gives each test its own empty database."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.pg import MISSING_BINARIES, SUPERUSER, PostgresServer, find_bindir, start_server, stop_server

pytestmark = pytest.mark.postgres


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """Open a psycopg connection from an SQLAlchemy-style ``postgresql+psycopg://`` URL."""
    assert url.startswith("postgresql+psycopg://"), url
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True)


def test_url_names_a_tcp_server_on_loopback(postgres_url: str) -> None:
    """The URL points at 127.0.0.1 with trust auth for the test superuser."""
    info = conninfo_to_dict(postgres_url.replace("postgresql+psycopg://", "postgresql://", 1))
    assert info["host"] == "127.0.0.1"
    assert int(str(info["port"])) > 0
    assert info["user"] == SUPERUSER
    assert info["dbname"] == "amphigory_test"


def test_server_answers_version(postgres_url: str) -> None:
    """`select version()` reaches a real PostgreSQL server."""
    with _connect(postgres_url) as conn:
        row = conn.execute("select version()").fetchone()
    assert row is not None
    assert str(row[0]).startswith("PostgreSQL ")


def test_write_then_read_back(postgres_url: str) -> None:
    """Rows written in one transaction are read back from a second connection."""
    with _connect(postgres_url) as conn:
        conn.execute("create table if not exists roundtrip (id serial primary key, name text not null)")
        conn.execute("insert into roundtrip (name) values (%s), (%s)", ("$(touch pwned)", "Amélie"))
    with _connect(postgres_url) as conn:
        names = [r[0] for r in conn.execute("select name from roundtrip order by id").fetchall()]
    assert names[-2:] == ["$(touch pwned)", "Amélie"]


def test_fresh_database_is_empty_and_private(fresh_postgres_url: str, postgres_url: str) -> None:
    """A fresh database has no tables and is not the session's shared database."""
    assert fresh_postgres_url != postgres_url
    with _connect(fresh_postgres_url) as conn:
        count = conn.execute("select count(*) from pg_tables where schemaname = 'public'").fetchone()
        conn.execute("create table mine (x int)")
        conn.execute("insert into mine values (42)")
        assert conn.execute("select x from mine").fetchall() == [(42,)]
    assert count == (0,)


def test_each_test_gets_another_fresh_database(fresh_postgres_url: str) -> None:
    """The table the previous test created is not here: databases are per test."""
    with _connect(fresh_postgres_url) as conn:
        row = conn.execute("select to_regclass('public.mine')").fetchone()
    assert row == (None,)


def test_server_does_not_run_as_root(postgres_server: PostgresServer) -> None:
    """PostgreSQL runs unprivileged even when the tests run as root (initdb refuses root)."""
    with postgres_server.connect() as conn:
        row = conn.execute("select pg_catalog.current_setting('data_directory')").fetchone()
    assert row is not None
    assert str(row[0]) == str(postgres_server.datadir)
    owner = postgres_server.datadir.stat().st_uid
    assert owner != 0


def test_find_bindir_points_at_the_server_programs() -> None:
    """The binaries the fixture uses are the real server programs, found without help from PATH."""
    bindir = find_bindir()
    assert bindir is not None, MISSING_BINARIES
    for tool in ("initdb", "pg_ctl", "postgres"):
        assert (bindir / tool).is_file(), bindir / tool


def test_stop_server_stops_it_and_removes_its_directory() -> None:
    """A second server starts beside the session's one, and stopping it frees the port and deletes the dir."""
    bindir = find_bindir()
    assert bindir is not None, MISSING_BINARIES
    server = start_server(bindir)
    try:
        with server.connect() as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        stop_server(server)
    assert not server.root.exists()
    with pytest.raises(psycopg.OperationalError):
        server.connect().close()
