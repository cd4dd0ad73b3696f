"""The only package that talks SQL. It hands out plain domain objects, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass

from amphigory_tui.config import Settings
from amphigory_tui.domain.clock import SYSTEM_CLOCK, Clock
from amphigory_tui.store.engine import AdvisoryLock, Engines, WriterBusy, make_engines
from amphigory_tui.store.jobs import JobFilter, JobStore
from amphigory_tui.store.media import KnownFile, MediaFilter, MediaRecord, MediaStore
from amphigory_tui.store.migrate import upgrade_to_head
from amphigory_tui.store.state import LogStore, StateStore
from amphigory_tui.store.workers import WorkerStore

__all__ = [
    "AdvisoryLock",
    "JobFilter",
    "JobStore",
    "KnownFile",
    "LogStore",
    "MediaFilter",
    "MediaRecord",
    "MediaStore",
    "StateStore",
    "Store",
    "WorkerStore",
    "WriterBusy",
    "open_store",
]


@dataclass
class Store:
    """Every store of one database, sharing its engines and clock."""

    engines: Engines
    clock: Clock
    jobs: JobStore
    media: MediaStore
    workers: WorkerStore
    state: StateStore
    log: LogStore

    def close(self) -> None:
        """Close the database connections."""
        self.engines.dispose()


def open_store(
    settings: Settings, *, clock: Clock = SYSTEM_CLOCK, migrate: bool = True, url: str | None = None
) -> Store:
    """Open the configured database, migrating it to the latest schema first (unless told not to)."""
    engines = make_engines(url or settings.database_url)
    if migrate:
        upgrade_to_head(engines)
    return Store(
        engines=engines,
        clock=clock,
        jobs=JobStore(
            engines,
            clock,
            max_retries=settings.jobs.max_retries,
            retry_delay_s=settings.jobs.retry_delay_s,
            retry_backoff=settings.jobs.retry_backoff,
        ),
        media=MediaStore(engines, clock),
        workers=WorkerStore(engines, clock),
        state=StateStore(engines, clock),
        log=LogStore(engines, clock),
    )
