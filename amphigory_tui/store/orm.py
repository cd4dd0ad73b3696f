"""SQLAlchemy 2 typed models. Nothing ORM-shaped leaves ``store/``: ``convert.py`` turns rows into domain objects.

Timestamps are float seconds since the epoch (UTC): cheap to compare and to index on both SQLite and PostgreSQL,
and the injected ``Clock`` produces them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LIVE_STATUSES_SQL = "('queued', 'running', 'paused')"


class Base(DeclarativeBase):
    """Declarative base with a naming convention so alembic batch migrations work on SQLite."""

    metadata = MetaData(naming_convention=NAMING)


class MediaFileRow(Base):
    """``media_files``: one row per file found under a library root."""

    __tablename__ = "media_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    root: Mapped[str] = mapped_column(Text, default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    mtime_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    container: Mapped[str | None] = mapped_column(String(64))
    duration_s: Mapped[float | None] = mapped_column(Float)
    bitrate_kbps: Mapped[int | None] = mapped_column(Integer)
    video_codec: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    fps: Mapped[float | None] = mapped_column(Float)
    pix_fmt: Mapped[str | None] = mapped_column(String(64))
    bit_depth: Mapped[int | None] = mapped_column(Integer)
    audio_json: Mapped[str] = mapped_column(Text, default="[]")
    subtitles_json: Mapped[str] = mapped_column(Text, default="[]")
    probe_error: Mapped[str | None] = mapped_column(Text)
    probed_at: Mapped[float | None] = mapped_column(Float)
    should_transcode: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    est_savings_pct: Mapped[int | None] = mapped_column(Integer)
    missing: Mapped[bool] = mapped_column(Boolean, default=False)
    discovered_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_media_files_candidates", "should_transcode", "priority", "size_bytes"),
        Index("ix_media_files_updated_at", "updated_at"),
    )


class JobRow(Base):
    """``transcode_jobs``: every rip, transcode and insert job."""

    __tablename__ = "transcode_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="transcode")
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=50)
    media_file_id: Mapped[int | None] = mapped_column(ForeignKey("media_files.id", ondelete="SET NULL"))
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="SET NULL"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"))
    input_path: Mapped[str] = mapped_column(Text, default="")
    output_path: Mapped[str | None] = mapped_column(Text)
    preset: Mapped[str | None] = mapped_column(Text)
    depends_on: Mapped[int | None] = mapped_column(ForeignKey("transcode_jobs.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    last_heartbeat: Mapped[float | None] = mapped_column(Float)
    progress_percent: Mapped[float] = mapped_column(Float, default=0.0)
    fps: Mapped[float | None] = mapped_column(Float)
    avg_fps: Mapped[float | None] = mapped_column(Float)
    eta_s: Mapped[float | None] = mapped_column(Float)
    temp_path: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    pause_reason: Mapped[str | None] = mapped_column(String(16))
    # A job paused by a shutdown resumes in the same attempt: the next claim does not count a new one.
    resume_attempt: Mapped[bool] = mapped_column(Boolean, default=False)
    source_size: Mapped[int | None] = mapped_column(BigInteger)
    source_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    output_size: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None] = mapped_column(Float)
    encode_time_s: Mapped[float | None] = mapped_column(Float)
    child_pid: Mapped[int | None] = mapped_column(Integer)
    child_start_ticks: Mapped[int | None] = mapped_column(BigInteger)
    # A pause or cancel asked for by another process; the owning worker carries it out (it owns the child).
    control_request: Mapped[str | None] = mapped_column(String(16))
    dismissed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # The claim query: queued jobs by priority, then age.
        Index("ix_transcode_jobs_claim", "status", "priority", "created_at"),
        # "Changed since" polling by the TUI.
        Index("ix_transcode_jobs_updated_at", "updated_at"),
        Index("ix_transcode_jobs_depends_on", "depends_on"),
        # At most one live transcode job per media file, enforced by the database itself.
        Index(
            "uq_transcode_jobs_live_media",
            "media_file_id",
            unique=True,
            sqlite_where=text(f"kind = 'transcode' AND status IN {LIVE_STATUSES_SQL}"),
            postgresql_where=text(f"kind = 'transcode' AND status IN {LIVE_STATUSES_SQL}"),
        ),
        Index("ix_transcode_jobs_media_file_id", "media_file_id"),
    )


class JobAttemptRow(Base):
    """``job_attempts``: one row per attempt, so the detail screen can show every try and its error."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # No index of its own: the unique (job_id, attempt) index starts with it.
    job_id: Mapped[int] = mapped_column(ForeignKey("transcode_jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("job_id", "attempt"),)


class ProcessingLogRow(Base):
    """``processing_log``: what happened, per job or global, for the Log tab and post-mortems."""

    __tablename__ = "processing_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("transcode_jobs.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(16), default="info")
    event_type: Mapped[str] = mapped_column(String(32), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    details_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_processing_log_job_id_id", "job_id", "id"),)


class SystemStateRow(Base):
    """``system_state``: small key/value facts (scan checkpoint, last scan time)."""

    __tablename__ = "system_state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[float] = mapped_column(Float)


class WorkerRow(Base):
    """``workers``: one row per claim loop of every amphigory process on this database."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="idle")
    started_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    current_job_id: Mapped[int | None] = mapped_column(Integer)
    # How often this worker beats (its own [workers] setting); NULL on rows written before version 0003.
    heartbeat_interval_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_workers_last_seen", "last_seen"),)


class BatchRow(Base):
    """``batches``: a group of jobs submitted together (filled by a later issue)."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class DiscRow(Base):
    """``discs``: an optical disc seen in a drive, keyed by its fingerprint (filled by a later issue)."""

    __tablename__ = "discs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(128), unique=True)
    label: Mapped[str] = mapped_column(Text, default="")
    disc_type: Mapped[str] = mapped_column(String(16), default="")
    title: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="new")
    info_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class TrackRow(Base):
    """``tracks``: a title of a disc and what the user chose to do with it (filled by a later issue)."""

    __tablename__ = "tracks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    disc_id: Mapped[int] = mapped_column(ForeignKey("discs.id", ondelete="CASCADE"), index=True)
    title_index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(Text, default="")
    duration_s: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    chapters: Mapped[int | None] = mapped_column(Integer)
    classification: Mapped[str | None] = mapped_column(String(32))
    selected: Mapped[bool] = mapped_column(Boolean, default=False)
    output_name: Mapped[str | None] = mapped_column(Text)
    info_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
