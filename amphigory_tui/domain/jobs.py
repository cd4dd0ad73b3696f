"""Jobs: kinds, statuses, stages and the one table of allowed status transitions.

Every status change in amphigory is one edge of ``ALLOWED``; the store refuses anything else
(``InvalidTransition``) and checks the expected current status and owner in the same UPDATE, so a
stale worker can change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from amphigory_tui.domain.errors import InvalidTransition


class JobKind(StrEnum):
    """What a job does: rip a disc title, transcode a file, insert a file into the library."""

    RIP = "rip"
    TRANSCODE = "transcode"
    INSERT = "insert"


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    SKIPPED = "skipped"


class Stage(StrEnum):
    """The step a running job is in (kept after it stops, to show where it stopped)."""

    DOWNLOAD = "download"
    RIP = "rip"
    TRANSCODE = "transcode"
    VALIDATE = "validate"
    UPLOAD = "upload"
    INSERT = "insert"


class PauseReason(StrEnum):
    """Why a job is paused: a shutdown pause resumes at the next start, a user hold does not."""

    SHUTDOWN = "shutdown"
    USER = "user"


LIVE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED})
"""Statuses of a job that still has work to do; at most one per media file (a unique index)."""

TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.SKIPPED})
"""Statuses that change only through ``resubmit``."""

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    # claim; user hold; user cancel
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.CANCELED}),
    # stage advance/heartbeat; done; retry or orphan requeue; failed; shutdown pause; cancel; skip
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.RUNNING,
            JobStatus.COMPLETED,
            JobStatus.QUEUED,
            JobStatus.FAILED,
            JobStatus.PAUSED,
            JobStatus.CANCELED,
            JobStatus.SKIPPED,
        }
    ),
    # resume; cancel
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELED}),
    # terminal: resubmit only
    JobStatus.COMPLETED: frozenset({JobStatus.QUEUED}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED}),
    JobStatus.CANCELED: frozenset({JobStatus.QUEUED}),
    JobStatus.SKIPPED: frozenset({JobStatus.QUEUED}),
}


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    """Whether ``current -> target`` is an edge of the state machine."""
    return target in ALLOWED[current]


def check_transition(current: JobStatus, target: JobStatus, job_id: int | None = None) -> None:
    """Raise ``InvalidTransition`` unless ``current -> target`` is allowed."""
    if not can_transition(current, target):
        raise InvalidTransition(job_id, current.value, target.value)


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Every status from which ``target`` can be reached (used in UPDATE … WHERE status IN …)."""
    return frozenset(s for s, targets in ALLOWED.items() if target in targets)


def retry_delay(attempt: int, base_s: float, backoff: float) -> float:
    """Seconds to wait before attempt ``attempt + 1``: ``base × backoff^(attempt-1)``."""
    return float(base_s) * (float(backoff) ** max(attempt - 1, 0))


@dataclass(frozen=True, slots=True)
class Progress:
    """Progress of the current stage, as a worker reports it."""

    percent: float
    fps: float | None = None
    avg_fps: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one row of ``transcode_jobs``."""

    id: int
    kind: JobKind
    status: JobStatus
    stage: Stage | None
    priority: int
    media_file_id: int | None
    track_id: int | None
    input_path: str
    output_path: str | None
    preset: str | None
    depends_on: int | None
    attempts: int
    max_retries: int
    next_attempt_at: float | None
    worker_id: str | None
    last_heartbeat: float | None
    progress_percent: float
    fps: float | None
    avg_fps: float | None
    eta_s: float | None
    temp_path: str | None
    error_message: str | None
    pause_reason: PauseReason | None
    resume_attempt: bool
    source_size: int | None
    source_mtime_ns: int | None
    output_size: int | None
    duration_s: float | None
    encode_time_s: float | None
    child_pid: int | None
    child_start_ticks: int | None
    control_request: str | None
    dismissed: bool
    created_at: float
    updated_at: float
    started_at: float | None
    completed_at: float | None

    @property
    def name(self) -> str:
        """The file name of the job's input."""
        return self.input_path.rsplit("/", 1)[-1]

    @property
    def is_live(self) -> bool:
        """Whether the job still has work to do."""
        return self.status in LIVE


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a job: when it ran, on which worker, and how it ended."""

    job_id: int
    attempt: int
    worker_id: str
    started_at: float
    ended_at: float | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts for the Queue tab's stats line."""

    need_transcoding: int
    queued: int
    running: int
    paused: int
    failed: int
    completed: int
    saved_bytes: int


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What one recovery pass changed."""

    orphaned_requeued: int = 0
    orphaned_failed: int = 0
    paused_resumed: int = 0
    stalled_requeued: int = 0
    killed_processes: int = 0
    temp_files_removed: int = 0
    temp_bytes_removed: int = 0
    replaces_finished: int = 0
    replaces_rolled_back: int = 0
    # Added by the lifecycle work (services/recovery.py):
    orphaned_canceled: int = 0
    stalled_failed: int = 0
    stale_locks_removed: int = 0
    workers_pruned: int = 0
    scan_interrupted: bool = False
    notes: tuple[str, ...] = ()
    """Warnings a human should read (e.g. why temp cleanup was refused)."""

    @property
    def changed(self) -> bool:
        """Whether the pass changed anything at all (running recovery again changes nothing)."""
        return any(
            (
                self.orphaned_requeued,
                self.orphaned_failed,
                self.orphaned_canceled,
                self.paused_resumed,
                self.stalled_requeued,
                self.stalled_failed,
                self.killed_processes,
                self.temp_files_removed,
                self.replaces_finished,
                self.replaces_rolled_back,
            )
        )
