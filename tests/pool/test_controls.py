"""Controls on running jobs: cancel, kill, pause (from another process and in-process), stalls, shutdown, size."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from amphigory_tui.domain.clock import SystemClock
from amphigory_tui.domain.events import Event, JobProgress
from amphigory_tui.domain.jobs import Job, JobStatus, PauseReason, Stage
from amphigory_tui.pool import ListSink, WorkerPool
from amphigory_tui.services.pipeline import JobResult, StageContext
from tests.pool.conftest import (
    Clips,
    Env,
    child_pid,
    leftovers,
    make_script,
    pid_gone,
    run_drain,
    run_until,
    status_is,
    stop_process,
)


@pytest.mark.anyio
async def test_cancel_from_another_process_kills_the_encoder_and_removes_temp_files(
    env: Env, clips: Clips, sink: ListSink
) -> None:
    """`amphigory job cancel` (JobStore.cancel on its own connection) mid-encode: canceled, no process, no temp."""
    settings = env.settings()
    store = env.store(settings)
    other = env.store(settings)  # "another process": its own engine and connections
    path, job = env.add(clips.long, "cancel me.mp4", store)
    pids: list[int] = []

    def freeze_and_cancel() -> None:
        pid = store.jobs.get(job.id).child_pid
        assert pid is not None
        pids.append(pid)
        stop_process(pid)  # mid-encode for sure; the stop must still end it (SIGCONT follows the SIGINT)
        assert other.jobs.cancel(job.id).control_request == "cancel"

    pool = WorkerPool(store, settings, sink)
    await run_until(
        pool, child_pid(store, job.id), action=freeze_and_cancel, then=status_is(store, job.id, JobStatus.CANCELED)
    )
    done = store.jobs.get(job.id)
    assert done.error_message == "canceled by user" and done.stage is Stage.TRANSCODE
    assert done.child_pid is None and done.temp_path is None and done.control_request is None
    assert pid_gone(pids[0])
    assert [a.outcome for a in store.jobs.attempts(job.id)] == ["canceled"]
    assert leftovers(env) == []
    assert path.read_bytes() == clips.long.read_bytes()
    assert sorted(p.name for p in env.lib.iterdir()) == ["cancel me.mp4"]


class FreezeAtFirstProgress(ListSink):
    """SIGSTOPs the job's tool the moment its first progress record arrives: mid-encode for sure, however fast
    the machine encodes the clip (a 6 s clip can finish between two polls of a test)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool: WorkerPool | None = None
        self.frozen: list[int] = []

    def emit(self, event: Event) -> None:
        """Record the event; freeze the tool at the first transcode progress."""
        super().emit(event)
        if isinstance(event, JobProgress) and event.stage is Stage.TRANSCODE and not self.frozen:
            assert self.pool is not None
            handle = self.pool._runs[event.job_id].handle  # the child the pool is reading progress from
            assert handle is not None
            stop_process(handle.pid)
            self.frozen.append(handle.pid)


@pytest.mark.anyio
@pytest.mark.parametrize("kill", [False, True])
async def test_in_process_cancel_mid_encode(env: Env, clips: Clips, kill: bool) -> None:
    """pool.cancel_job once HandBrakeCLI reports progress: canceled (or killed), no process, no temp file."""
    # A slow preset: the fast test settings encode this clip in ~0.3 s, and all its progress can arrive at once.
    slow = ["-e", "x264", "--encoder-preset", "veryslow", "-q", "20", "-w", "320", "-l", "180"]
    settings = env.settings(transcode={"extra_args": slow})
    store = env.store(settings)
    _path, job = env.add(clips.long, "fast path.mp4", store)
    sink = FreezeAtFirstProgress()
    pool = WorkerPool(store, settings, sink)
    sink.pool = pool

    def encoding() -> bool:
        snap = [s for s in pool.snapshot() if s.job_id == job.id]
        return bool(sink.frozen) and bool(snap) and snap[0].stage is Stage.TRANSCODE and snap[0].percent > 0

    def cancel() -> None:
        assert pool.cancel_job(job.id, kill=kill)
        assert not pool.cancel_job(job.id + 100)  # not running here: the caller must use the store

    await run_until(pool, encoding, action=cancel, then=status_is(store, job.id, JobStatus.CANCELED))
    done = store.jobs.get(job.id)
    assert done.error_message == ("killed by user" if kill else "canceled by user")
    assert pid_gone(sink.frozen[0])
    assert leftovers(env) == []


@pytest.mark.anyio
async def test_pause_from_another_process_keeps_the_attempt(env: Env, clips: Clips, sink: ListSink) -> None:
    """A pause request mid-encode: paused (user), progress kept, attempts unchanged; resumed it completes."""
    settings = env.settings()
    store = env.store(settings)
    other = env.store(settings)
    _path, job = env.add(clips.long, "pause me.mp4", store)
    pids: list[int] = []

    def pause() -> None:
        pid = store.jobs.get(job.id).child_pid
        assert pid is not None
        pids.append(pid)
        # Hold the encoder mid-encode: the pool polls requests once a second, and an unheld 6 s clip can finish
        # first (a pause that arrives after the new file is placed lets the job complete, by design).
        stop_process(pid)
        other.jobs.pause(job.id)

    await run_until(
        WorkerPool(store, settings, sink),
        child_pid(store, job.id),
        action=pause,
        then=status_is(store, job.id, JobStatus.PAUSED),
    )
    paused = store.jobs.get(job.id)
    assert paused.pause_reason is PauseReason.USER and paused.attempts == 1 and paused.resume_attempt
    assert pid_gone(pids[0])
    assert leftovers(env) == []
    store.jobs.resume(job.id)
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 1
    assert [a.outcome for a in store.jobs.attempts(job.id)] == ["completed"]


@pytest.mark.anyio
async def test_sigstopped_encoder_is_a_stall_and_the_job_is_retried(env: Env, clips: Clips, sink: ListSink) -> None:
    """HandBrakeCLI SIGSTOPped: no progress for stall_timeout (2 s) → its group is killed, the attempt fails
    (retry), and the next attempt completes."""
    settings = env.settings(workers={"stall_timeout_s": 2, "heartbeat_interval_s": 1})
    store = env.store(settings)
    _path, job = env.add(clips.plain, "stuck.mp4", store)
    frozen: list[int] = []

    def freeze() -> None:
        pid = store.jobs.get(job.id).child_pid
        assert pid is not None
        frozen.append(pid)
        os.kill(pid, signal.SIGSTOP)

    await run_until(
        WorkerPool(store, settings, sink),
        child_pid(store, job.id),
        action=freeze,
        then=status_is(store, job.id, JobStatus.COMPLETED),
    )
    done = store.jobs.get(job.id)
    assert done.attempts == 2
    first, second = store.jobs.attempts(job.id)
    assert first.outcome == "retry" and second.outcome == "completed"
    assert first.error is not None and first.error.startswith("stalled: no progress for 2 s in stage transcode")
    assert pid_gone(frozen[0])
    assert leftovers(env) == []


def holding_encoder(env: Env) -> Path:
    """A stand-in HandBrakeCLI that reports 12.5 % once and then holds still for two minutes."""
    return make_script(
        env.root / "holding-handbrake",
        """
        import sys, time
        sys.stdout.write("Encoding: task 1 of 1, 12.50 % (30.00 fps, avg 29.00 fps, ETA 00h00m09s)\\r")
        sys.stdout.flush()
        time.sleep(120)
        """,
    )


class JumpClock(SystemClock):
    """The real clock, whose monotonic time can jump ahead (as if this process had been stopped meanwhile)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        """Real monotonic time plus the jumps so far."""
        return super().monotonic() + self.offset


@pytest.mark.anyio
async def test_a_pool_that_was_not_running_gives_its_tools_a_fresh_stall_window(
    env: Env, clips: Clips, sink: ListSink
) -> None:
    """After 30 s in which the pool itself did not run (SIGSTOP, a paused VM), a tool that made no progress in that
    time is not called stalled at the next tick; without progress for stall_timeout from then on, it is."""
    encoder = holding_encoder(env)
    settings = env.settings(
        workers={"stall_timeout_s": 2, "heartbeat_interval_s": 1},
        jobs={"max_retries": 1},
        tools={"handbrake": str(encoder)},
    )
    store = env.store(settings)
    _path, job = env.add(clips.plain, "held.mp4", store)
    clock = JumpClock()
    pool = WorkerPool(store, settings, sink, clock=clock)
    beats: list[float] = []

    def encoding() -> bool:
        return any(s.job_id == job.id and s.stage is Stage.TRANSCODE and s.percent > 0 for s in pool.snapshot())

    def two_beats_after_the_jump() -> bool:
        current = store.jobs.get(job.id)
        assert current.status is JobStatus.RUNNING, current.error_message  # not stalled by the jump
        if current.last_heartbeat is not None and (not beats or current.last_heartbeat != beats[-1]):
            beats.append(current.last_heartbeat)
        return len(beats) >= 3

    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run)
        with anyio.fail_after(30):
            while not encoding():
                await anyio.sleep(0.02)
            clock.offset += 30.0
            while not two_beats_after_the_jump():
                await anyio.sleep(0.05)
            while store.jobs.get(job.id).status is JobStatus.RUNNING:
                await anyio.sleep(0.05)
        await pool.shutdown()
    (attempt,) = store.jobs.attempts(job.id)
    assert attempt.error is not None and attempt.error.startswith("stalled: no progress for 2 s in stage transcode")


@pytest.mark.anyio
async def test_shutdown_pauses_running_jobs_without_using_an_attempt(env: Env, clips: Clips, sink: ListSink) -> None:
    """shutdown(): the encoder is stopped, its partial output deleted, the job paused (shutdown), attempts kept;
    the next start's recovery requeues it and it completes on the same attempt."""
    settings = env.settings(workers={"count": 2})
    store = env.store(settings)
    jobs = [env.add(clips.long, f"stop{i}.mp4", store)[1] for i in range(2)]
    pool = WorkerPool(store, settings, sink)
    pids: list[int] = []

    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run)
        with anyio.fail_after(30):
            while not all(store.jobs.get(j.id).child_pid for j in jobs):
                await anyio.sleep(0.02)
            pids += [store.jobs.get(j.id).child_pid or 0 for j in jobs]
            await pool.shutdown(grace=False)
    for j in jobs:
        paused = store.jobs.get(j.id)
        assert paused.status is JobStatus.PAUSED and paused.pause_reason is PauseReason.SHUTDOWN
        assert paused.attempts == 1
    assert all(pid_gone(p) for p in pids)
    assert leftovers(env) == []
    assert store.workers.list_workers() == []
    assert store.jobs.recover_paused() == 2
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    assert [store.jobs.get(j.id).attempts for j in jobs] == [1, 1]
    assert all(store.jobs.get(j.id).status is JobStatus.COMPLETED for j in jobs)


@pytest.mark.anyio
async def test_lost_lease_stops_the_local_copy_without_touching_the_store(
    env: Env, clips: Clips, sink: ListSink
) -> None:
    """Another process requeues our job (it thought we were dead): the next heartbeat sees it, our encoder is
    killed and our temp files removed, and the job's fate is left to its new owner."""
    settings = env.settings(workers={"heartbeat_interval_s": 1})
    store = env.store(settings)
    _path, job = env.add(clips.long, "lease.mp4", store)
    pool = WorkerPool(store, settings, sink)
    pids: list[int] = []

    def steal() -> None:
        pid = store.jobs.get(job.id).child_pid
        assert pid is not None
        pids.append(pid)
        pool.set_size(0)  # so this pool does not simply claim it back once its copy has stopped
        stop_process(pid)
        assert store.jobs.recover_orphaned(lambda _worker: False) == (1, 0)

    def stopped_here() -> bool:
        return not pool.running_job_ids()

    await run_until(pool, child_pid(store, job.id), action=steal, then=stopped_here)
    assert pid_gone(pids[0])
    messages = [r.message for _i, r in store.log.tail(job_id=job.id)]
    assert any(m.startswith(f"lost the lease of job {job.id}") for m in messages)
    after = store.jobs.get(job.id)
    assert after.status is JobStatus.QUEUED and after.attempts == 1  # as the recovery left it
    assert [a.outcome for a in store.jobs.attempts(job.id)] == ["abandoned"]
    assert leftovers(env) == []


class GateRunner:
    """A runner whose jobs run until the test releases them (no process, no files)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.released: set[int] = set()

    async def run(self, ctx: StageContext) -> JobResult:
        """Wait for the release."""
        self.started.append(ctx.job.id)
        while ctx.job.id not in self.released:
            await anyio.sleep(0.01)
        return JobResult()

    async def finalize(self, ctx: StageContext, result: JobResult) -> None:
        """Nothing."""

    async def cleanup(self, ctx: StageContext) -> None:
        """Nothing."""


@pytest.mark.anyio
async def test_set_size_up_down_up_live(env: Env, sink: ListSink) -> None:
    """Scale 2 → 1 (running jobs finish, then one loop leaves) → 3 (new loops claim at once), no restart."""
    settings = env.settings(workers={"count": 2})
    store = env.store(settings)
    ids = [store.jobs.create(f"/lib/gate{i}.mkv").id for i in range(6)]
    gate = GateRunner()
    pool = WorkerPool(store, settings, sink, runner=gate)

    async def until(cond: object) -> None:
        with anyio.fail_after(10):
            while not cond():  # type: ignore[operator]
                await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run)
        await until(lambda: len(pool.running_job_ids()) == 2)
        registered = store.workers.list_workers()
        assert len(registered) == 2
        # Each row says how often its worker beats: the Workers tab of another machine judges lateness by it.
        assert {w.heartbeat_interval_s for w in registered} == {pool.settings.workers.heartbeat_interval_s}
        pool.set_size(1)
        assert pool.size == 1
        # Both running jobs go on; nothing is interrupted by scaling down.
        await anyio.sleep(0.1)
        assert len(pool.running_job_ids()) == 2
        gate.released.update(gate.started[:2])
        await until(lambda: len(pool.snapshot()) == 1 and len(pool.running_job_ids()) == 1)
        await until(lambda: len(store.workers.list_workers()) == 1)
        assert store.jobs.get(gate.started[0]).status is JobStatus.COMPLETED
        pool.set_size(3)
        await until(lambda: len(pool.running_job_ids()) == 3)
        assert len(pool.snapshot()) == 3
        await until(lambda: len(store.workers.list_workers()) == 3)
        gate.released.update(ids)
        await until(lambda: all(store.jobs.get(i).status is JobStatus.COMPLETED for i in ids))
        await pool.shutdown()
    assert sorted(gate.started) == ids
    assert store.workers.list_workers() == []


@pytest.mark.anyio
async def test_pause_all_and_resume_all(env: Env, sink: ListSink) -> None:
    """pause_all: claiming stops and running jobs are paused (no attempt used); resume_all undoes both."""
    settings = env.settings(workers={"count": 2})
    store = env.store(settings)
    ids = [store.jobs.create(f"/lib/p{i}.mkv").id for i in range(3)]
    gate = GateRunner()
    pool = WorkerPool(store, settings, sink, runner=gate)
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.run)
            while len(pool.running_job_ids()) < 2:
                await anyio.sleep(0.01)
            running = pool.running_job_ids()
            pool.pause_all()
            while any(store.jobs.get(i).status is not JobStatus.PAUSED for i in running):
                await anyio.sleep(0.01)
            assert pool.paused and pool.running_job_ids() == []
            assert all(s.state == "paused" for s in pool.snapshot())
            queued = [i for i in ids if i not in running]
            assert store.jobs.get(queued[0]).status is JobStatus.QUEUED
            gate.released.update(ids)
            pool.resume_all()
            while not all(store.jobs.get(i).status is JobStatus.COMPLETED for i in ids):
                await anyio.sleep(0.01)
            await pool.shutdown()
    assert [store.jobs.get(i).attempts for i in ids] == [1, 1, 1]


@pytest.mark.anyio
async def test_heartbeats_write_progress_and_workers(env: Env, clips: Clips, sink: ListSink) -> None:
    """While a job runs, its heartbeat and progress reach the database and the workers table shows the loop."""
    # A real tiny encode can finish before the test looks, and this test is about what the heartbeat writes.
    encoder = holding_encoder(env)
    settings = env.settings(workers={"heartbeat_interval_s": 1}, tools={"handbrake": str(encoder)})
    store = env.store(settings)
    _path, job = env.add(clips.long, "beat.mp4", store)
    pool = WorkerPool(store, settings, sink)
    seen: list[Job] = []

    def encoding() -> bool:
        return any(s.job_id == job.id and s.stage is Stage.TRANSCODE and s.percent > 0 for s in pool.snapshot())

    def written() -> bool:
        current = store.jobs.get(job.id)
        if current.progress_percent > 0 and current.last_heartbeat is not None:
            seen.append(current)
            return len(store.workers.list_workers()) == 1
        return False

    await run_until(pool, encoding, then=written)
    running = seen[-1]
    assert running.status is JobStatus.RUNNING and running.stage is Stage.TRANSCODE
    assert running.progress_percent == pytest.approx(12.5) and running.fps == pytest.approx(30.0)
    assert running.child_start_ticks is not None
    assert running.temp_path is not None and running.temp_path.startswith(str(env.work / f"job-{job.id}"))
    assert any(isinstance(e, JobProgress) and e.job_id == job.id and e.percent > 0 for e in sink.events)
    assert store.jobs.get(job.id).status is JobStatus.PAUSED
