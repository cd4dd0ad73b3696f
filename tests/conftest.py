"""Shared fixtures: isolated user dirs for every test, the PostgreSQL server plugin, the anyio backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.pg"]


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the user config/data dirs at a temp dir so no test reads or writes the real ones."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.delenv("AMPHIGORY_CONFIG", raising=False)
    yield home


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (Textual's loop)."""
    return "asyncio"
