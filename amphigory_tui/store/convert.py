"""Rows to domain objects: nothing ORM-shaped leaves ``store/``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from amphigory_tui.domain.jobs import Attempt, Job, JobKind, JobStatus, PauseReason, Stage
from amphigory_tui.domain.media import AudioStream, MediaFile, ProbeResult, SubtitleStream
from amphigory_tui.domain.workers import WorkerInfo


def job_from_row(r: Mapping[Any, Any]) -> Job:
    """A ``transcode_jobs`` row (as a mapping) to a ``Job``."""
    return Job(
        id=r["id"],
        kind=JobKind(r["kind"]),
        status=JobStatus(r["status"]),
        stage=Stage(r["stage"]) if r["stage"] else None,
        priority=r["priority"],
        media_file_id=r["media_file_id"],
        track_id=r["track_id"],
        input_path=r["input_path"],
        output_path=r["output_path"],
        preset=r["preset"],
        depends_on=r["depends_on"],
        attempts=r["attempts"],
        max_retries=r["max_retries"],
        next_attempt_at=r["next_attempt_at"],
        worker_id=r["worker_id"],
        last_heartbeat=r["last_heartbeat"],
        progress_percent=r["progress_percent"] or 0.0,
        fps=r["fps"],
        avg_fps=r["avg_fps"],
        eta_s=r["eta_s"],
        temp_path=r["temp_path"],
        error_message=r["error_message"],
        pause_reason=PauseReason(r["pause_reason"]) if r["pause_reason"] else None,
        resume_attempt=bool(r["resume_attempt"]),
        source_size=r["source_size"],
        source_mtime_ns=r["source_mtime_ns"],
        output_size=r["output_size"],
        duration_s=r["duration_s"],
        encode_time_s=r["encode_time_s"],
        child_pid=r["child_pid"],
        child_start_ticks=r["child_start_ticks"],
        control_request=r["control_request"],
        dismissed=bool(r["dismissed"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        started_at=r["started_at"],
        completed_at=r["completed_at"],
    )


def attempt_from_row(r: Mapping[Any, Any]) -> Attempt:
    """A ``job_attempts`` row to an ``Attempt``."""
    return Attempt(
        job_id=r["job_id"],
        attempt=r["attempt"],
        worker_id=r["worker_id"],
        started_at=r["started_at"],
        ended_at=r["ended_at"],
        outcome=r["outcome"],
        error=r["error"],
    )


def worker_from_row(r: Mapping[Any, Any]) -> WorkerInfo:
    """A ``workers`` row to a ``WorkerInfo``."""
    return WorkerInfo(
        id=r["id"],
        host=r["host"],
        pid=r["pid"],
        state=r["state"],
        started_at=r["started_at"],
        last_seen=r["last_seen"],
        current_job_id=r["current_job_id"],
        heartbeat_interval_s=r["heartbeat_interval_s"],
    )


def streams_to_json(streams: tuple[AudioStream, ...] | tuple[SubtitleStream, ...]) -> str:
    """Audio or subtitle streams as a JSON array (stored once, not double-encoded as the Go tool did)."""
    return json.dumps([asdict(s) for s in streams], ensure_ascii=False)


def like_contains(needle: str) -> str:
    """A LIKE pattern (escape character ``\\``) matching ``needle`` literally anywhere."""
    return "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _audio_from_json(text: str | None) -> tuple[AudioStream, ...]:
    return tuple(AudioStream(**item) for item in json.loads(text or "[]"))


def _subtitles_from_json(text: str | None) -> tuple[SubtitleStream, ...]:
    return tuple(SubtitleStream(**item) for item in json.loads(text or "[]"))


def probe_columns(probe: ProbeResult) -> dict[str, Any]:
    """The ``media_files`` columns that hold a probe result."""
    return {
        "container": probe.container,
        "duration_s": probe.duration_s,
        "bitrate_kbps": probe.bitrate_kbps,
        "video_codec": probe.video_codec,
        "width": probe.width,
        "height": probe.height,
        "fps": probe.fps,
        "pix_fmt": probe.pix_fmt,
        "bit_depth": probe.bit_depth,
        "audio_json": streams_to_json(probe.audio),
        "subtitles_json": streams_to_json(probe.subtitles),
        "probe_error": probe.error,
    }


def probe_from_row(r: Mapping[Any, Any]) -> ProbeResult:
    """The probe result stored in a ``media_files`` row."""
    return ProbeResult(
        container=r["container"],
        duration_s=r["duration_s"],
        bitrate_kbps=r["bitrate_kbps"],
        video_codec=r["video_codec"],
        width=r["width"],
        height=r["height"],
        fps=r["fps"],
        pix_fmt=r["pix_fmt"],
        bit_depth=r["bit_depth"],
        audio=_audio_from_json(r["audio_json"]),
        subtitles=_subtitles_from_json(r["subtitles_json"]),
        error=r["probe_error"],
    )


def media_from_row(r: Mapping[Any, Any]) -> MediaFile:
    """A ``media_files`` row to a ``MediaFile``."""
    return MediaFile(
        id=r["id"],
        path=r["path"],
        root=r["root"],
        size_bytes=r["size_bytes"],
        mtime_ns=r["mtime_ns"],
        probe=probe_from_row(r),
        should_transcode=bool(r["should_transcode"]),
        reason=r["reason"],
        priority=r["priority"],
        est_savings_pct=r["est_savings_pct"],
        missing=bool(r["missing"]),
        probed_at=r["probed_at"],
        updated_at=r["updated_at"],
    )
