"""SQLite's raw write transaction (the pool's hot path): durable settings, all-or-nothing, errors as StoreError."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from amphigory_tui.domain.errors import StoreError
from amphigory_tui.store.engine import make_engines
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
