"""Plain event dataclasses the pool and services emit through an ``EventSink``."""

from __future__ import annotations

from dataclasses import dataclass

from amphigory_tui.domain.jobs import JobStatus, Stage


@dataclass(frozen=True, slots=True)
class JobProgress:
    """A running job's progress in its current stage."""

    job_id: int
    worker_id: str
    stage: Stage
    percent: float
    fps: float | None = None
    avg_fps: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True, slots=True)
class JobChanged:
    """A job changed status (claimed, completed, failed, paused…)."""

    job_id: int
    status: JobStatus
    stage: Stage | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """A worker loop is alive, and what it is doing."""

    worker_id: str
    state: str
    job_id: int | None = None


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A human-readable line for the Log tab and the processing log."""

    level: str
    message: str
    job_id: int | None = None
    created_at: float | None = None


@dataclass(frozen=True, slots=True)
class ScanProgress:
    """Where a library scan is."""

    seen: int
    total_estimate: int
    probed: int
    added: int
    updated: int
    unchanged: int
    missing: int
    errors: int
    files_per_s: float
    eta_s: float | None
    current_dir: str
    last_error: str | None
    done: bool = False
    canceled: bool = False
    resumed: bool = False


Event = JobProgress | JobChanged | WorkerBeat | LogRecord | ScanProgress
"""Anything an ``EventSink`` receives."""
