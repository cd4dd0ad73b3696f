"""Helpers of the store tests: seed scanned files, bring a job to a status, snapshot it, count rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from amphigory_tui.config import JobsSettings, Settings
from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.jobs import Attempt, Job, JobStatus, PauseReason
from amphigory_tui.domain.media import AudioStream, Decision, ProbeResult
from amphigory_tui.store import MediaRecord, Store
from amphigory_tui.store.jobs import JobStore

# Settings the store tests rely on: 3 attempts, 30 s before the second, ×4 each further one.
MAX_RETRIES = 3
RETRY_DELAY_S = 30.0
RETRY_BACKOFF = 4.0


def store_settings() -> Settings:
    """Settings with the retry policy the tests assert on spelled out (not left to the defaults)."""
    jobs = JobsSettings(max_retries=MAX_RETRIES, retry_delay_s=RETRY_DELAY_S, retry_backoff=RETRY_BACKOFF)
    return Settings(jobs=jobs)


def media_record(
    path: str,
    *,
    size: int = 1_000_000,
    mtime_ns: int = 1_700_000_000_000_000_000,
    priority: int = 50,
    should_transcode: bool = True,
    probe_error: str | None = None,
    root: str = "/library",
) -> MediaRecord:
    """A scanned h264 file with the rules' verdict."""
    probe = ProbeResult(
        container="matroska",
        duration_s=60.0,
        bitrate_kbps=4000,
        video_codec="h264",
        width=1920,
        height=1080,
        fps=23.976,
        pix_fmt="yuv420p",
        bit_depth=8,
        audio=(AudioStream(index=1, codec="aac", language="eng", channels=2),),
        error=probe_error,
    )
    reason = "h264 1080p → hevc" if should_transcode else "already hevc"
    decision = Decision(should_transcode=should_transcode, reason=reason, priority=priority, est_savings_pct=40)
    return MediaRecord(path=path, root=root, size_bytes=size, mtime_ns=mtime_ns, probe=probe, decision=decision)


def seed_media(store: Store, records: Sequence[MediaRecord]) -> list[int]:
    """Write scanned files through ``MediaStore.upsert``; their ids, in the order given."""
    ids = store.media.upsert(records)
    return [ids[r.path] for r in records]


def seed_candidates(store: Store, count: int, *, prefix: str = "/library/movie") -> list[int]:
    """``count`` files that need transcoding, all of the same priority and distinct sizes."""
    return seed_media(store, [media_record(f"{prefix}{i:04d}.mkv", size=1_000_000 + i) for i in range(count)])


@dataclass
class Snapshot:
    """Everything a refused operation must leave alone: the job row and its attempt history."""

    job: Job
    attempts: list[Attempt] = field(default_factory=list)


def snapshot(jobs: JobStore, job_id: int) -> Snapshot:
    """The job and its attempts, for a before/after comparison."""
    return Snapshot(job=jobs.get(job_id), attempts=jobs.attempts(job_id))


def job_in_status(store: Store, clock: FixedClock, status: str, *, worker: str = "w1") -> Job:
    """A job brought to ``status`` through the store's own operations (never by writing SQL).

    ``status`` is a ``JobStatus`` value, or ``paused-shutdown`` / ``paused-user`` for the two kinds of pause.
    """
    jobs = store.jobs
    job = jobs.create(f"/library/{status}.mkv")
    if status == JobStatus.QUEUED.value:
        return jobs.get(job.id)
    if status == "paused-user":
        return jobs.pause(job.id)
    claimed = jobs.claim(worker)
    assert claimed is not None and claimed.id == job.id
    clock.advance(1)
    if status == JobStatus.RUNNING.value:
        return jobs.get(job.id)
    if status in (JobStatus.PAUSED.value, "paused-shutdown"):
        return jobs.pause_running(job.id, worker, PauseReason.SHUTDOWN)
    if status == JobStatus.COMPLETED.value:
        return jobs.complete(job.id, worker, output_size=500)
    if status == JobStatus.FAILED.value:
        return jobs.fail(job.id, worker, "boom", permanent=True)
    if status == JobStatus.CANCELED.value:
        return jobs.cancel_running(job.id, worker)
    if status == JobStatus.SKIPPED.value:
        return jobs.skip(job.id, worker, "output larger than the source")
    raise AssertionError(f"unknown status {status}")


def count_rows(store: Store, sql: str, **params: Any) -> int:
    """A ``SELECT count(*) …`` straight from the database (checks the store's answer, not through it)."""
    with store.engines.read() as conn:
        return int(conn.execute(text(sql), params).scalar_one())
