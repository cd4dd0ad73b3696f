"""Engines and transactions: SQLite in WAL with synchronous=FULL and BEGIN IMMEDIATE writers, or PostgreSQL.

One writer connection per process (a pool of size 1): SQLite allows one writer at a time anyway, and threads
queueing on a Python lock are far cheaper and fairer than threads spinning on ``busy_timeout`` (the claim p99 with
SQLAlchemy sessions in 4 threads reached 19–64 ms; with one writer per process it stays in single milliseconds).
Readers get their own small pool so the UI never waits behind a writer.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import QueuePool

from amphigory_tui.domain.errors import ConfigError, StoreError

BUSY_TIMEOUT_MS = 30_000


class WriterBusy(Exception):
    """``raw_write(wait=False)``: the writer connection or SQLite's write lock is taken right now."""


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock, held on a connection of its own until ``release``.

    The server drops it when that session ends, so a holder that dies (or loses the network) frees it.
    """

    def __init__(self, connection: Connection, key: int) -> None:
        self._connection: Connection | None = connection
        self.key = key

    def release(self) -> None:
        """Unlock and close the connection; idempotent, and never raises (the session's end frees it anyway)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        except Exception:
            # The pooled session would keep the lock: end the session itself instead of handing it back.
            with contextlib.suppress(Exception):
                connection.invalidate()
        with contextlib.suppress(Exception):
            connection.close()


@dataclass(frozen=True)
class Engines:
    """The writer and reader engines of one database."""

    url: str
    writer: Engine
    reader: Engine
    # SQLite's one writer connection, as a lock this process can *try*: the pool's per-job call runs on its event
    # loop when the writer is free this instant, instead of paying a thread hand-off (raw_write(wait=False)).
    _write_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.writer.dialect.name

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is SQLite."""
        return self.dialect == "sqlite"

    @property
    def url_for_messages(self) -> str:
        """The URL with any password masked, for error messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    def sqlite_path(self) -> Path | None:
        """The SQLite database file, if any (its own files are never cleaned up)."""
        if not self.is_sqlite:
            return None
        database = make_url(self.url).database
        return Path(database) if database and database != ":memory:" else None

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        with self._write_lock if self.is_sqlite else contextlib.nullcontext():
            try:
                with self.writer.begin() as conn:
                    yield conn
            except OperationalError as exc:
                raise StoreError(f"database error: {exc.orig}") from exc

    @contextmanager
    def raw_write(self, *, wait: bool = True) -> Iterator[Any]:
        """SQLite only: a ``BEGIN IMMEDIATE`` transaction on the writer's own sqlite3 connection, committed on
        success. For the pool's per-job hot path: SQLAlchemy's begin/commit bookkeeping cost ~70 µs of a no-op
        job's ~500 (bench/pool_noop.py); the connection is still the pooled writer, so writers stay serialised.

        ``wait=False`` raises ``WriterBusy`` at once, before anything is written, when another thread of this
        process holds the writer or another process holds SQLite's write lock.
        """
        if not self._write_lock.acquire(blocking=wait):
            raise WriterBusy()
        try:
            fairy = self.writer.raw_connection()
            raw: Any = fairy.driver_connection
            try:
                self._begin_immediate(raw, wait)
                try:
                    yield raw
                except BaseException:
                    raw.execute("ROLLBACK")
                    raise
                raw.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise StoreError(f"database error: {exc}") from exc
            finally:
                fairy.close()
        finally:
            self._write_lock.release()

    @staticmethod
    def _begin_immediate(raw: Any, wait: bool) -> None:
        if wait:
            raw.execute("BEGIN IMMEDIATE")
            return
        raw.execute("PRAGMA busy_timeout = 0")
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # the primary code of SQLITE_BUSY_*
                raise
            raise WriterBusy() from None
        finally:
            raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (deferred on SQLite: no lock until it reads)."""
        try:
            with self.reader.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc

    def try_advisory_lock(self, key: int) -> AdvisoryLock | None:
        """PostgreSQL only: take session-level advisory lock ``key`` (a signed 64-bit int) now, or None when another
        session holds it; every machine sharing the database contends for it."""
        if self.is_sqlite:
            raise StoreError("advisory locks are a PostgreSQL feature")
        try:
            connection = self.reader.connect()
        except OperationalError as exc:
            raise StoreError(f"database error: {exc.orig}") from exc
        try:
            # Autocommit: the lock is the session's, and no transaction may stay open for as long as it is held.
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one()
        except BaseException as exc:
            connection.close()
            if isinstance(exc, OperationalError):
                raise StoreError(f"database error: {exc.orig}") from exc
            raise
        if not got:
            connection.close()
            return None
        return AdvisoryLock(connection, key)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.writer.dispose()
        self.reader.dispose()


def _sqlite_pragmas(dbapi_conn: Any, *, immediate: bool) -> None:
    # Autocommit at the driver level: we issue BEGIN ourselves (pysqlite's implicit BEGIN is deferred, which
    # turns a read-then-write into a SQLITE_BUSY at commit time instead of a wait at begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed job state survives a power cut (job rows are tiny; the cost is one fsync per commit).
    cur.execute("PRAGMA synchronous = FULL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _make_sqlite(url: str) -> tuple[Engine, Engine]:
    database = make_url(url).database
    if database and database != ":memory:":
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{database}: cannot create the database directory ({exc.strerror})") from None
    common: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}}
    writer = create_engine(url, poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=3600, **common)
    reader = create_engine(url, poolclass=QueuePool, pool_size=4, max_overflow=4, **common)

    @event.listens_for(writer, "connect")
    def _writer_connect(dbapi_conn: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, immediate=True)

    @event.listens_for(writer, "begin")
    def _writer_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(reader, "connect")
    def _reader_connect(dbapi_conn: Any, _record: Any) -> None:
        _sqlite_pragmas(dbapi_conn, immediate=False)

    @event.listens_for(reader, "begin")
    def _reader_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return writer, reader


def make_engines(url: str) -> Engines:
    """Create the engines for ``url`` (nothing connects until first use)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"[database] url {url!r} is not a database URL; allowed: sqlite:////abs/path.db or "
            "postgresql+psycopg://user@host/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        writer, reader = _make_sqlite(url)
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        writer = create_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)
        reader = create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)
    else:
        raise ConfigError(
            f"[database] url uses {backend!r}; allowed: sqlite:////abs/path.db or postgresql+psycopg://user@host/db"
        )
    return Engines(url=url, writer=writer, reader=reader)
