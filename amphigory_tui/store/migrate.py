"""Alembic, driven from code: the migrations ship inside the wheel and run at every startup.

The common case — a database already at the newest revision — is checked with one plain query against
``HEAD_REVISION``, so starting amphigory does not import alembic (about 110 ms); alembic is loaded only to migrate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from amphigory_tui.domain.errors import StoreError
from amphigory_tui.store.engine import Engines

if TYPE_CHECKING:
    from alembic.config import Config

HEAD_REVISION = "0003"
"""The newest migration in ``migrations/versions``; a test checks it against alembic's own view."""

# PostgreSQL: one migrator at a time when several worker machines start together.
_PG_LOCK_KEY = 0x616D7068  # "amph"


def script_location() -> Path:
    """The migrations folder: inside the installed package, or at the root of a source checkout."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StoreError("the database migrations are missing from this installation; reinstall amphigory")


def alembic_config(engines: Engines | None = None) -> Config:
    """An alembic ``Config`` pointing at the shipped migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    if engines is not None:
        cfg.set_main_option("sqlalchemy.url", engines.url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest migration shipped with this version, as alembic reads it from the scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engines: Engines) -> str | None:
    """The migration the database is at (None for an empty database)."""
    with engines.read() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def is_at_head(engines: Engines) -> bool:
    """Whether the database needs no migration."""
    return current_revision(engines) == HEAD_REVISION


def upgrade_to_head(engines: Engines) -> None:
    """Apply every pending migration, holding the writer lock so concurrent starters wait their turn."""
    current = current_revision(engines)
    if current == HEAD_REVISION:
        return
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = alembic_config(engines)
    known = {script.revision for script in ScriptDirectory.from_config(cfg).walk_revisions()}
    if current is not None and current not in known:
        # A newer amphigory migrated this database: downgrading it silently could lose what that version stored.
        raise StoreError(
            f"the database {engines.url_for_messages} is at migration {current!r}, which this amphigory "
            f"({HEAD_REVISION!r} is its newest) does not know: it was written by a newer version; upgrade amphigory"
        )
    with engines.write() as conn:
        if engines.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
