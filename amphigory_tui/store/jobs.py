"""JobStore: every write of a job's status, each one a compare-and-set on the expected status and owner.

A worker that lost its lease (its job was requeued by a stall check while it was frozen, say) changes nothing:
each owner-side update has ``WHERE status = 'running' AND worker_id = :worker`` and a refused update raises
``StaleLease``. Transitions are checked against ``domain.jobs.ALLOWED`` before any SQL runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Float,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from amphigory_tui.domain.clock import Clock
from amphigory_tui.domain.errors import InvalidTransition, JobNotFound, StaleLease, UsageError
from amphigory_tui.domain.jobs import (
    LIVE,
    TERMINAL,
    Attempt,
    Job,
    JobKind,
    JobStatus,
    PauseReason,
    Progress,
    QueueStats,
    Stage,
    check_transition,
    retry_delay,
    sources_of,
)
from amphigory_tui.store.convert import attempt_from_row, job_from_row, like_contains
from amphigory_tui.store.engine import Engines, WriterBusy
from amphigory_tui.store.orm import JobAttemptRow, JobRow, MediaFileRow

J = cast(Table, JobRow.__table__)
A = cast(Table, JobAttemptRow.__table__)
M = cast(Table, MediaFileRow.__table__)

RUNNING = JobStatus.RUNNING.value
T = TypeVar("T")
_LIVE_SQL = "('queued', 'running', 'paused')"
# A failed, skipped or canceled job blocks re-queueing its file until the user resubmits or dismisses it, or the
# file itself changes (a new size or mtime is new content that deserves a fresh decision).
_BLOCKING_SQL = "('failed', 'skipped', 'canceled')"

# Whether media file ``m`` already has a job that keeps it out of the queue. A completed job blocks its unchanged
# file even once dismissed: the file was transcoded (with original_policy = keep it is still there, unchanged), and
# only an explicit resubmit should run it again; otherwise "queue all" would transcode it over and over.
_HAS_JOB_SQL = f"""EXISTS (
    SELECT 1 FROM transcode_jobs j
    WHERE j.media_file_id = m.id AND j.kind = 'transcode'
      AND (j.status IN {_LIVE_SQL}
           OR (j.source_size = m.size_bytes AND j.source_mtime_ns = m.mtime_ns
               AND (j.status = 'completed' OR (j.status IN {_BLOCKING_SQL} AND NOT j.dismissed)))))"""

_CANDIDATE_SQL = f"m.should_transcode AND NOT m.missing AND m.probe_error IS NULL AND NOT {_HAS_JOB_SQL}"

_QUEUE_SQL = f"""
INSERT INTO transcode_jobs (
    kind, status, priority, media_file_id, input_path, attempts, max_retries, progress_percent,
    resume_attempt, dismissed, source_size, source_mtime_ns, created_at, updated_at)
SELECT 'transcode', 'queued', m.priority, m.id, m.path, 0, :max_retries, 0,
       FALSE, FALSE, m.size_bytes, m.mtime_ns, :now, :now
FROM media_files m
WHERE {_CANDIDATE_SQL}
ORDER BY m.priority DESC, m.size_bytes DESC, m.id
{{limit}}
ON CONFLICT (media_file_id) WHERE kind = 'transcode' AND status IN {_LIVE_SQL} DO NOTHING
"""

_CLAIM_PICK = """
SELECT j.id FROM transcode_jobs j
WHERE j.status = 'queued'
  AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= :now)
  AND (j.depends_on IS NULL OR EXISTS (
        SELECT 1 FROM transcode_jobs d WHERE d.id = j.depends_on AND d.status = 'completed'))
ORDER BY j.priority DESC, j.created_at, j.id
LIMIT 1
"""

_CLAIMABLE = """j.status = 'queued'
  AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= :now)
  AND (j.depends_on IS NULL OR EXISTS (
        SELECT 1 FROM transcode_jobs d WHERE d.id = j.depends_on AND d.status = 'completed'))"""

# The same pick for SQLite, in two index-only steps: "ORDER BY priority DESC, created_at" runs against the
# ascending index (status, priority, created_at), so SQLite sorts every queued row of the top priority on each
# claim (0.8 ms with 5,000 queued); the highest claimable priority first, then the oldest job of it, walk the
# index instead (5 µs). SQLite has one writer at a time, so the two steps see the same rows. (PostgreSQL keeps
# the one-step form: with SKIP LOCKED, a priority picked first could hold only rows other workers lock.)
_CLAIM_PICK_SQLITE = f"""
SELECT j.id FROM transcode_jobs j
WHERE {_CLAIMABLE}
  AND j.priority = (SELECT j.priority FROM transcode_jobs j WHERE {_CLAIMABLE} ORDER BY j.priority DESC LIMIT 1)
ORDER BY j.created_at, j.id
LIMIT 1
"""

_CLAIM_SQL = """
UPDATE transcode_jobs SET
    status = 'running', worker_id = :worker, stage = NULL,
    attempts = attempts + CASE WHEN resume_attempt THEN 0 ELSE 1 END,
    resume_attempt = FALSE, pause_reason = NULL, control_request = NULL, next_attempt_at = NULL,
    started_at = :now, last_heartbeat = :now, updated_at = :now,
    progress_percent = 0, fps = NULL, avg_fps = NULL, eta_s = NULL, child_pid = NULL, child_start_ticks = NULL
WHERE id = ({pick}) AND status = 'queued'
RETURNING *
"""

_ATTEMPT_UPSERT_SQL = """
INSERT INTO job_attempts (job_id, attempt, worker_id, started_at) VALUES (:job, :attempt, :worker, :now)
ON CONFLICT (job_id, attempt) DO UPDATE SET worker_id = excluded.worker_id, ended_at = NULL, outcome = NULL
"""
_ATTEMPT_UPSERT = text(_ATTEMPT_UPSERT_SQL)

# How strong a user's request to a running job's owner is: a weaker one never replaces a stronger one.
_REQUEST_RANK = {"pause": 1, "cancel": 2, "kill": 3}

# heartbeat_many's statements, built once (it runs every second while jobs run).
_BEAT_JOB = text(
    "UPDATE transcode_jobs SET last_heartbeat = :now, updated_at = :now "
    "WHERE id = :id AND status = 'running' AND worker_id = :worker"
)
_BEAT_JOB_PROGRESS = text(
    "UPDATE transcode_jobs SET last_heartbeat = :now, updated_at = :now, progress_percent = :pct, fps = :fps, "
    "avg_fps = :avg, eta_s = :eta WHERE id = :id AND status = 'running' AND worker_id = :worker"
).bindparams(
    bindparam("pct", type_=Float()),
    bindparam("fps", type_=Float()),
    bindparam("avg", type_=Float()),
    bindparam("eta", type_=Float()),
)
_BEAT_WORKER = text(
    "UPDATE workers SET state = :state, current_job_id = :job, last_seen = :now WHERE id = :id"
).bindparams(bindparam("job", type_=Integer()))

# complete_and_claim's statements (the same values as ``complete``), built once: the pool's per-job hot path.
_COMPLETE_SQL = """
UPDATE transcode_jobs SET
    status = 'completed', completed_at = :now, updated_at = :now, progress_percent = 100.0, eta_s = 0.0,
    error_message = NULL, worker_id = NULL, child_pid = NULL, child_start_ticks = NULL, temp_path = NULL,
    control_request = NULL, output_size = :output_size, duration_s = :duration_s, encode_time_s = :encode_time_s,
    avg_fps = :avg_fps, output_path = COALESCE(:output_path, output_path)
WHERE id = :id AND status = 'running' AND worker_id = :worker
"""
_COMPLETE_FAST = text(_COMPLETE_SQL).bindparams(
    bindparam("output_path", type_=Text()),
    bindparam("output_size", type_=BigInteger()),
    bindparam("duration_s", type_=Float()),
    bindparam("encode_time_s", type_=Float()),
    bindparam("avg_fps", type_=Float()),
)
_COMPLETE_RETURNING_SQL = _COMPLETE_SQL + "RETURNING *\n"
_COMPLETE_RETURNING = text(_COMPLETE_RETURNING_SQL).bindparams(
    bindparam("output_path", type_=Text()),
    bindparam("output_size", type_=BigInteger()),
    bindparam("duration_s", type_=Float()),
    bindparam("encode_time_s", type_=Float()),
    bindparam("avg_fps", type_=Float()),
)
_END_ATTEMPT_COMPLETED_SQL = """
UPDATE job_attempts SET ended_at = :now, outcome = 'completed', error = NULL
WHERE job_id = :id AND ended_at IS NULL AND attempt = (SELECT attempts FROM transcode_jobs WHERE id = :id)
"""
_END_ATTEMPT_COMPLETED = text(_END_ATTEMPT_COMPLETED_SQL)

# Fields a running job's owner may set without changing its status.
_RUNNING_FIELDS = frozenset(
    {
        "stage",
        "temp_path",
        "output_path",
        "preset",
        "child_pid",
        "child_start_ticks",
        "source_size",
        "source_mtime_ns",
        "duration_s",
        "progress_percent",
        "fps",
        "avg_fps",
        "eta_s",
    }
)


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished job for ``complete_and_claim_many``: its facts, and whether its worker wants the next job."""

    job_id: int
    worker_id: str
    claim_next: bool = True
    output_path: str | None = None
    output_size: int | None = None
    duration_s: float | None = None
    encode_time_s: float | None = None
    avg_fps: float | None = None


@dataclass(frozen=True)
class JobFilter:
    """What the queue table shows: statuses, a name search, a path substring, dismissed rows or not."""

    statuses: frozenset[JobStatus] | None = None
    search: str = ""
    path_contains: tuple[str, ...] = ()
    include_dismissed: bool = False


class JobStore:
    """Named, atomic operations on ``transcode_jobs``."""

    def __init__(
        self,
        engines: Engines,
        clock: Clock,
        *,
        max_retries: int = 3,
        retry_delay_s: float = 30.0,
        retry_backoff: float = 4.0,
    ) -> None:
        self._db = engines
        self._clock = clock
        self.max_retries = max_retries
        self.retry_delay_s = retry_delay_s
        self.retry_backoff = retry_backoff
        pick = _CLAIM_PICK_SQLITE if engines.is_sqlite else _CLAIM_PICK + " FOR UPDATE OF j SKIP LOCKED"
        self._claim_sql_raw = _CLAIM_SQL.format(pick=pick)
        self._claim_sql = text(self._claim_sql_raw)

    # ------------------------------------------------------------------ creating
    def create(
        self,
        input_path: str,
        *,
        kind: JobKind = JobKind.TRANSCODE,
        media_file_id: int | None = None,
        track_id: int | None = None,
        priority: int = 50,
        output_path: str | None = None,
        preset: str | None = None,
        depends_on: int | None = None,
        source_size: int | None = None,
        source_mtime_ns: int | None = None,
    ) -> Job:
        """Insert one queued job."""
        _check_priority(priority)
        now = self._clock.now()
        values = {
            "kind": kind.value,
            "status": JobStatus.QUEUED.value,
            "priority": priority,
            "media_file_id": media_file_id,
            "track_id": track_id,
            "input_path": input_path,
            "output_path": output_path,
            "preset": preset,
            "depends_on": depends_on,
            "attempts": 0,
            "max_retries": self.max_retries,
            "progress_percent": 0.0,
            "resume_attempt": False,
            "dismissed": False,
            "source_size": source_size,
            "source_mtime_ns": source_mtime_ns,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self._db.write() as conn:
                row = conn.execute(J.insert().values(values).returning(*J.c)).mappings().one()
        except IntegrityError:
            raise UsageError(f"media file {media_file_id} already has a live job") from None
        return job_from_row(row)

    def queue_for_transcoding(self, limit: int | None = None) -> int:
        """Create one job per media file that needs transcoding and has none; return how many (one statement)."""
        if limit is not None and limit < 0:
            raise UsageError(f"--limit must be ≥ 0, not {limit}")
        sql = text(_QUEUE_SQL.format(limit="LIMIT :limit" if limit is not None else ""))
        params: dict[str, Any] = {"now": self._clock.now(), "max_retries": self.max_retries}
        if limit is not None:
            params["limit"] = limit
        with self._db.write() as conn:
            return int(conn.execute(sql, params).rowcount or 0)

    # ------------------------------------------------------------------ the owner's side
    def claim(self, worker_id: str, *, wait: bool = True) -> Job | None:
        """Atomically take the best claimable job: highest priority, then oldest; counts the attempt.

        ``wait=False`` raises ``WriterBusy`` instead of waiting for the writer (always, on PostgreSQL).
        """
        if self._db.is_sqlite:
            # Pre-built SQL and the transaction on the sqlite3 connection: SQLAlchemy's statement handling cost as
            # much as the claim itself (bench/store.py).
            with self._db.raw_write(wait=wait) as raw:
                return self._claim_raw(raw, worker_id, self._clock.now())
        if not wait:
            raise WriterBusy()
        with self._db.write() as conn:
            return self._claim_in(conn, worker_id, self._clock.now())

    def _claim_in(self, conn: Connection, worker_id: str, now: float) -> Job | None:
        row = conn.execute(self._claim_sql, {"worker": worker_id, "now": now}).mappings().first()
        if row is None:
            return None
        job = job_from_row(row)
        # A resumed pause continues its attempt: the upsert reopens that attempt's row instead of adding one.
        conn.execute(_ATTEMPT_UPSERT, {"job": job.id, "attempt": job.attempts, "worker": worker_id, "now": now})
        return job

    def heartbeat(
        self, job_id: int, worker_id: str, progress: Progress | None = None, *, stage: Stage | None = None
    ) -> bool:
        """Record that the owner is alive (and its progress); False when it no longer owns the job."""
        values: dict[str, Any] = {"last_heartbeat": self._clock.now(), "updated_at": self._clock.now()}
        if progress is not None:
            values.update(
                progress_percent=progress.percent,
                fps=progress.fps,
                avg_fps=progress.avg_fps,
                eta_s=progress.eta_s,
            )
        if stage is not None:
            values["stage"] = stage.value
        with self._db.write() as conn:
            return bool(conn.execute(_owned(update(J), job_id, worker_id).values(values)).rowcount)

    def update_running(self, job_id: int, worker_id: str, **fields: Any) -> None:
        """Set non-status fields of a running job (stage, temp path, child pid…); refuses a stale owner."""
        unknown = set(fields) - _RUNNING_FIELDS
        if unknown:
            raise ValueError(f"not a running-job field: {', '.join(sorted(unknown))}")
        values = {k: (v.value if isinstance(v, Stage) else v) for k, v in fields.items()}
        values["updated_at"] = self._clock.now()
        if "stage" in values:
            values.update(progress_percent=values.get("progress_percent", 0.0), fps=None, eta_s=None)
            values["last_heartbeat"] = values["updated_at"]
        with self._db.write() as conn:
            self._cas(conn, job_id, worker_id, values)

    def complete(
        self,
        job_id: int,
        worker_id: str,
        *,
        output_path: str | None = None,
        output_size: int | None = None,
        duration_s: float | None = None,
        encode_time_s: float | None = None,
        avg_fps: float | None = None,
    ) -> Job:
        """``running -> completed`` with the result's facts."""
        check_transition(JobStatus.RUNNING, JobStatus.COMPLETED, job_id)
        now = self._clock.now()
        item = Completion(job_id, worker_id, False, output_path, output_size, duration_s, encode_time_s, avg_fps)
        params = _completion_params(item, now)
        # The statements complete_and_claim uses, built once: building them per call (a 37-column RETURNING, the
        # values, the attempt subquery) cost three times the commit's fsync.
        row: Mapping[Any, Any] | None
        with self._db.write() as conn:
            if self._db.is_sqlite:
                raw: Any = conn.connection.driver_connection
                row = _raw_row(raw, _COMPLETE_RETURNING_SQL, params)
                if row is not None:
                    raw.execute(_END_ATTEMPT_COMPLETED_SQL, {"id": job_id, "now": now})
            else:
                row = conn.execute(_COMPLETE_RETURNING, params).mappings().first()
                if row is not None:
                    conn.execute(_END_ATTEMPT_COMPLETED, {"id": job_id, "now": now})
            if row is None:
                raise self._refused(conn, job_id, worker_id, JobStatus.COMPLETED.value)
        return job_from_row(row)

    def fail(
        self, job_id: int, worker_id: str, error: str, *, permanent: bool = False, stalled_before: float | None = None
    ) -> Job:
        """A failed attempt: retry after ``retry_delay × backoff^(n-1)`` until max_retries, then ``failed``.

        ``stalled_before`` (the stall check): refused too unless the owner is still silent, its last heartbeat
        older than that time; an owner that heartbeats first keeps its job.
        """
        now = self._clock.now()
        with self._db.write() as conn:
            query = select(J.c.attempts, J.c.max_retries).where(
                J.c.id == job_id, J.c.status == RUNNING, J.c.worker_id == worker_id
            )
            if stalled_before is not None:
                # FOR UPDATE (PostgreSQL): a heartbeat cannot land between this check and the update below.
                silent = or_(J.c.last_heartbeat.is_(None), J.c.last_heartbeat < stalled_before)
                query = query.where(silent).with_for_update()
            row = conn.execute(query).first()
            if row is None:
                raise self._refused(conn, job_id, worker_id, "fail")
            attempts, max_retries = row
            final = permanent or attempts >= max_retries
            target = JobStatus.FAILED if final else JobStatus.QUEUED
            check_transition(JobStatus.RUNNING, target, job_id)
            values: dict[str, Any] = {
                "status": target.value,
                "error_message": error,
                "worker_id": None,
                "child_pid": None,
                "child_start_ticks": None,
                "control_request": None,
                "updated_at": now,
                "eta_s": None,
                "fps": None,
            }
            if final:
                values["completed_at"] = now
            else:
                values["next_attempt_at"] = now + retry_delay(attempts, self.retry_delay_s, self.retry_backoff)
            job = self._cas(conn, job_id, worker_id, values)
            self._end_attempt(conn, job_id, "failed" if final else "retry", error, now)
        return job

    def skip(self, job_id: int, worker_id: str, reason: str) -> Job:
        """``running -> skipped``: nothing to gain (e.g. the output was larger); the original is untouched."""
        return self._release(
            job_id, worker_id, JobStatus.SKIPPED, "skipped", reason, error_message=reason, completed_at=True
        )

    def pause_running(self, job_id: int, worker_id: str, reason: PauseReason = PauseReason.SHUTDOWN) -> Job:
        """``running -> paused`` by its owner: progress kept, the attempt not used (the resume continues it)."""
        return self._release(
            job_id,
            worker_id,
            JobStatus.PAUSED,
            "paused",
            None,
            pause_reason=reason.value,
            resume_attempt=True,
            temp_path=None,
            eta_s=None,
            fps=None,
        )

    def cancel_running(self, job_id: int, worker_id: str, reason: str = "canceled by user") -> Job:
        """``running -> canceled`` by its owner, after it killed the child and removed the temp files.

        The reason given with a pending cancel/kill request (``cancel(reason=…)``, ``cancel_for_media``) wins over
        ``reason``: the owner only saw "cancel", the job must say why ("source file changed on disk").
        """
        requested = case(
            (J.c.control_request.in_(["cancel", "kill"]), func.coalesce(J.c.error_message, reason)), else_=reason
        )
        return self._release(
            job_id,
            worker_id,
            JobStatus.CANCELED,
            "canceled",
            None,
            error_message=requested,
            temp_path=None,
            completed_at=True,
        )

    def _release(
        self,
        job_id: int,
        worker_id: str,
        target: JobStatus,
        outcome: str,
        error: str | None,
        *,
        completed_at: bool = False,
        **extra: Any,
    ) -> Job:
        """The owner gives a running job up (to ``target``): its lease and child are cleared, its attempt closed."""
        check_transition(JobStatus.RUNNING, target, job_id)
        now = self._clock.now()
        values: dict[str, Any] = {
            "status": target.value,
            "worker_id": None,
            "child_pid": None,
            "child_start_ticks": None,
            "control_request": None,
            "updated_at": now,
            **extra,
        }
        if completed_at:
            values["completed_at"] = now
        with self._db.write() as conn:
            job = self._cas(conn, job_id, worker_id, values)
            self._end_attempt(conn, job_id, outcome, job.error_message if error is None else error, now)
        return job

    # ------------------------------------------------------------------ the worker pool's batched calls
    def heartbeat_many(
        self,
        beats: Sequence[tuple[int, str, Progress | None]],
        workers: Sequence[tuple[str, str, int | None]] = (),
    ) -> set[int]:
        """One transaction per beat round: ``(job, owner, progress)`` heartbeats plus ``(worker, state, job)``
        ``last_seen`` updates; returns the ids of jobs the given owner no longer holds (its lease is lost)."""
        now = self._clock.now()
        lost: set[int] = set()
        with self._db.write() as conn:
            for job_id, worker_id, progress in beats:
                params: dict[str, Any] = {"id": job_id, "worker": worker_id, "now": now}
                if progress is None:
                    result = conn.execute(_BEAT_JOB, params)
                else:
                    params.update(pct=progress.percent, fps=progress.fps, avg=progress.avg_fps, eta=progress.eta_s)
                    result = conn.execute(_BEAT_JOB_PROGRESS, params)
                if not result.rowcount:
                    lost.add(job_id)
            for worker_id, state, current in workers:
                conn.execute(_BEAT_WORKER, {"id": worker_id, "state": state, "job": current, "now": now})
        return lost

    def complete_and_claim(
        self,
        job_id: int,
        worker_id: str,
        *,
        claim_next: bool = True,
        output_path: str | None = None,
        output_size: int | None = None,
        duration_s: float | None = None,
        encode_time_s: float | None = None,
        avg_fps: float | None = None,
    ) -> Job | None:
        """``complete`` and, in the same transaction, the worker's next ``claim``: one commit per job, not two.

        Returns the next job (None when nothing is claimable or ``claim_next`` is False). The same values as
        ``complete`` are written, with pre-built statements: this is the pool's per-job hot path.
        """
        item = Completion(job_id, worker_id, claim_next, output_path, output_size, duration_s, encode_time_s, avg_fps)
        (result,) = self.complete_and_claim_many([item])
        if isinstance(result, StaleLease):
            raise result
        return result

    def complete_and_claim_many(
        self, items: Sequence[Completion], *, wait: bool = True
    ) -> list[Job | StaleLease | None]:
        """Several workers' ``complete_and_claim`` in ONE transaction (group commit: one fsync for the batch).

        Each result is the worker's next job, None, or the ``StaleLease`` refusing a completion whose worker no
        longer owns the job (that item changes nothing; the others go ahead). ``wait=False`` raises
        ``WriterBusy``, having written nothing, instead of waiting for the writer (always, on PostgreSQL).
        """
        now = self._clock.now()
        if self._db.is_sqlite:
            # The sqlite3 connection itself, statements and transaction: SQLAlchemy's bookkeeping (~25 µs a
            # statement, ~70 µs a transaction) was a third of a no-op job.
            with self._db.raw_write(wait=wait) as raw:
                return [self._complete_one_raw(raw, item, now) for item in items]
        if not wait:
            raise WriterBusy()
        results: list[Job | StaleLease | None] = []
        with self._db.write() as conn:
            for item in items:
                check_transition(JobStatus.RUNNING, JobStatus.COMPLETED, item.job_id)
                if not conn.execute(_COMPLETE_FAST, _completion_params(item, now)).rowcount:
                    try:
                        refused = self._refused(conn, item.job_id, item.worker_id, "completed")
                    except JobNotFound as exc:  # deleted meanwhile: refused all the same, the batch goes on
                        refused = exc
                    results.append(refused if isinstance(refused, StaleLease) else StaleLease(str(refused)))
                    continue
                conn.execute(_END_ATTEMPT_COMPLETED, {"id": item.job_id, "now": now})
                results.append(self._claim_in(conn, item.worker_id, now) if item.claim_next else None)
        return results

    def _complete_one_raw(self, raw: Any, item: Completion, now: float) -> Job | StaleLease | None:
        """One item of ``complete_and_claim_many`` on the sqlite3 connection, inside its transaction."""
        check_transition(JobStatus.RUNNING, JobStatus.COMPLETED, item.job_id)
        if not raw.execute(_COMPLETE_SQL, _completion_params(item, now)).rowcount:
            row = raw.execute("SELECT status, worker_id FROM transcode_jobs WHERE id = ?", (item.job_id,)).fetchone()
            state = f"status {row[0]}, owner {row[1] or 'none'}" if row else "the job no longer exists"
            return StaleLease(
                f"job {item.job_id}: completed refused: worker {item.worker_id} does not own it ({state})"
            )
        raw.execute(_END_ATTEMPT_COMPLETED_SQL, {"id": item.job_id, "now": now})
        return self._claim_raw(raw, item.worker_id, now) if item.claim_next else None

    def _claim_raw(self, raw: Any, worker_id: str, now: float) -> Job | None:
        """``_claim_in`` on the sqlite3 connection itself (the hot path of complete_and_claim_many)."""
        row = _raw_row(raw, self._claim_sql_raw, {"worker": worker_id, "now": now})
        if row is None:
            return None
        job = job_from_row(row)
        raw.execute(_ATTEMPT_UPSERT_SQL, {"job": job.id, "attempt": job.attempts, "worker": worker_id, "now": now})
        return job

    def pending_later(self) -> int:
        """Queued jobs not claimable now that will be without anyone's action: a retry delay not yet over, or
        a dependency still queued or running (``worker --drain`` waits for them)."""
        query = text(
            "SELECT count(*) FROM transcode_jobs j WHERE j.status = 'queued' AND ("
            "(j.next_attempt_at IS NOT NULL AND j.next_attempt_at > :now) OR (j.depends_on IS NOT NULL AND EXISTS ("
            "SELECT 1 FROM transcode_jobs d WHERE d.id = j.depends_on AND d.status IN ('queued', 'running'))))"
        )
        with self._db.read() as conn:
            return int(conn.execute(query, {"now": self._clock.now()}).scalar_one())

    # ------------------------------------------------------------------ the user's side
    def pause(self, job_id: int) -> Job:
        """Pause a job: a queued one is held at once; a running one is asked to pause (its owner does it)."""
        return self._user_action(job_id, JobStatus.PAUSED, request="pause")

    def cancel(self, job_id: int, reason: str = "canceled by user") -> Job:
        """Cancel a job: queued/paused at once; a running one is asked to stop (its owner kills the child)."""
        return self._user_action(job_id, JobStatus.CANCELED, request="cancel", reason=reason)

    def kill(self, job_id: int) -> Job:
        """Force-cancel: like cancel, but the owner skips the grace period."""
        return self._user_action(job_id, JobStatus.CANCELED, request="kill", reason="killed by user")

    def resume(self, job_id: int) -> Job:
        """``paused -> queued`` (a job paused mid-run keeps its attempt)."""
        now = self._clock.now()
        with self._db.write() as conn:
            return self._transition(
                conn, job_id, JobStatus.QUEUED, {JobStatus.PAUSED}, {"pause_reason": None, "updated_at": now}
            )

    def resubmit(self, job_id: int) -> Job:
        """Terminal ``-> queued`` with a fresh budget of attempts (attempts never decrease: the cap grows)."""
        now = self._clock.now()
        try:
            with self._db.write() as conn:
                job = self._get(conn, job_id)
                values = {
                    "max_retries": job.attempts + self.max_retries,
                    "error_message": None,
                    "next_attempt_at": None,
                    "dismissed": False,
                    "progress_percent": 0.0,
                    "stage": None,
                    "completed_at": None,
                    "resume_attempt": False,
                    "updated_at": now,
                }
                return self._transition(conn, job_id, JobStatus.QUEUED, TERMINAL, values)
        except IntegrityError:
            raise UsageError(f"job {job_id}: its file already has another live job") from None

    def dismiss(self, job_id: int) -> Job:
        """Hide a finished job from the queue; the file of a failed/skipped/canceled one may then be queued again."""
        with self._db.write() as conn:
            job = self._get(conn, job_id)
            if job.status not in TERMINAL:
                raise InvalidTransition(job_id, job.status.value, "dismissed")
            # The status in the WHERE: on PostgreSQL a resubmit may commit between the read and this update.
            done = conn.execute(
                update(J)
                .where(J.c.id == job_id, J.c.status.in_([s.value for s in TERMINAL]))
                .values(dismissed=True, updated_at=self._clock.now())
            )
            if not done.rowcount:
                raise InvalidTransition(job_id, self._get(conn, job_id).status.value, "dismissed")
            return self._get(conn, job_id)

    def set_priority(self, job_id: int, priority: int) -> Job:
        """Change a job's priority (0–100)."""
        _check_priority(priority)
        with self._db.write() as conn:
            self._get(conn, job_id)
            conn.execute(update(J).where(J.c.id == job_id).values(priority=priority, updated_at=self._clock.now()))
            return self._get(conn, job_id)

    def cancel_for_media(self, media_ids: Iterable[int], reason: str) -> int:
        """Cancel the live jobs of files that changed or vanished (running ones are asked to stop)."""
        ids = list(media_ids)
        if not ids:
            return 0
        now = self._clock.now()
        count = 0
        with self._db.write() as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                idle = update(J).where(
                    J.c.media_file_id.in_(chunk), J.c.status.in_([JobStatus.QUEUED.value, JobStatus.PAUSED.value])
                )
                count += int(
                    conn.execute(
                        idle.values(status="canceled", error_message=reason, completed_at=now, updated_at=now)
                    ).rowcount
                    or 0
                )
                # A pending kill stays a kill; either way the owner records this reason (see cancel_running).
                busy = update(J).where(J.c.media_file_id.in_(chunk), J.c.status == RUNNING)
                request = case((J.c.control_request == "kill", "kill"), else_="cancel")
                values = {"control_request": request, "error_message": reason, "updated_at": now}
                count += int(conn.execute(busy.values(values)).rowcount or 0)
        return count

    def cancel_queued_for_media(self, reasons: Mapping[int, str]) -> int:
        """Cancel the *queued* transcode jobs of these files, each with its file's reason; how many were canceled.

        What a user's cancel of a queued job writes, in one UPDATE per chunk whose WHERE says "still queued": a job
        claimed, paused or finished since the caller looked is left alone, with no read-then-write race.
        """
        items = list(reasons.items())
        if not items:
            return 0
        check_transition(JobStatus.QUEUED, JobStatus.CANCELED)
        now = self._clock.now()
        count = 0
        with self._db.write() as conn:
            # Three bound values per file (the IN list, the CASE's WHEN and THEN): 300 stays under SQLite's 999.
            for chunk in _chunks(items, 300):
                why = case(dict(chunk), value=J.c.media_file_id)
                stmt = (
                    update(J)
                    .where(
                        J.c.media_file_id.in_([media_id for media_id, _ in chunk]),
                        J.c.kind == JobKind.TRANSCODE.value,
                        J.c.status == JobStatus.QUEUED.value,
                    )
                    .values(status=JobStatus.CANCELED.value, error_message=why, completed_at=now, updated_at=now)
                )
                count += int(conn.execute(stmt).rowcount or 0)
        return count

    # ------------------------------------------------------------------ recovery
    def find_orphaned(self, is_worker_alive: Callable[[str], bool]) -> list[Job]:
        """Running jobs whose owner is dead (the caller decides liveness exactly: locks, heartbeats)."""
        with self._db.read() as conn:
            rows = conn.execute(select(J).where(J.c.status == RUNNING)).mappings().all()
        return [job_from_row(r) for r in rows if not r["worker_id"] or not is_worker_alive(r["worker_id"])]

    def recover_orphaned(self, is_worker_alive: Callable[[str], bool]) -> tuple[int, int]:
        """Orphans of dead owners: ``queued`` (attempt already counted) or ``failed`` at max; (requeued, failed).

        A user's pending request wins: cancel/kill -> ``canceled``, pause -> ``paused`` (unless the attempts are used
        up). Liveness is judged outside the write transaction (it may be slow), once per distinct owner; the
        decision is one set-based UPDATE per chunk of dead owners on the rows as they are inside the transaction,
        so a request the user made meanwhile is not lost and a job whose owner changed is left alone (1,000 orphans
        cost a few statements, not two per row).
        """
        with self._db.read() as conn:
            owners = conn.execute(select(J.c.worker_id).where(J.c.status == RUNNING).distinct()).scalars().all()
        dead = [owner for owner in owners if owner is None or not is_worker_alive(owner)]
        if not dead:
            return 0, 0
        now = self._clock.now()
        request = func.coalesce(J.c.control_request, "")
        cancel = request.in_(("cancel", "kill"))
        at_max = J.c.attempts >= J.c.max_retries
        pause = request == "pause"
        for target in (JobStatus.CANCELED, JobStatus.FAILED, JobStatus.PAUSED, JobStatus.QUEUED):
            check_transition(JobStatus.RUNNING, target)
        errors = {
            "canceled": "canceled by user (owner died)",
            "failed": "abandoned after restart (max retries exceeded)",
            # The user asked for a hold before the owner died: honour it (the dead attempt stays spent).
            "paused": "interrupted: its worker died; paused as asked",
            "queued": "interrupted: its worker died; requeued",
        }
        outcomes = {"canceled": "canceled", "failed": "failed", "paused": "abandoned", "queued": "abandoned"}
        values = {
            "status": case(
                (cancel, JobStatus.CANCELED.value),
                (at_max, JobStatus.FAILED.value),
                (pause, JobStatus.PAUSED.value),
                else_=JobStatus.QUEUED.value,
            ),
            "error_message": case(
                (cancel, errors["canceled"]),
                (at_max, errors["failed"]),
                (pause, errors["paused"]),
                else_=errors["queued"],
            ),
            "completed_at": case((or_(cancel, at_max), now), else_=J.c.completed_at),
            "pause_reason": case((and_(~cancel, ~at_max, pause), PauseReason.USER.value), else_=J.c.pause_reason),
            "next_attempt_at": case((or_(cancel, at_max, pause), J.c.next_attempt_at), else_=None),
            "worker_id": None,
            "child_pid": None,
            "child_start_ticks": None,
            "control_request": None,
            "updated_at": now,
        }
        owned_by = [J.c.worker_id.in_(chunk) for chunk in _chunks([o for o in dead if o is not None], 500)]
        if None in dead:
            owned_by.append(J.c.worker_id.is_(None))
        changed: dict[str, list[int]] = {}
        with self._db.write() as conn:
            for owner in owned_by:
                rows = conn.execute(
                    update(J).where(J.c.status == RUNNING, owner).values(values).returning(J.c.id, J.c.status)
                ).all()
                for job_id, status in rows:
                    changed.setdefault(status, []).append(job_id)
            current_attempt = select(J.c.attempts).where(J.c.id == A.c.job_id).scalar_subquery()
            for status, ids in changed.items():
                for chunk in _chunks(ids, 5000):
                    conn.execute(
                        update(A)
                        .where(A.c.job_id.in_(chunk), A.c.attempt == current_attempt, A.c.ended_at.is_(None))
                        .values(ended_at=now, outcome=outcomes[status], error=errors[status])
                    )
        return len(changed.get("queued", ())), len(changed.get("failed", ()))

    def recover_paused(self) -> int:
        """Jobs paused by a shutdown go back to the queue (a user's hold stays); returns how many."""
        now = self._clock.now()
        check_transition(JobStatus.PAUSED, JobStatus.QUEUED)
        with self._db.write() as conn:
            result = conn.execute(
                update(J)
                .where(J.c.status == JobStatus.PAUSED.value, J.c.pause_reason == PauseReason.SHUTDOWN.value)
                .values(status=JobStatus.QUEUED.value, pause_reason=None, updated_at=now)
            )
            return int(result.rowcount or 0)

    def detect_stalled(self, now: float, timeout: float) -> list[Job]:
        """Running jobs whose last heartbeat is older than ``timeout`` seconds."""
        with self._db.read() as conn:
            rows = (
                conn.execute(
                    select(J).where(
                        J.c.status == RUNNING,
                        or_(J.c.last_heartbeat.is_(None), J.c.last_heartbeat < now - timeout),
                    )
                )
                .mappings()
                .all()
            )
        return [job_from_row(r) for r in rows]

    # ------------------------------------------------------------------ reading
    def get(self, job_id: int) -> Job:
        """One job, or ``JobNotFound``."""
        with self._db.read() as conn:
            return self._get(conn, job_id)

    def running(self, worker_ids: Iterable[str] | None = None) -> list[Job]:
        """Running jobs (of the given workers)."""
        query = select(J).where(J.c.status == RUNNING)
        if worker_ids is not None:
            query = query.where(J.c.worker_id.in_(list(worker_ids)))
        with self._db.read() as conn:
            return [job_from_row(r) for r in conn.execute(query).mappings()]

    def control_requests(self, worker_ids: Sequence[str]) -> dict[int, str]:
        """Pending pause/cancel/kill requests for jobs these workers own."""
        if not worker_ids:
            return {}
        query = select(J.c.id, J.c.control_request).where(
            J.c.status == RUNNING, J.c.worker_id.in_(list(worker_ids)), J.c.control_request.is_not(None)
        )
        with self._db.read() as conn:
            return {row.id: row.control_request for row in conn.execute(query)}

    def list_jobs(self, flt: JobFilter | None = None, *, offset: int = 0, limit: int | None = None) -> list[Job]:
        """Jobs matching a filter, live ones first by priority, then newest finished ones."""
        query = self._filtered(select(J), flt or JobFilter()).order_by(*_list_order()).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self._db.read() as conn:
            return [job_from_row(r) for r in conn.execute(query).mappings()]

    def ordered_ids(self, flt: JobFilter | None = None) -> list[int]:
        """The ids of every job matching a filter, in ``list_jobs`` order (the TUI pages through them by index)."""
        query = self._filtered(select(J.c.id), flt or JobFilter())
        query = query.order_by(*_list_order())
        with self._db.read() as conn:
            # Straight from the driver's cursor: skipping SQLAlchemy's row objects halves the time for 100k ids.
            return [row[0] for row in conn.execute(query).cursor.fetchall()]

    def get_many(self, job_ids: Sequence[int]) -> list[Job]:
        """The jobs with these ids (any order; unknown ids are left out)."""
        out: list[Job] = []
        with self._db.read() as conn:
            for i in range(0, len(job_ids), 500):
                chunk = list(job_ids[i : i + 500])
                out.extend(job_from_row(r) for r in conn.execute(select(J).where(J.c.id.in_(chunk))).mappings())
        return out

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs (not dismissed) are in each status."""
        query = select(J.c.status, func.count()).where(J.c.dismissed.is_(False)).group_by(J.c.status)
        with self._db.read() as conn:
            return {JobStatus(status): int(n) for status, n in conn.execute(query)}

    def count(self, flt: JobFilter | None = None) -> int:
        """How many jobs match a filter."""
        query = self._filtered(select(func.count()).select_from(J), flt or JobFilter())
        with self._db.read() as conn:
            return int(conn.execute(query).scalar_one())

    def changed_since(self, since: float, limit: int = 1000) -> list[Job]:
        """Jobs updated at or after ``since`` (the TUI's cheap poll)."""
        query = select(J).where(J.c.updated_at >= since).order_by(J.c.updated_at).limit(limit)
        with self._db.read() as conn:
            return [job_from_row(r) for r in conn.execute(query).mappings()]

    def attempts(self, job_id: int) -> list[Attempt]:
        """Every attempt of a job, oldest first."""
        query = select(A).where(A.c.job_id == job_id).order_by(A.c.attempt, A.c.id)
        with self._db.read() as conn:
            return [attempt_from_row(r) for r in conn.execute(query).mappings()]

    def stats(self) -> QueueStats:
        """Counts for the stats line: candidates without a job, jobs per status, bytes saved."""
        counts = select(J.c.status, func.count()).where(J.c.dismissed.is_(False)).group_by(J.c.status)
        saved = select(func.coalesce(func.sum(J.c.source_size - J.c.output_size), 0)).where(
            J.c.status == JobStatus.COMPLETED.value,
            J.c.output_size.is_not(None),
            J.c.source_size.is_not(None),
        )
        need = text(f"SELECT count(*) FROM media_files m WHERE {_CANDIDATE_SQL}")
        with self._db.read() as conn:
            by_status = {status: n for status, n in conn.execute(counts)}
            saved_bytes = int(conn.execute(saved).scalar_one() or 0)
            need_n = int(conn.execute(need).scalar_one())
        return QueueStats(
            need_transcoding=need_n,
            queued=by_status.get("queued", 0),
            running=by_status.get("running", 0),
            paused=by_status.get("paused", 0),
            failed=by_status.get("failed", 0),
            completed=by_status.get("completed", 0),
            saved_bytes=saved_bytes,
        )

    # ------------------------------------------------------------------ helpers
    def _filtered(self, query: Any, flt: JobFilter) -> Any:
        if flt.statuses is not None:
            query = query.where(J.c.status.in_([s.value for s in flt.statuses]))
        if not flt.include_dismissed:
            query = query.where(J.c.dismissed.is_(False))
        if flt.search:
            query = query.where(J.c.input_path.ilike(like_contains(flt.search), escape="\\"))
        if flt.path_contains:
            # Escaped like the search: a folder named "100%_done" must match itself, not everything.
            query = query.where(or_(*(J.c.input_path.ilike(like_contains(p), escape="\\") for p in flt.path_contains)))
        return query

    def _get(self, conn: Connection, job_id: int) -> Job:
        row = conn.execute(select(J).where(J.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return job_from_row(row)

    def _cas(self, conn: Connection, job_id: int, worker_id: str, values: dict[str, Any]) -> Job:
        row = conn.execute(_owned(update(J), job_id, worker_id).values(values).returning(*J.c)).mappings().first()
        if row is None:
            raise self._refused(conn, job_id, worker_id, str(values.get("status", "update")))
        return job_from_row(row)

    def _refused(self, conn: Connection, job_id: int, worker_id: str, what: str) -> Exception:
        current = self._get(conn, job_id)
        return StaleLease(
            f"job {job_id}: {what} refused: worker {worker_id} does not own it "
            f"(status {current.status.value}, owner {current.worker_id or 'none'})"
        )

    def _transition(
        self,
        conn: Connection,
        job_id: int,
        target: JobStatus,
        expected: Iterable[JobStatus],
        values: dict[str, Any],
    ) -> Job:
        allowed = [s.value for s in expected if s in sources_of(target)]
        result = (
            conn.execute(
                update(J)
                .where(J.c.id == job_id, J.c.status.in_(allowed))
                .values(status=target.value, **values)
                .returning(*J.c)
            )
            .mappings()
            .first()
        )
        if result is None:
            current = self._get(conn, job_id)
            raise InvalidTransition(job_id, current.status.value, target.value)
        return job_from_row(result)

    def _user_action(self, job_id: int, target: JobStatus, *, request: str, reason: str = "") -> Job:
        now = self._clock.now()
        with self._db.write() as conn:
            job = self._get(conn, job_id)
            check_transition(job.status, target, job_id)
            if job.status is JobStatus.RUNNING:
                # A pending stronger request stands: a pause pressed after a cancel must not turn the cancel into
                # a pause (nor a cancel soften a kill) before the owner has acted on it.
                if _REQUEST_RANK.get(job.control_request or "", 0) >= _REQUEST_RANK[request]:
                    return job
                # The owner holds the child process; it sees the request within a second and finishes the move.
                # A cancel's reason travels with the request; the owner's cancel_running records it.
                why = {"error_message": reason} if target is JobStatus.CANCELED and reason else {}
                conn.execute(
                    update(J)
                    .where(J.c.id == job_id, J.c.status == RUNNING)
                    .values(control_request=request, updated_at=now, **why)
                )
                return self._get(conn, job_id)
            values: dict[str, Any] = {"updated_at": now}
            if target is JobStatus.PAUSED:
                values["pause_reason"] = PauseReason.USER.value
            else:
                values.update(error_message=reason, completed_at=now)
            return self._transition(conn, job_id, target, {job.status}, values)

    def _end_attempt(self, conn: Connection, job_id: int, outcome: str, error: str | None, now: float) -> None:
        attempt = select(J.c.attempts).where(J.c.id == job_id).scalar_subquery()
        conn.execute(
            update(A)
            .where(A.c.job_id == job_id, A.c.attempt == attempt, A.c.ended_at.is_(None))
            .values(ended_at=now, outcome=outcome, error=error)
        )


def _completion_params(item: Completion, now: float) -> dict[str, Any]:
    """The bound values of the completion statement for one item."""
    return {
        "id": item.job_id,
        "worker": item.worker_id,
        "now": now,
        "output_path": item.output_path,
        "output_size": item.output_size,
        "duration_s": item.duration_s,
        "encode_time_s": item.encode_time_s,
        "avg_fps": item.avg_fps,
    }


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """``items`` cut into lists of at most ``size`` (bound-parameter limits)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def _raw_row(raw: Any, sql: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The one row an ``UPDATE … RETURNING`` run on the sqlite3 connection returned, as a mapping (or None)."""
    cursor = raw.execute(sql, params)
    rows = cursor.fetchall()  # to the end: a RETURNING statement left unfinished would block the COMMIT
    names = [d[0] for d in cursor.description]
    cursor.close()
    return dict(zip(names, rows[0], strict=True)) if rows else None


def _owned(stmt: Any, job_id: int, worker_id: str) -> Any:
    return stmt.where(and_(J.c.id == job_id, J.c.status == RUNNING, J.c.worker_id == worker_id))


def _check_priority(priority: int) -> None:
    if not 0 <= priority <= 100:
        raise UsageError(f"priority must be from 0 to 100, not {priority}")


def _status_rank() -> Any:
    return case(
        (J.c.status == "running", 0),
        (J.c.status == "paused", 1),
        (J.c.status == "queued", 2),
        (J.c.status == "failed", 3),
        else_=4,
    )


def _list_order() -> tuple[Any, ...]:
    """The queue table's order: running, paused, queued (each by priority, then oldest), then failed and the other
    finished jobs, newest first (a priority means nothing once a job is done)."""
    live = J.c.status.in_([s.value for s in LIVE])
    return (
        _status_rank(),
        case((live, -J.c.priority), else_=0),
        case((live, 0.0), else_=-func.coalesce(J.c.completed_at, J.c.updated_at)),
        J.c.created_at,
        J.c.id,
    )


__all__ = ["LIVE", "Completion", "JobFilter", "JobStore"]
