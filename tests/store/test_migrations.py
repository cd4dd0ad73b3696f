"""Migrations: an empty database reaches head, and the migrated schema is exactly the ORM's (no autogenerate diff)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from amphigory_tui.store.engine import make_engines
from amphigory_tui.store.migrate import alembic_config, current_revision, head_revision, is_at_head, upgrade_to_head
from amphigory_tui.store.orm import Base


def test_upgrade_on_an_empty_database_reaches_head(db_url: str) -> None:
    """From nothing to the newest revision, with every ORM table present."""
    engines = make_engines(db_url)
    try:
        assert current_revision(engines) is None
        assert not is_at_head(engines)
        upgrade_to_head(engines)
        assert current_revision(engines) == head_revision()
        assert is_at_head(engines)
        with engines.read() as conn:
            tables = set(inspect(conn).get_table_names())
        assert set(Base.metadata.tables) <= tables
        assert "alembic_version" in tables
    finally:
        engines.dispose()


def test_upgrading_twice_changes_nothing(db_url: str) -> None:
    """A second upgrade at startup is a no-op (every process runs it)."""
    engines = make_engines(db_url)
    try:
        upgrade_to_head(engines)
        upgrade_to_head(engines)
        assert current_revision(engines) == head_revision()
    finally:
        engines.dispose()


def test_migrated_schema_matches_the_orm(db_url: str) -> None:
    """alembic autogenerate finds no difference between the migrations and ``orm.Base.metadata``."""
    engines = make_engines(db_url)
    try:
        upgrade_to_head(engines)
        with engines.read() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []
    finally:
        engines.dispose()


def test_revisions_form_one_chain() -> None:
    """One head, one base, every revision reachable: no branch left unmerged."""
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    assert len(scripts.get_bases()) == 1
    chain = list(scripts.walk_revisions())
    assert chain[0].revision == head_revision()
    assert chain[-1].down_revision is None


def test_head_constant_matches_the_migration_scripts() -> None:
    """Startup compares the database with ``HEAD_REVISION`` without loading alembic: it must be the scripts' head."""
    from amphigory_tui.store.migrate import HEAD_REVISION

    assert head_revision() == HEAD_REVISION
