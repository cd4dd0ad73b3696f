"""SQLite's raw write transaction (the pool's hot path): durable settings, all-or-nothing, errors as StoreError."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from amphigory_tui.domain.errors import StoreError
from amphigory_tui.store.engine import BUSY_TIMEOUT_MS, WriterBusy, make_engines
from amphigory_tui.store.migrate import upgrade_to_head


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM system_state").fetchone()[0])


def test_raw_write_commits_with_the_writer_pragmas(tmp_path: Path) -> None:
    """The raw transaction runs on the pooled writer: WAL, synchronous=FULL, foreign keys; it commits."""
    path = tmp_path / "a.db"
    engines = make_engines(f"sqlite:///{path}")
    try:
        upgrade_to_head(engines)
        with engines.raw_write() as raw:
            assert raw.in_transaction
            pragmas = [
                raw.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "synchronous", "foreign_keys")
            ]
            assert pragmas == ["wal", 2, 1]
            raw.execute("INSERT INTO system_state (key, value, updated_at) VALUES ('k', 'v', 0)")
        assert _count(path) == 1
    finally:
        engines.dispose()


def test_raw_write_rolls_back_on_an_exception_and_stays_usable(tmp_path: Path) -> None:
    """An error inside leaves nothing written and the writer connection idle for the next transaction."""
    path = tmp_path / "a.db"
    engines = make_engines(f"sqlite:///{path}")
    try:
        upgrade_to_head(engines)
        with pytest.raises(RuntimeError), engines.raw_write() as raw:
            raw.execute("INSERT INTO system_state (key, value, updated_at) VALUES ('k', 'v', 0)")
            raise RuntimeError("boom")
        assert _count(path) == 0
        with pytest.raises(StoreError, match="database error"), engines.raw_write() as raw:
            raw.execute("INSERT INTO no_such_table VALUES (1)")
        with engines.raw_write() as raw:
            raw.execute("INSERT INTO system_state (key, value, updated_at) VALUES ('k2', 'v', 0)")
        assert _count(path) == 1
    finally:
        engines.dispose()


def test_raw_write_without_wait_refuses_a_busy_writer_and_writes_nothing(tmp_path: Path) -> None:
    """wait=False: the writer held by another thread, or SQLite's lock by another connection → WriterBusy at once;
    nothing is written, the busy timeout is back to normal and the next transaction works."""
    path = tmp_path / "a.db"
    engines = make_engines(f"sqlite:///{path}")
    try:
        upgrade_to_head(engines)
        inside, release = threading.Event(), threading.Event()

        def hold_writer() -> None:
            with engines.write():
                inside.set()
                release.wait(30)

        holder = threading.Thread(target=hold_writer)
        holder.start()
        assert inside.wait(30)
        with pytest.raises(WriterBusy), engines.raw_write(wait=False) as raw:
            raw.execute("INSERT INTO system_state (key, value, updated_at) VALUES ('a', 'v', 0)")
        release.set()
        holder.join()

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's writer, as far as SQLite can tell
        with pytest.raises(WriterBusy), engines.raw_write(wait=False) as raw:
            raw.execute("INSERT INTO system_state (key, value, updated_at) VALUES ('b', 'v', 0)")
        other.execute("ROLLBACK")
        other.close()

        with engines.raw_write(wait=False) as raw:
            assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
            raw.execute("INSERT INTO system_state (key, value, updated_at) VALUES ('c', 'v', 0)")
        with engines.raw_write() as raw:
            assert [r[0] for r in raw.execute("SELECT key FROM system_state")] == ["c"]
    finally:
        engines.dispose()
