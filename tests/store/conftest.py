"""Store fixtures: every store test runs on a real SQLite file and on a real PostgreSQL database, with a fixed clock.

PostgreSQL: the store tests share one database per session, migrated once and emptied before each test (~0.03 s);
creating and migrating a new database per test costs ~0.45 s, which a hundred tests cannot afford. The migration
tests use ``fresh_postgres_url`` (a new, truly empty database) to prove the migration path itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.store import Store, open_store
from amphigory_tui.store.jobs import JobStore
from amphigory_tui.store.orm import Base
from tests.pg import PostgresServer
from tests.store.helpers import store_settings

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
STORE_DATABASE = "amphigory_store_tests"


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, unmigrated database: a SQLite temp file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'amphigory.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture(scope="session")
def shared_postgres_store_url(postgres_server: PostgresServer) -> str:
    """A PostgreSQL database migrated to head once per session, for the store tests."""
    url = postgres_server.url(postgres_server.create_database(STORE_DATABASE))
    open_store(store_settings(), url=url).close()
    return url


@pytest.fixture
def empty_postgres_store_url(shared_postgres_store_url: str) -> str:
    """The shared store database with every row of earlier tests deleted (ids keep counting up)."""
    opened = open_store(store_settings(), url=shared_postgres_store_url, migrate=False)
    try:
        with opened.engines.write() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    finally:
        opened.close()
    return shared_postgres_store_url


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for one test's store: a new SQLite temp file, or the emptied shared PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'amphigory.db'}"
    return str(request.getfixturevalue("empty_postgres_store_url"))


@pytest.fixture
def clock() -> FixedClock:
    """A clock that moves only when a test advances it."""
    return FixedClock()


@pytest.fixture
def store(store_url: str, clock: FixedClock) -> Iterator[Store]:
    """A migrated store on each engine, on the fixed clock."""
    opened = open_store(store_settings(), clock=clock, url=store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def jobs(store: Store) -> JobStore:
    """The job store of ``store``."""
    return store.jobs
