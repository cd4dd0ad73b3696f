"""WorkerPool: N claim loops, a heartbeat, a stall watchdog and the controls, in ONE anyio task group.

``run()`` enters and exits its task group itself (Textual runs it as a worker coroutine; headless runs it under
``anyio.run``), so no cancel scope ever crosses tasks. Everything else is a plain method called on the pool's event
loop: ``set_size``, ``pause_job``, ``cancel_job``, ``pause_all``/``resume_all``, ``snapshot`` and the coroutine
``shutdown``. Blocking store calls go through one store thread (pool/store_thread.py), except the per-job claim and
complete-and-claim on SQLite, which run on the event loop when the writer is free that instant (``_hot``: no lock is
ever waited for there, only the commit's own fsync); nothing here imports Textual.

Per job the pool writes: the claim (and the next claim together with ``complete``: one commit per job), stage
changes, the child's pid, progress at most once a second, and one heartbeat transaction per round for every running
job and worker of this process. Log lines are buffered and written once a second in one transaction.

Stops: a stop (user pause/cancel/kill, stall, shutdown, lost lease) cancels the job's own cancel scope; the running
tool gets its polite signal, then SIGKILL after ``kill_grace_s`` (``run_tool`` does this, shielded), or SIGKILL at
once for kill/stall/``grace=False``. The job's temp files are removed before its new status is written, so a crash
in between leaves an orphan for recovery and never a stray file the store does not know about.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from amphigory_tui.config import Settings
from amphigory_tui.domain.clock import Clock
from amphigory_tui.domain.errors import AmphigoryError, JobError, StaleLease
from amphigory_tui.domain.events import Event, JobChanged, JobProgress, LogRecord, WorkerBeat
from amphigory_tui.domain.jobs import Job, JobKind, JobStatus, PauseReason, Progress, Stage
from amphigory_tui.domain.workers import parse_worker_id
from amphigory_tui.pool.sink import EventSink
from amphigory_tui.pool.store_thread import StoreThread
from amphigory_tui.services.locks import current_lock, hold_process_lock
from amphigory_tui.services.pipeline import JobResult, JobRunner, StageContext, StopRequested, TranscodePipeline
from amphigory_tui.services.proc import ProcessHandle
from amphigory_tui.services.recovery import run_periodic_checks, summarize
from amphigory_tui.services.runtime import Services
from amphigory_tui.services.signals import SIGNAL_RACE_S, await_stop, outside_stop_exit
from amphigory_tui.store import Store, WriterBusy
from amphigory_tui.store.jobs import Completion

__all__ = ["WorkerPool", "WorkerSnapshot"]

logger = logging.getLogger("amphigory.pool")

T = TypeVar("T")

# Which stop wins when two arrive for one job: a user's cancel beats a pause, a lost lease beats everything.
_STOP_RANK = {"pause": 1, "shutdown": 1, "stall": 2, "cancel": 3, "kill": 4, "lost": 5}
_HARD_STOPS = frozenset({"kill", "stall", "lost"})
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_TICK_S = 1.0
_GAP_TICKS = 3  # a tick this many intervals late means the pool itself was not running
_PROGRESS_WRITE_S = 1.0
_PROGRESS_EVENT_S = 0.25
# The per-job store call runs on the event loop while its running average stays this quick (a local SQLite commit:
# ~0.35 ms, a WAL checkpoint now and then ~10 ms); a slow disk sends these calls to the store thread for a while.
_INLINE_SLOW_S = 0.002
_INLINE_PAUSE_S = 30.0


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One local claim loop as the Workers tab shows it."""

    worker_id: str
    state: str
    job_id: int | None = None
    job_name: str | None = None
    stage: Stage | None = None
    percent: float = 0.0
    fps: float | None = None
    avg_fps: float | None = None
    eta_s: float | None = None


class _Worker:
    """One claim loop."""

    __slots__ = ("id", "retiring", "run", "state")

    def __init__(self, worker_id: str) -> None:
        self.id = worker_id
        self.state = "starting"
        self.run: _JobRun | None = None
        self.retiring = False


class _JobRun:
    """One attempt at one job, as the pool runs it; the ``StageContext`` its runner sees."""

    def __init__(self, pool: WorkerPool, worker: _Worker, job: Job) -> None:
        self._pool = pool
        self.job = job
        self.worker_id = worker.id
        self.stop_event = threading.Event()
        self.scope = anyio.CancelScope()
        self.stage: Stage | None = None
        self.current = Progress(percent=0.0)
        self.seen_progress = False
        now = pool.clock.monotonic()
        self.started = now
        self.last_advance = now
        self.last_write = now
        self.last_event = 0.0
        self.dirty = False
        self.handle: ProcessHandle | None = None
        self.last_handle: ProcessHandle | None = None  # [lifecycle] how the last child ended (shutdown race)
        self.stop_reason: str | None = None
        self.critical_depth = 0
        self.finishing = False
        self.resume_after_pause = False

    # ------------------------------------------------------------------ StageContext
    async def set_stage(self, stage: Stage, **fields: Any) -> None:
        """Enter a stage: written to the job (progress restarts at 0) and announced."""
        self.stage = stage
        self.current = Progress(percent=0.0)
        self.seen_progress = False
        self.dirty = False
        self.last_event = 0.0  # a new stage's first progress is shown at once, not up to 0.25 s later
        self.last_advance = self.last_write = self._pool.clock.monotonic()
        store = self._pool.store
        await anyio.to_thread.run_sync(
            partial(store.jobs.update_running, self.job.id, self.worker_id, stage=stage, **fields)
        )
        self._pool.emit(JobChanged(self.job.id, JobStatus.RUNNING, stage))

    async def update(self, **fields: Any) -> None:
        """Write running-job fields."""
        store = self._pool.store
        await anyio.to_thread.run_sync(partial(store.jobs.update_running, self.job.id, self.worker_id, **fields))

    def progress(self, progress: Progress) -> None:
        """Record progress in memory; the pool writes it (≤ 1/s) and emits it (≤ 4/s)."""
        now = self._pool.clock.monotonic()
        if progress.percent > self.current.percent or not self.seen_progress:
            self.last_advance = now
        self.seen_progress = True
        self.current = progress
        self.dirty = True
        if now - self.last_event >= _PROGRESS_EVENT_S and self.stage is not None:
            self.last_event = now
            self._pool.emit(
                JobProgress(
                    self.job.id,
                    self.worker_id,
                    self.stage,
                    progress.percent,
                    progress.fps,
                    progress.avg_fps,
                    progress.eta_s,
                )
            )

    def activity(self) -> None:
        """Output from the tool counts as life only until its first progress record."""
        if not self.seen_progress:
            self.last_advance = self._pool.clock.monotonic()

    def attach_process(self, handle: ProcessHandle | None) -> None:
        """Remember the child (to signal it) and record its pid + start time on the job at once (recovery)."""
        self.handle = handle
        if handle is None:
            return
        self.last_handle = handle  # [lifecycle]
        if self.stop_reason is not None:
            handle.kill(reason=self.stop_reason)  # the stop came while the tool was starting
            return
        store = self._pool.store
        self._pool.submit(
            partial(
                store.jobs.update_running,
                self.job.id,
                self.worker_id,
                child_pid=handle.pid,
                child_start_ticks=handle.start_ticks,
            )
        )

    def log(
        self, message: str, *, level: str = "info", event_type: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """A processing-log line for this job."""
        self._pool.log(message, level=level, job_id=self.job.id, event_type=event_type, details=details)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """While inside, a stop only sets ``stop_event`` (the library swap is never cut in half)."""
        self.critical_depth += 1
        try:
            yield
        finally:
            self.critical_depth -= 1


_UNSET: Any = object()


class _PendingCompletion:
    """A worker's completion waiting for the group commit."""

    __slots__ = ("item", "lead", "result", "wake")

    def __init__(self, item: Completion) -> None:
        self.item = item
        self.wake = anyio.Event()
        self.lead = False
        self.result: Any = _UNSET


class _UnsupportedRunner:
    """Fails jobs of a kind this worker cannot run, with a clear reason."""

    async def run(self, ctx: StageContext) -> JobResult:
        """Refuse."""
        raise JobError(f"{ctx.job.kind.value} jobs are not supported by this worker yet", permanent=True)

    async def finalize(self, ctx: StageContext, result: JobResult) -> None:
        """Nothing."""

    async def cleanup(self, ctx: StageContext) -> None:
        """Nothing."""


class WorkerPool:
    """N claim loops over the job queue, with heartbeats, a stall watchdog and pause/cancel/shutdown.

    Args:
        services_or_store: the process's ``Services`` (or just its ``Store``).
        settings: ``workers.*``, ``jobs.*``, ``transcode.*``, ``tools.*``, ``paths.*`` are used.
        sink: receives ``JobProgress``, ``JobChanged``, ``WorkerBeat`` and ``LogRecord`` events.
        clock: defaults to the store's clock (stall detection uses its ``monotonic``).
        runner: run every job with this runner instead of the per-kind default (``NoopRunner`` for benchmarks).
        runners: per-kind runners (default: ``TranscodePipeline`` for transcode jobs).
        size: number of claim loops (default ``workers.count``); ``set_size`` changes it live.
        drain: exit ``run()`` once nothing is claimable, nothing waits for a retry and nothing runs here.
    """

    def __init__(
        self,
        services_or_store: Services | Store,
        settings: Settings,
        sink: EventSink,
        *,
        clock: Clock | None = None,
        runner: JobRunner | None = None,
        runners: Mapping[JobKind, JobRunner] | None = None,
        size: int | None = None,
        drain: bool = False,
    ) -> None:
        self.store: Store = services_or_store.store if isinstance(services_or_store, Services) else services_or_store
        # [lifecycle] With full services the pool also runs the periodic recovery checks (services/recovery.py).
        self._services = services_or_store if isinstance(services_or_store, Services) else None
        self.settings = settings
        self.sink = sink
        self.clock: Clock = clock or (
            services_or_store.clock if isinstance(services_or_store, Services) else self.store.clock
        )
        self.drain = drain
        self._store_thread = StoreThread()  # the per-job store calls: a cheaper hand-off than to_thread
        self._inline_from = 0.0  # monotonic time from which _hot() tries the event loop again
        self._inline_cost = 0.0  # running average of _hot()'s inline calls, seconds
        self._runner = runner
        self._runners: dict[JobKind, JobRunner] = dict(runners or {})
        if runner is None and JobKind.TRANSCODE not in self._runners:
            self._runners[JobKind.TRANSCODE] = TranscodePipeline(settings, self.store)
        self._unsupported = _UnsupportedRunner()
        self._target = settings.workers.count if size is None else max(0, size)
        self._workers: list[_Worker] = []
        self._runs: dict[int, _JobRun] = {}
        self._stopping = False
        self._paused = False
        self._paused_jobs: set[int] = set()
        self._started = False
        self.drained = False
        """True once ``run()`` ended because drain mode found nothing left."""
        self._wake: anyio.Event | None = None
        self._finished: anyio.Event | None = None
        self._bg_send: MemoryObjectSendStream[Callable[[], object]] | None = None
        self._log_buffer: list[tuple[LogRecord, str, dict[str, Any] | None]] = []
        self._completions: list[_PendingCompletion] = []
        self._flushing = False
        self._min_level = _LEVELS.get(settings.logging.level, 20)
        self.timings: dict[str, float] = {}
        """Seconds spent per kind of work (claim, complete, run, finish, heartbeat, logs…), for benchmarks."""
        self.counts: dict[str, int] = {}
        """How many times each timed kind of work ran."""

    # ------------------------------------------------------------------ public API
    @property
    def size(self) -> int:
        """The number of claim loops the pool aims for."""
        return self._target

    @property
    def stopping(self) -> bool:
        """Whether the pool has stopped claiming for good (shutdown or drained)."""
        return self._stopping

    @property
    def paused(self) -> bool:
        """Whether ``pause_all`` holds the pool."""
        return self._paused

    def set_size(self, n: int) -> None:
        """Change the number of claim loops live: surplus loops finish their current job, then exit."""
        self._target = max(0, int(n))
        self._notify()

    def running_job_ids(self) -> list[int]:
        """Jobs this process is running now."""
        return sorted(self._runs)

    def snapshot(self) -> list[WorkerSnapshot]:
        """The local claim loops: state, job, stage, percent, fps, ETA (for the Workers tab)."""
        out: list[WorkerSnapshot] = []
        for w in self._workers:
            run = w.run
            if run is None:
                out.append(WorkerSnapshot(w.id, "retiring" if w.retiring and w.state == "idle" else w.state))
                continue
            p = run.current
            out.append(
                WorkerSnapshot(
                    w.id,
                    "stopping" if run.stop_reason else w.state,
                    run.job.id,
                    run.job.name,
                    run.stage,
                    p.percent,
                    p.fps,
                    p.avg_fps,
                    p.eta_s,
                )
            )
        return out

    def pause_job(self, job_id: int) -> bool:
        """In-process fast path of a pause: False when this process does not run the job (use JobStore.pause)."""
        run = self._runs.get(job_id)
        return run is not None and self._stop(run, "pause")

    def cancel_job(self, job_id: int, kill: bool = False) -> bool:
        """In-process fast path of cancel (``kill``: no grace); False when the job does not run here."""
        run = self._runs.get(job_id)
        return run is not None and self._stop(run, "kill" if kill else "cancel", grace=not kill)

    def pause_all(self) -> None:
        """Stop claiming and pause every running job (no attempt used); ``resume_all`` undoes both."""
        self._paused = True
        for run in list(self._runs.values()):
            if self._stop(run, "pause"):
                self._paused_jobs.add(run.job.id)
        self._notify()

    def resume_all(self) -> None:
        """Claim again, and requeue the jobs ``pause_all`` paused."""
        self._paused = False
        for job_id in sorted(self._paused_jobs):
            run = self._runs.get(job_id)
            if run is not None:
                run.resume_after_pause = True  # still stopping: resumed right after its pause is recorded
            else:
                self.submit(partial(self._resume_quietly, job_id))
        self._paused_jobs.clear()
        self._notify()

    async def shutdown(self, *, pause_running: bool = True, grace: bool = True) -> None:
        """Stop claiming; pause running jobs (tools: polite signal → grace → SIGKILL; ``grace=False``: SIGKILL
        now), delete their partial outputs, record them paused with no attempt used; return once ``run()`` ended.

        With ``pause_running=False`` running jobs are left to finish. Calling it again with ``grace=False`` (a
        second signal) kills whatever is still stopping.
        """
        self._stopping = True
        for run in list(self._runs.values()):
            if pause_running:
                self._stop(run, "shutdown", grace=grace)
            elif not grace and run.handle is not None:
                run.handle.kill(reason="shutdown")
        self._notify()
        if self._finished is not None:
            await self._finished.wait()

    async def run(self) -> None:
        """Run the claim loops until ``shutdown()`` (or, in drain mode, until nothing is left)."""
        if self._started:
            raise RuntimeError("a WorkerPool runs only once")
        self._started = True
        self._wake = anyio.Event()
        self._finished = anyio.Event()
        send, receive = anyio.create_memory_object_stream[Callable[[], object]](math.inf)
        self._bg_send = send
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._background_writes, receive)
                tg.start_soon(self._tick_loop)
                tg.start_soon(self._heartbeat_loop)
                if self._services is not None:
                    tg.start_soon(self._lifecycle_checks)  # [lifecycle]
                await self._supervise(tg)
                tg.cancel_scope.cancel()
        finally:
            self._bg_send = None
            send.close()
            with anyio.CancelScope(shield=True):
                await self._flush_logs()
            self._store_thread.close()
            self._finished.set()

    # ------------------------------------------------------------------ events, logs, background writes
    def emit(self, event: Event) -> None:
        """Send one event to the sink (a failing sink is logged, never fatal)."""
        try:
            self.sink.emit(event)
        except Exception:
            logger.exception("event sink failed")

    def log(
        self,
        message: str,
        *,
        level: str = "info",
        job_id: int | None = None,
        event_type: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        """A line for the Log tab (event now) and the processing log (written within a second)."""
        record = LogRecord(level=level, message=message, job_id=job_id, created_at=self.clock.now())
        self.emit(record)
        if _LEVELS.get(level, 20) >= self._min_level:
            self._log_buffer.append((record, event_type, details))

    def submit(self, fn: Callable[[], object]) -> None:
        """Run a blocking store call soon, in order, in a thread (errors are logged)."""
        if self._bg_send is not None:
            self._bg_send.send_nowait(fn)
        else:
            with contextlib.suppress(AmphigoryError):
                fn()

    async def _background_writes(self, receive: MemoryObjectReceiveStream[Callable[[], object]]) -> None:
        async with receive:
            async for fn in receive:
                try:
                    await anyio.to_thread.run_sync(fn)
                except AmphigoryError as exc:
                    logger.debug("background write refused: %s", exc)

    async def _flush_logs(self) -> None:
        if not self._log_buffer:
            return
        entries, self._log_buffer = self._log_buffer, []
        try:
            await self._timed("logs", partial(self.store.log.append_many, entries))
        except AmphigoryError as exc:
            logger.warning("could not write %d log lines: %s", len(entries), exc)

    async def _timed(self, what: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return await self._store_thread.call(fn)
        finally:
            self._account(what, started)

    async def _hot(self, what: str, fn: Callable[..., T]) -> T:
        """A per-job store call (``fn`` takes ``wait``): on the event loop when the writer is free this instant,
        else in the store thread.

        The two thread wake-ups of a hand-off cost as much as the commit's own work (~0.15 ms of a no-op job's
        0.6 on this VM, bench/pool_noop.py), which is what Huey saves by running its queue calls in its worker
        thread. ``wait=False`` never blocks on a lock; only the commit's fsync is waited for here.
        """
        if self.clock.monotonic() >= self._inline_from:
            started = time.perf_counter()
            try:
                result: T = fn(wait=False)
            except WriterBusy:
                pass
            else:
                self._inline_cost = 0.9 * self._inline_cost + 0.1 * (time.perf_counter() - started)
                if self._inline_cost > _INLINE_SLOW_S:
                    self._inline_from = self.clock.monotonic() + _INLINE_PAUSE_S
                    self._inline_cost = 0.0
                self._account(what, started)
                return result
        return await self._timed(what, partial(fn, wait=True))

    def _account(self, what: str, started: float) -> None:
        self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - started
        self.counts[what] = self.counts.get(what, 0) + 1

    def _resume_quietly(self, job_id: int) -> None:
        with contextlib.suppress(AmphigoryError):
            self.store.jobs.resume(job_id)

    # ------------------------------------------------------------------ loops
    def _notify(self) -> None:
        if self._wake is not None:
            self._wake.set()
            self._wake = anyio.Event()

    async def _wait(self, timeout: float | None) -> None:
        event = self._wake
        if event is None:
            return
        with anyio.move_on_after(timeout):
            await event.wait()

    def _may_claim(self, worker: _Worker) -> bool:
        return not (self._stopping or self._paused or worker.retiring)

    async def _supervise(self, tg: TaskGroup) -> None:
        """Keep ``size`` claim loops alive; retire surplus ones (idle first); return when stopped and all exited."""
        while True:
            if self._stopping:
                if not self._workers:
                    return
            else:
                active = [w for w in self._workers if not w.retiring]
                while len(active) < self._target:
                    # [lifecycle] Worker ids name this process's flock (services/locks.py), so every other
                    # amphigory can tell exactly whether this loop's owner is alive.
                    worker = _Worker(hold_process_lock().new_worker_id())
                    self._workers.append(worker)
                    active.append(worker)
                    tg.start_soon(self._worker_loop, worker)
                surplus = len(active) - self._target
                if surplus > 0:
                    for worker in sorted(active, key=lambda w: w.run is not None)[:surplus]:
                        worker.retiring = True
                    self._notify()
                    continue
            await self._wait(None)

    def _set_state(self, worker: _Worker, state: str, job_id: int | None = None) -> None:
        if worker.state != state:
            worker.state = state
            self.emit(WorkerBeat(worker.id, state, job_id))

    async def _worker_loop(self, worker: _Worker) -> None:
        host, pid = parse_worker_id(worker.id) or ("?", 0)
        try:
            interval = self.settings.workers.heartbeat_interval_s
            register = partial(self.store.workers.register, worker.id, host, pid, heartbeat_interval_s=interval)
            await anyio.to_thread.run_sync(register)
            job: Job | None = None
            while True:
                if job is None:
                    if self._stopping or worker.retiring:
                        break
                    if self._paused:
                        self._set_state(worker, "paused")
                        await self._wait(None)
                        continue
                    job = await self._hot("claim", partial(self.store.jobs.claim, worker.id))
                    if job is None:
                        self._set_state(worker, "idle")
                        if self.drain and await self._drain_finished():
                            self.drained = True
                            self._stopping = True
                            self._notify()
                            break
                        await self._wait(self.settings.workers.poll_interval_s)
                        continue
                job = await self._execute(worker, job)
        except AmphigoryError as exc:
            # The database went away (or similar): this loop stops; the supervisor starts a fresh one.
            logger.error("worker %s stopped: %s", worker.id, exc)
            self.log(f"worker {worker.id} stopped: {exc}", level="error")
            with anyio.CancelScope(shield=True):
                await anyio.sleep(self.settings.workers.poll_interval_s)
        finally:
            worker.state = "stopped"
            self._workers.remove(worker)
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(AmphigoryError):
                    await anyio.to_thread.run_sync(partial(self.store.workers.unregister, [worker.id]))
            self.emit(WorkerBeat(worker.id, "stopped"))
            self._notify()

    async def _drain_finished(self) -> bool:
        if any(w.run is not None for w in self._workers):
            return False
        return await anyio.to_thread.run_sync(self.store.jobs.pending_later) == 0

    async def _tick_loop(self) -> None:
        """About once a second: control requests, stalls, progress writes, log flush."""
        last = self.clock.monotonic()
        while True:
            await anyio.sleep(_TICK_S)
            now = self.clock.monotonic()
            if now - last > _TICK_S * _GAP_TICKS:
                # This process was not running (SIGSTOP, a paused VM, a blocked loop): nobody watched the tools, so
                # the missing progress is no evidence against them. They get a fresh stall window, and the next
                # heartbeat says whether another worker took a job over meanwhile.
                for run in self._runs.values():
                    run.last_advance = now
            last = now
            try:
                await self._poll_controls()
                self._check_stalls()
                now = self.clock.monotonic()
                due = [r for r in self._runs.values() if r.dirty and now - r.last_write >= _PROGRESS_WRITE_S]
                if due:
                    await self._beat(due, with_workers=False)
                await self._flush_logs()
            except AmphigoryError as exc:
                logger.warning("pool tick: %s", exc)

    async def _lifecycle_checks(self) -> None:
        """[lifecycle] Every ``stall_check_interval_s``: jobs of dead owners, and of owners silent for stall_timeout
        (frozen processes elsewhere), are recovered; this pool's own jobs are left to ``_check_stalls``."""
        assert self._services is not None

        def on_report(report: Any) -> None:
            self.emit(LogRecord(level="warning", message=summarize(report), created_at=self.clock.now()))
            self._notify()  # requeued jobs may be claimable at once

        await run_periodic_checks(self._services, lock=current_lock(), on_report=on_report)

    async def _heartbeat_loop(self) -> None:
        """Every ``heartbeat_interval_s``: one transaction with every running job's heartbeat and every worker."""
        while True:
            await anyio.sleep(self.settings.workers.heartbeat_interval_s)
            try:
                await self._beat(list(self._runs.values()), with_workers=True)
            except AmphigoryError as exc:
                logger.warning("heartbeat: %s", exc)

    async def _beat(self, runs: list[_JobRun], *, with_workers: bool) -> None:
        runs = [r for r in runs if not r.finishing]
        beats = [(r.job.id, r.worker_id, r.current) for r in runs]
        workers: list[tuple[str, str, int | None]] = []
        if with_workers:
            for w in self._workers:
                workers.append((w.id, "busy" if w.run is not None else "idle", w.run.job.id if w.run else None))
        if not beats and not workers:
            return
        now = self.clock.monotonic()
        lost = await self._timed("heartbeat", partial(self.store.jobs.heartbeat_many, beats, workers))
        for r in runs:
            r.dirty = False
            r.last_write = now
        for job_id in lost:
            run = self._runs.get(job_id)
            if run is not None and not run.finishing:
                self.log(
                    f"lost the lease of job {job_id} (another process took it over); stopping it here",
                    level="warning",
                    job_id=job_id,
                )
                self._stop(run, "lost", grace=False)
        if with_workers:
            for w in self._workers:
                self.emit(WorkerBeat(w.id, w.state, w.run.job.id if w.run else None))

    async def _poll_controls(self) -> None:
        owners = [r.worker_id for r in self._runs.values() if not r.finishing]
        if not owners:
            return
        requests = await self._timed("controls", partial(self.store.jobs.control_requests, owners))
        for job_id, request in requests.items():
            run = self._runs.get(job_id)
            if run is None or run.finishing:
                continue
            if request == "pause":
                self._stop(run, "pause")
            elif request == "cancel":
                self._stop(run, "cancel")
            elif request == "kill":
                self._stop(run, "kill", grace=False)

    def _check_stalls(self) -> None:
        timeout = self.settings.workers.stall_timeout_s
        now = self.clock.monotonic()
        for run in list(self._runs.values()):
            if run.finishing or run.stop_reason is not None or run.critical_depth:
                continue
            if now - run.last_advance > timeout:
                stage = run.stage.value if run.stage else "start"
                self.log(
                    f"stalled: no progress for {timeout} s in stage {stage}; killing its process",
                    level="warning",
                    job_id=run.job.id,
                )
                self._stop(run, "stall", grace=False)

    # ------------------------------------------------------------------ one job
    def _stop(self, run: _JobRun, reason: str, *, grace: bool = True) -> bool:
        """Ask a running job to stop; the higher-ranked reason wins. Returns False if it is already finishing."""
        if run.finishing:
            return False
        current = run.stop_reason
        if current is not None and _STOP_RANK[reason] <= _STOP_RANK[current]:
            if not grace and run.handle is not None and run.critical_depth == 0:
                run.handle.kill(reason=current)  # a second signal: skip what is left of the grace period
            return True
        run.stop_reason = reason
        run.stop_event.set()
        if run.critical_depth:
            return True
        if (not grace or reason in _HARD_STOPS) and run.handle is not None:
            run.handle.kill(reason=reason)
        run.scope.cancel()
        return True

    def _runner_for(self, job: Job) -> JobRunner:
        if self._runner is not None:
            return self._runner
        return self._runners.get(job.kind, self._unsupported)

    async def _execute(self, worker: _Worker, job: Job) -> Job | None:
        """Run one claimed job to a recorded outcome; returns the next job claimed in the same commit, if any."""
        run = _JobRun(self, worker, job)
        worker.run = run
        self._runs[job.id] = run
        self._set_state(worker, "running", job.id)
        self.emit(JobChanged(job.id, JobStatus.RUNNING, None, f"attempt {job.attempts} on {worker.id}"))
        if self._stopping:
            self._stop(run, "shutdown")
        runner = self._runner_for(job)
        result: JobResult | None = None
        error: Exception | None = None
        started = time.perf_counter()
        try:
            with run.scope:
                result = await runner.run(run)
        except StopRequested:
            pass
        except Exception as exc:
            error = exc
            # [lifecycle] The shutdown race (services/signals.py): under KillMode=control-group the service manager
            # signals the tool too, and it may die before our own handler runs. Give the shutdown a moment to show
            # up: then the job is paused with no attempt used instead of failed.
            last = run.last_handle
            if run.stop_reason is None and last is not None and outside_stop_exit(last.returncode, last.killed_by):
                await await_stop(run.stop_event, SIGNAL_RACE_S)
        except BaseException:
            # The pool itself is being cancelled from outside (the app is closing): pause the job, then go.
            run.finishing = True
            if run.stop_reason is None:
                run.stop_reason = "shutdown"
            with anyio.CancelScope(shield=True):
                await self._finish(worker, run, runner, None, None)
            raise
        self.timings["run"] = self.timings.get("run", 0.0) + time.perf_counter() - started
        run.finishing = True
        following: Job | None = None
        with anyio.CancelScope(shield=True):
            following = await self._finish(worker, run, runner, result, error)
        return following

    async def _finish(
        self, worker: _Worker, run: _JobRun, runner: JobRunner, result: JobResult | None, error: Exception | None
    ) -> Job | None:
        """Record how the attempt ended: completed / paused / canceled / failed (retry) / skipped."""
        job, wid = run.job, run.worker_id
        started = time.perf_counter()
        try:
            if result is not None and run.stop_reason != "lost":
                return await self._complete(worker, run, runner, result)
            await runner.cleanup(run)
            reason = run.stop_reason
            if isinstance(error, StaleLease):
                reason = "lost"
            if reason in ("pause", "shutdown"):
                why = PauseReason.USER if reason == "pause" else PauseReason.SHUTDOWN
                await self._timed("finish", partial(self.store.jobs.pause_running, job.id, wid, why))
                self.emit(JobChanged(job.id, JobStatus.PAUSED, run.stage, f"paused ({why.value})"))
                self.log(f"paused ({why.value}) in stage {_stage(run)}; no attempt used", job_id=job.id)
                if run.resume_after_pause:
                    await anyio.to_thread.run_sync(partial(self._resume_quietly, job.id))
            elif reason in ("cancel", "kill"):
                text = "canceled by user" if reason == "cancel" else "killed by user"
                done = await self._timed("finish", partial(self.store.jobs.cancel_running, job.id, wid, text))
                text = done.error_message or text  # a requester's reason ("source file changed on disk")
                self.emit(JobChanged(job.id, JobStatus.CANCELED, run.stage, text))
                self.log(f"{text} in stage {_stage(run)}; temp files removed", job_id=job.id)
            elif reason == "stall":
                timeout = self.settings.workers.stall_timeout_s
                text = f"stalled: no progress for {timeout} s in stage {_stage(run)}; its process was killed"
                await self._record_failure(run, JobError(text))
            elif reason == "lost":
                self.log("stopped here: another worker owns the job now", level="warning", job_id=job.id)
            else:
                await self._record_failure(run, _as_job_error(run, error))
        except StaleLease as exc:
            self.log(f"outcome not recorded: {exc}", level="warning", job_id=job.id)
        except AmphigoryError as exc:
            self.log(f"outcome not recorded ({exc}); recovery will requeue the job", level="error", job_id=job.id)
        finally:
            self.timings["finish"] = self.timings.get("finish", 0.0) + time.perf_counter() - started
            self._runs.pop(job.id, None)
            worker.run = None
            self._set_state(worker, "idle")
        return None

    async def _complete(self, worker: _Worker, run: _JobRun, runner: JobRunner, result: JobResult) -> Job | None:
        job, wid = run.job, run.worker_id
        if run.stop_reason is not None:
            self.log(
                f"{run.stop_reason} came after the new file was placed: the job completes", level="info", job_id=job.id
            )
        nxt = await self._complete_grouped(
            Completion(
                job.id,
                wid,
                claim_next=self._may_claim(worker),
                output_path=result.output_path,
                output_size=result.output_size,
                duration_s=result.duration_s,
                encode_time_s=result.encode_time_s,
                avg_fps=result.avg_fps,
            )
        )
        summary = _summary(result)
        self.emit(JobChanged(job.id, JobStatus.COMPLETED, run.stage, summary))
        self.log(f"completed{': ' + summary if summary else ''}", job_id=job.id, event_type="completed")
        await runner.finalize(run, result)
        return nxt

    async def _complete_grouped(self, item: Completion) -> Job | None:
        """``complete_and_claim`` with group commit: completions that arrive while one is being written are
        written together in the next transaction (one fsync for all of them), by the first of their workers."""
        pending = _PendingCompletion(item)
        self._completions.append(pending)
        if self._flushing:
            await pending.wake.wait()  # the result is in, or this worker was made the next flusher
        else:
            self._flushing = True
            pending.lead = True
        if pending.lead and pending.result is _UNSET:
            # One round of the event loop first: workers that finished meanwhile join this commit (an inline
            # commit blocks the loop, so without it nobody could join while it is written).
            await anyio.lowlevel.checkpoint()
            batch, self._completions = self._completions, []
            try:
                results: list[Any] = list(
                    await self._hot(
                        "complete", partial(self.store.jobs.complete_and_claim_many, [p.item for p in batch])
                    )
                )
            except BaseException as exc:
                results = [exc] * len(batch)
            for waiting, outcome in zip(batch, results, strict=True):
                waiting.result = outcome
                waiting.wake.set()
            if self._completions:
                successor = self._completions[0]
                successor.lead = True
                successor.wake.set()
            else:
                self._flushing = False
        if isinstance(pending.result, BaseException):
            raise pending.result
        return cast(Job | None, pending.result)

    async def _record_failure(self, run: _JobRun, error: JobError) -> None:
        job, wid = run.job, run.worker_id
        message = str(error)
        if error.skip:
            await self._timed("finish", partial(self.store.jobs.skip, job.id, wid, message))
            self.emit(JobChanged(job.id, JobStatus.SKIPPED, run.stage, message))
            self.log(f"skipped: {message}", job_id=job.id, event_type="skipped")
            return
        after = await self._timed(
            "finish", partial(self.store.jobs.fail, job.id, wid, message, permanent=error.permanent)
        )
        if after.status is JobStatus.QUEUED:
            delay = (after.next_attempt_at or 0.0) - self.clock.now()
            what = f"attempt {job.attempts}/{job.max_retries} failed, retry in {max(delay, 0):.0f} s: {message}"
            self.log(what, level="warning", job_id=job.id, event_type="retry")
        else:
            why = "permanent error" if error.permanent else f"attempt {job.attempts}/{job.max_retries}"
            self.log(f"failed ({why}): {message}", level="error", job_id=job.id, event_type="failed")
        self.emit(JobChanged(job.id, after.status, run.stage, message))
        self._notify()  # a retry may be claimable right away by an idle loop


def _stage(run: _JobRun) -> str:
    return run.stage.value if run.stage else "start"


def _as_job_error(run: _JobRun, error: Exception | None) -> JobError:
    """Any failure as a ``JobError`` (unexpected exceptions are logged with a traceback and retried)."""
    if isinstance(error, JobError):
        return error
    if isinstance(error, AmphigoryError):
        return JobError(str(error), permanent=bool(getattr(error, "permanent", False)))
    logger.error("job %s: unexpected error in stage %s", run.job.id, _stage(run), exc_info=error)
    name = type(error).__name__ if error is not None else "stopped"
    return JobError(f"internal error in stage {_stage(run)} ({name}: {error}); see the log")


def _summary(result: JobResult) -> str:
    if result.output_size is None or not result.source_size:
        return ""
    saved = 100.0 * (1 - result.output_size / result.source_size)
    parts = [f"{result.source_size:,} → {result.output_size:,} bytes (saved {saved:.0f} %)"]
    if result.encode_time_s is not None:
        parts.append(f"encoded in {result.encode_time_s:.1f} s")
    if result.avg_fps:
        parts.append(f"{result.avg_fps:.0f} fps")
    return ", ".join(parts)
