"""Read facade for the UI and the CLI: domain objects only, never rows or SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amphigory_tui.domain.events import LogRecord
from amphigory_tui.domain.jobs import Attempt, Job, JobStatus, QueueStats
from amphigory_tui.domain.media import LibraryStats, MediaFile
from amphigory_tui.domain.workers import WorkerInfo
from amphigory_tui.store import JobFilter, MediaFilter, Store

LAST_SCAN_KEY = "scan.last_completed_at"


@dataclass(frozen=True)
class JobDetail:
    """Everything the job detail screen shows."""

    job: Job
    attempts: list[Attempt]
    log: list[LogRecord]
    media: MediaFile | None


class Queries:
    """Read-only questions the screens and commands ask."""

    def __init__(self, store: Store, target_codec: str = "hevc") -> None:
        self._store = store
        self._target_codec = target_codec

    def job(self, job_id: int) -> Job:
        """One job."""
        return self._store.jobs.get(job_id)

    def jobs(
        self,
        *,
        statuses: frozenset[JobStatus] | None = None,
        search: str = "",
        path_contains: tuple[str, ...] = (),
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Job]:
        """A page of jobs matching a filter."""
        flt = JobFilter(statuses=statuses, search=search, path_contains=path_contains)
        return self._store.jobs.list_jobs(flt, offset=offset, limit=limit)

    def count_jobs(
        self, *, statuses: frozenset[JobStatus] | None = None, search: str = "", path_contains: tuple[str, ...] = ()
    ) -> int:
        """How many jobs match a filter."""
        return self._store.jobs.count(JobFilter(statuses=statuses, search=search, path_contains=path_contains))

    def job_ids(
        self,
        *,
        statuses: frozenset[JobStatus] | None = None,
        search: str = "",
        path_contains: tuple[str, ...] = (),
    ) -> list[int]:
        """The ids of every job matching a filter, in table order (the Queue table pages through them)."""
        return self._store.jobs.ordered_ids(JobFilter(statuses=statuses, search=search, path_contains=path_contains))

    def jobs_by_ids(self, job_ids: Sequence[int]) -> list[Job]:
        """The jobs with these ids (any order; ids that no longer exist are left out)."""
        return self._store.jobs.get_many(job_ids)

    def status_counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (dismissed ones left out)."""
        return self._store.jobs.count_by_status()

    def jobs_changed_since(self, since: float) -> list[Job]:
        """Jobs any process changed at or after ``since``."""
        return self._store.jobs.changed_since(since)

    def job_detail(self, job_id: int, log_lines: int = 50) -> JobDetail:
        """A job with its attempts, its last log lines and its media file."""
        job = self._store.jobs.get(job_id)
        media = self._store.media.get(job.media_file_id) if job.media_file_id else None
        log = [record for _, record in self._store.log.tail(job_id=job_id, limit=log_lines)]
        return JobDetail(job=job, attempts=self._store.jobs.attempts(job_id), log=log, media=media)

    def queue_stats(self) -> QueueStats:
        """Counts for the Queue tab's stats line."""
        return self._store.jobs.stats()

    def library_stats(self) -> LibraryStats:
        """Counts for the Scan tab."""
        last = self._store.state.get(LAST_SCAN_KEY)
        return self._store.media.stats(self._target_codec, float(last) if last else None)

    def media(
        self, *, search: str = "", needs_transcoding_only: bool = False, offset: int = 0, limit: int | None = None
    ) -> list[MediaFile]:
        """A page of media files."""
        flt = MediaFilter(search=search, needs_transcoding_only=needs_transcoding_only)
        return self._store.media.list_media(flt, offset=offset, limit=limit)

    def media_ids(self, *, search: str = "", needs_transcoding_only: bool = False) -> list[int]:
        """The ids of every media file matching a filter, in table order."""
        return self._store.media.ordered_ids(MediaFilter(search=search, needs_transcoding_only=needs_transcoding_only))

    def media_by_ids(self, media_ids: Sequence[int]) -> list[MediaFile]:
        """The media files with these ids (any order)."""
        return self._store.media.get_many(media_ids)

    def count_media(self, *, search: str = "", needs_transcoding_only: bool = False) -> int:
        """How many media files match a filter."""
        return self._store.media.count(MediaFilter(search=search, needs_transcoding_only=needs_transcoding_only))

    def workers(self) -> list[WorkerInfo]:
        """Every registered worker of every process."""
        return self._store.workers.list_workers()

    def log_tail(self, *, after_id: int = 0, limit: int = 500) -> list[tuple[int, LogRecord]]:
        """Processing-log lines newer than ``after_id``."""
        return self._store.log.tail(after_id=after_id, limit=limit)
