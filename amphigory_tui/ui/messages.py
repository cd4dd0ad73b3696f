"""Textual messages: domain events from the pool and scanner, and results of the thread workers that read the DB.

Thread workers never touch widgets; they post one of these and the handler updates the UI (Textual's workers guide).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from textual.message import Message

from amphigory_tui.domain.events import JobChanged, JobProgress, LogRecord, ScanProgress, WorkerBeat
from amphigory_tui.domain.jobs import Job, JobStatus, QueueStats
from amphigory_tui.domain.media import LibraryStats, MediaFile
from amphigory_tui.domain.workers import WorkerInfo


@dataclass
class ProgressFlush(Message):
    """Progress of running jobs arrived: drain the bridge's coalesced progress map."""

    def can_replace(self, message: Message) -> bool:
        """A pending flush makes another one redundant."""
        return isinstance(message, ProgressFlush)


@dataclass
class JobsProgressed(Message):
    """The latest progress of each job that reported since the last flush (one per job)."""

    progress: dict[int, JobProgress]


@dataclass
class JobStatusChanged(Message):
    """A job of this process's pool changed status."""

    event: JobChanged


@dataclass
class WorkerBeaten(Message):
    """A worker loop of this process's pool is alive."""

    event: WorkerBeat

    def can_replace(self, message: Message) -> bool:
        """A newer beat of the same worker supersedes an older one."""
        return isinstance(message, WorkerBeaten) and message.event.worker_id == self.event.worker_id


@dataclass
class LogAppended(Message):
    """Log records from this process (the logging module, the pool) for the Log tab."""

    records: list[LogRecord]


@dataclass
class ScanProgressed(Message):
    """Where the running scan is."""

    progress: ScanProgress

    def can_replace(self, message: Message) -> bool:
        """Only the latest scan progress matters."""
        return isinstance(message, ScanProgressed) and not message.progress.done


@dataclass
class ScanFinished(Message):
    """The scan ended: done, canceled, or failed with ``error``; ``busy``: it never started (another scan runs)."""

    progress: ScanProgress | None
    error: str | None = None
    busy: bool = False


@dataclass
class Polled(Message):
    """One poll of the database: jobs changed since the last one, the worker registry, new log lines."""

    changed: list[Job]
    workers: list[WorkerInfo] | None
    """None when the registry was not read this round."""
    worker_jobs: dict[int, Job]
    log: list[tuple[int, LogRecord]]
    polled_at: float
    truncated: bool = False


@dataclass
class QueueLoaded(Message):
    """The Queue table's id list for a filter, with counts per status."""

    generation: int
    ids: Sequence[int]
    counts: dict[JobStatus, int]
    jobs: list[Job] = field(default_factory=list)
    """Fresh copies of the jobs around the cursor."""


@dataclass
class QueueStatsLoaded(Message):
    """The stats line's counts (the last part of a Queue reload)."""

    generation: int
    stats: QueueStats


@dataclass
class JobRowsLoaded(Message):
    """Jobs fetched by id for rows coming into view."""

    generation: int
    jobs: list[Job]
    requested: list[int] = field(default_factory=list)


@dataclass
class MediaLoaded(Message):
    """The Scan table's id list for a filter, with the library counts."""

    generation: int
    ids: Sequence[int]
    stats: LibraryStats


@dataclass
class MediaRowsLoaded(Message):
    """Media files fetched by id for rows coming into view."""

    generation: int
    files: list[MediaFile]
    requested: list[int] = field(default_factory=list)


@dataclass
class ActionDone(Message):
    """A user action finished in its worker: what to tell the user, and whether the data changed."""

    text: str
    severity: str = "information"
    changed: bool = True


@dataclass
class DataChanged(Message):
    """Something changed the library or the queue (a scan ended): every tab reloads what it shows."""


@dataclass
class StartupDone(Message):
    """Startup recovery finished (the pool may start); ``notice`` is its one-line summary, if it did anything."""

    notice: str | None
