"""``amphigory worker``: the pool without a UI — open the services, run the pool, stop cleanly on a signal.

Kept in three plain steps so the lifecycle parts can grow in place: ``startup`` (instance lock, crash recovery),
``_watch_signals`` (SIGINT/SIGTERM/SIGHUP → ``pool.shutdown()``; a second signal skips the grace period) and
``run_worker`` tying them together. Stop signals are caught from the very start: one that arrives while the
database is opened or startup recovery runs lets that step finish (recovery then runs to its end: its steps are
short transactions, and a kill halfway would only leave work for the next start) and the worker exits 0 without
claiming anything.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from functools import partial
from types import FrameType
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from amphigory_tui.config import Settings
from amphigory_tui.domain.jobs import RecoveryReport
from amphigory_tui.pool.pool import WorkerPool
from amphigory_tui.pool.sink import EventSink, LoggingSink
from amphigory_tui.services.locks import hold_process_lock, release_process_lock
from amphigory_tui.services.recovery import recover, summarize
from amphigory_tui.services.runtime import Services, open_services
from amphigory_tui.services.signals import STOP_SIGNALS, StopState, watch_stop_signals

__all__ = ["configure_logging", "run_worker", "startup"]

logger = logging.getLogger("amphigory.worker")

SIGNALS = STOP_SIGNALS
"""What stops a headless worker: Ctrl-C, the service manager, an SSH session dropping."""


def configure_logging(settings: Settings) -> None:
    """Log to stderr at ``[logging] level`` (timestamps, one line per event)."""
    level = getattr(logging, settings.logging.level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(message)s")


def startup(services: Services) -> RecoveryReport:
    """[lifecycle] Before the first claim: take this process's lock (so everyone sees it alive), then recover.

    Recovery (``services/recovery.py``): leftover tools of dead workers killed, half-done replaces settled, their
    orphaned jobs requeued (or failed at max retries), shutdown-paused jobs resumed, stale temp files removed.
    """
    services.settings.work_dir.mkdir(parents=True, exist_ok=True)
    lock = hold_process_lock()
    report = recover(services, lock=lock)
    level = logging.WARNING if report.notes else logging.INFO
    logger.log(level, "startup recovery: %s", summarize(report))
    return report


class _EarlySignals:
    """Stop signals outside the event loop (opening the database, startup recovery, closing): counted, not fatal.

    Python's defaults would end the process there (SIGTERM: exit -15; SIGINT: a KeyboardInterrupt traceback in the
    middle of a recovery step). Only the main thread may install handlers; elsewhere this does nothing.
    """

    def __init__(self, state: StopState) -> None:
        self.state = state
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        """Count stop signals from now on (again after the event loop restored the defaults on its way out)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            previous = signal.signal(sig, self._received)
            self._previous.setdefault(sig, previous)

    def restore(self) -> None:
        """Put back the handlers that were there before ``install``."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _received(self, signum: int, _frame: FrameType | None) -> None:
        # Only count here: the interrupted code (a recovery transaction) runs on undisturbed.
        self.state.record(signum)


async def _watch_signals(
    pool: WorkerPool, tg: TaskGroup, state: StopState, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """[lifecycle] First signal: pause running jobs and stop; a later one: the same without the grace period."""

    def on_stop(graceful: bool) -> None:
        # shutdown() waits for the pool to end: run it beside the watcher so a second signal is still heard.
        tg.start_soon(partial(pool.shutdown, pause_running=True, grace=graceful))

    await watch_stop_signals(on_stop, state=state, signals=SIGNALS, task_status=task_status)


RESIZE_SIGNALS = {signal.SIGUSR1: +1, signal.SIGUSR2: -1}
"""``kill -USR1`` adds a claim loop to a running ``amphigory worker``, ``kill -USR2`` removes one (it finishes its
job first): the headless counterpart of the Workers tab's ``+``/``-``."""


async def _watch_resize(pool: WorkerPool, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Change the pool size by one per SIGUSR1 / SIGUSR2."""
    with anyio.open_signal_receiver(*RESIZE_SIGNALS) as received:
        task_status.started()
        async for signum in received:
            size = max(0, pool.size + RESIZE_SIGNALS[signal.Signals(signum)])
            pool.set_size(size)
            logger.warning("%s received: %d worker loop%s now", signal.Signals(signum).name, size, "s"[: size != 1])


async def _main(pool: WorkerPool, state: StopState, services: Services | None = None) -> None:
    async with anyio.create_task_group() as tg:
        # start(), not start_soon(): the receivers are in place before the first claim.
        await tg.start(_watch_signals, pool, tg, state)
        await tg.start(_watch_resize, pool)
        if services is not None and services.settings.scanner.watch and not pool.drain:
            # [scanner] watch = true: a catch-up scan (resuming an interrupted one), then new files as they land.
            from amphigory_tui.services.watch import watch_library

            tg.start_soon(partial(watch_library, services.store, services.settings, on_event=pool.emit))
        await pool.run()
        tg.cancel_scope.cancel()


def run_worker(
    settings: Settings, *, workers: int | None = None, drain: bool = False, sink: EventSink | None = None
) -> int:
    """Run the pool headless until a signal (or, with ``drain``, until nothing is left); the exit code."""
    state = StopState()
    early = _EarlySignals(state)
    early.install()  # [lifecycle] before anything that a signal's default action would cut in half
    try:
        services = open_services(settings)
        try:
            if not state.stopping:  # a signal while the database opened: not even a recovery to start
                startup(services)
            if state.stopping:
                name = signal.Signals(state.first_signal or signal.SIGTERM).name
                logger.warning("%s received during startup: exiting without claiming jobs", name)
                return 0
            pool = WorkerPool(services, settings, sink or LoggingSink(), size=workers, drain=drain)
            logger.info(
                "worker started: %d loops%s, database %s",
                pool.size,
                ", drain mode" if drain else "",
                settings.database_url,
            )
            anyio.run(_main, pool, state, services)
            early.install()  # the event loop put the default handlers back: closing must not be cut short either
            logger.info("worker stopped%s", " (queue drained)" if pool.drained else "")
        finally:
            services.close()
            release_process_lock()  # [lifecycle] a clean exit leaves no lock file behind
    finally:
        early.restore()
    return 0
