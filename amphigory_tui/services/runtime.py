"""Opening amphigory's services for one process: settings, store, the query and action facades."""

from __future__ import annotations

from dataclasses import dataclass

from amphigory_tui.config import Settings
from amphigory_tui.domain.clock import SYSTEM_CLOCK, Clock
from amphigory_tui.services.actions import Actions
from amphigory_tui.services.queries import Queries
from amphigory_tui.store import Store, open_store


@dataclass
class Services:
    """What the CLI and the TUI work with; the UI uses ``queries`` and ``actions`` only."""

    settings: Settings
    clock: Clock
    store: Store
    queries: Queries
    actions: Actions

    def close(self) -> None:
        """Release the database."""
        self.store.close()

    def schema_revisions(self) -> tuple[str | None, str | None]:
        """``(the database's migration, the newest one this version ships)``; alembic is loaded for the second."""
        from amphigory_tui.store.migrate import current_revision, head_revision

        return current_revision(self.store.engines), head_revision()


def open_services(settings: Settings, *, clock: Clock = SYSTEM_CLOCK, migrate: bool = True) -> Services:
    """Open the database (migrating it) and build the facades."""
    store = open_store(settings, clock=clock, migrate=migrate)
    return Services(
        settings=settings,
        clock=clock,
        store=store,
        queries=Queries(store, settings.rules.target_codec),
        actions=Actions(store),
    )
