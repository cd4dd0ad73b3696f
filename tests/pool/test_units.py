"""Small parts: sinks, the validation rules, work-dir names, jobs of an unsupported kind, no-op throughput path."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import anyio
import pytest

from amphigory_tui.domain.errors import JobError
from amphigory_tui.domain.events import JobChanged, JobProgress, LogRecord, WorkerBeat
from amphigory_tui.domain.jobs import JobKind, JobStatus, Stage
from amphigory_tui.domain.media import AudioStream, ProbeResult
from amphigory_tui.pool import FanoutSink, ListSink, LoggingSink, WorkerPool
from amphigory_tui.services.pipeline import (
    JobResult,
    NoopRunner,
    StageContext,
    job_dir,
    lease_dir,
    validation_problem,
)
from tests.pool.conftest import Env, run_drain

SOURCE = ProbeResult(
    container="mov",
    duration_s=120.0,
    video_codec="h264",
    audio=(AudioStream(1, "aac", "eng"), AudioStream(2, "ac3", "fra")),
)


def _out(**kw: object) -> ProbeResult:
    base: dict[str, object] = {
        "container": "matroska",
        "duration_s": 120.4,
        "video_codec": "hevc",
        "audio": SOURCE.audio,
    }
    base.update(kw)
    return ProbeResult(**base)  # type: ignore[arg-type]


def test_validation_rules() -> None:
    """Empty, cut, unreadable, video-less, audio-losing and short outputs are refused, each in words."""
    assert validation_problem(SOURCE, _out(), 1000) is None
    assert validation_problem(SOURCE, _out(duration_s=119.0), 1000) is None  # within max(1 s, 1 %) = 1.2 s
    assert validation_problem(SOURCE, _out(), 0) == "the output is empty (0 bytes)"
    assert validation_problem(SOURCE, _out(), 10, "truncated: x") == "the output is cut short (truncated: x)"
    assert validation_problem(SOURCE, _out(error="moov atom not found"), 10) == (
        "the output cannot be read (moov atom not found)"
    )
    assert validation_problem(SOURCE, _out(video_codec=None), 10) == "the output has no video stream"
    assert validation_problem(SOURCE, _out(audio=SOURCE.audio[:1]), 10) == (
        "the output has 1 audio streams, the source 2"
    )
    assert validation_problem(SOURCE, _out(duration_s=60.0), 10) == "the output lasts 60.00 s, the source 120.00 s"
    assert validation_problem(SOURCE, _out(duration_s=None), 10) == (
        "the output has no duration (cut short?), the source lasts 120.00 s"
    )


def test_work_dir_names(env: Env) -> None:
    """Each attempt of a job has its own lease dir under job-<id>; a worker id cannot escape it."""
    settings = env.settings()
    store = env.store(settings)
    job = store.jobs.create("/lib/a.mkv")
    claimed = store.jobs.claim("host:12:../../etc")
    assert claimed is not None
    assert job_dir(env.work, job.id) == env.work / f"job-{job.id}"
    assert lease_dir(env.work, claimed, "host:12:../../etc") == env.work / f"job-{job.id}" / "a1-etc"


def test_sinks(caplog: pytest.LogCaptureFixture) -> None:
    """LoggingSink logs job changes and log lines; FanoutSink survives a broken sink; ListSink is thread-safe."""

    class Broken:
        def emit(self, event: object) -> None:
            raise RuntimeError("bridge gone")

    collected = ListSink()
    fan = FanoutSink([Broken(), LoggingSink(logging.getLogger("amphigory.test")), collected])
    with caplog.at_level(logging.INFO, logger="amphigory.test"):
        fan.emit(JobChanged(3, JobStatus.COMPLETED, Stage.UPLOAD, "done"))
        fan.emit(LogRecord("warning", "careful", job_id=3))
        fan.emit(JobProgress(3, "w", Stage.TRANSCODE, 50.0))
        fan.emit(WorkerBeat("w", "idle"))
    assert "job 3 completed (upload): done" in caplog.text
    assert "job 3: careful" in caplog.text
    assert "50.0" not in caplog.text  # progress only at debug level
    threads = [
        threading.Thread(target=lambda: [collected.emit(WorkerBeat("t", "x")) for _ in range(500)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(collected.of_type(WorkerBeat)) == 2001
    collected.clear()
    assert collected.events == []


@pytest.mark.anyio
async def test_unsupported_kind_fails_permanently_and_noop_jobs_complete(env: Env, sink: ListSink) -> None:
    """A rip job in a transcode-only worker fails at once with the reason; NoopRunner completes jobs in one go."""
    settings = env.settings(workers={"count": 2})
    store = env.store(settings)
    rip = store.jobs.create("/dev/sr0", kind=JobKind.RIP)
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    failed = store.jobs.get(rip.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 1
    assert failed.error_message == "rip jobs are not supported by this worker yet"

    ids = [store.jobs.create(f"/lib/noop{i}.mkv").id for i in range(50)]
    pool = WorkerPool(store, settings, sink, runner=NoopRunner(), drain=True)
    await run_drain(pool)
    assert all(store.jobs.get(i).status is JobStatus.COMPLETED for i in ids)
    # complete and the next claim share one transaction (grouped across workers: at most one per job), so the
    # separate claim calls are about one per worker, not one per job.
    assert 25 <= pool.counts["complete"] <= 50 and pool.counts["claim"] <= 2 * 2 + 2


@pytest.mark.anyio
async def test_noop_jobs_wait_off_the_loop_for_another_writer(env: Env, sink: ListSink) -> None:
    """While another process holds SQLite's write lock the pool's calls wait in its store thread, so the event loop
    keeps running (a ticker task advances) and nothing completes; once the lock is released every job completes."""
    settings = env.settings(workers={"count": 2})
    store = env.store(settings)
    ids = [store.jobs.create(f"/lib/noop{i}.mkv").id for i in range(20)]
    other = sqlite3.connect(env.root / "amphigory.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pool = WorkerPool(store, settings, sink, runner=NoopRunner(), drain=True)
    ticks = 0
    done = anyio.Event()

    async def drain() -> None:
        await run_drain(pool)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain)
        with anyio.fail_after(30):
            while ticks < 20:
                ticks += 1
                await anyio.sleep(0.01)
        assert store.jobs.stats().completed == 0
        other.execute("ROLLBACK")
        other.close()
        with anyio.fail_after(60):
            await done.wait()
    assert all(store.jobs.get(i).status is JobStatus.COMPLETED for i in ids)


@pytest.mark.anyio
async def test_a_slow_inline_store_call_sends_the_next_ones_to_the_store_thread(env: Env, sink: ListSink) -> None:
    """The per-job call runs on the event loop while it is quick; after a slow one (a slow disk) the next calls go
    to the store thread, with wait=True."""
    settings = env.settings()
    pool = WorkerPool(env.store(settings), settings, sink, runner=NoopRunner())
    calls: list[tuple[bool, bool]] = []
    loop_thread = threading.get_ident()

    def slow_call(*, wait: bool) -> int:
        calls.append((threading.get_ident() == loop_thread, wait))
        time.sleep(0.03)  # well over the 2 ms average that keeps calls on the loop
        return len(calls)

    try:
        assert await pool._hot("complete", slow_call) == 1
        assert await pool._hot("complete", slow_call) == 2
    finally:
        pool._store_thread.close()
    assert calls == [(True, False), (False, True)]
    assert pool.counts["complete"] == 2


class FailOnceRunner:
    """Fails a job's first attempt (transient), then succeeds."""

    async def run(self, ctx: StageContext) -> JobResult:
        """Fail attempt 1."""
        if ctx.job.attempts == 1:
            raise JobError(f"simulated transient failure of job {ctx.job.id}")
        return JobResult()

    async def finalize(self, ctx: StageContext, result: JobResult) -> None:
        """Nothing."""

    async def cleanup(self, ctx: StageContext) -> None:
        """Nothing."""


@pytest.mark.anyio
async def test_drain_waits_for_a_retry_delay(env: Env, sink: ListSink) -> None:
    """A job waiting 1 s for its retry is still work: drain mode waits for it instead of exiting."""
    settings = env.settings(jobs={"retry_delay_s": 1}, workers={"poll_interval_s": 0.2})
    store = env.store(settings)
    job = store.jobs.create("/lib/retry.mkv")
    pool = WorkerPool(store, settings, sink, runner=FailOnceRunner(), drain=True)
    await run_drain(pool, timeout=20)
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 2
    assert [a.outcome for a in store.jobs.attempts(job.id)] == ["retry", "completed"]
    messages = [r.message for _i, r in store.log.tail(job_id=job.id)]
    assert any(m.startswith("attempt 1/3 failed, retry in 1 s: simulated transient failure") for m in messages)


@pytest.mark.anyio
async def test_missing_input_is_one_clear_message(env: Env, sink: ListSink) -> None:
    """A queued file that no longer exists: 'the input file … does not exist', retried, then failed."""
    settings = env.settings(jobs={"max_retries": 2})
    store = env.store(settings)
    gone = env.lib / "gone.mkv"
    job = store.jobs.create(str(gone))
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.FAILED and done.attempts == 2
    assert done.error_message == f"the input file {gone} does not exist"
    assert not env.work.exists() or list(env.work.iterdir()) == []
