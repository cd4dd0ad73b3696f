"""Where amphigory keeps its files by default (platformdirs: XDG on Linux)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "amphigory"
CONFIG_ENV = "AMPHIGORY_CONFIG"


def config_dir() -> Path:
    """The user's config directory for amphigory."""
    return Path(platformdirs.user_config_dir(APP_NAME))


def data_dir() -> Path:
    """The user's data directory: database, work dir, lock files."""
    return Path(platformdirs.user_data_dir(APP_NAME))


def default_config_file() -> Path:
    """``<config dir>/config.toml``."""
    return config_dir() / "config.toml"


def default_database_url() -> str:
    """A SQLite database in the data directory."""
    return f"sqlite:///{data_dir() / 'amphigory.db'}"


def default_work_dir() -> Path:
    """Where jobs keep their temporary files."""
    return data_dir() / "work"


def lock_dir() -> Path:
    """Where every amphigory process holds its lock file (who is alive on this host)."""
    return data_dir() / "locks"


def config_file_from_env() -> Path | None:
    """The file named by ``$AMPHIGORY_CONFIG``, if set."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None
