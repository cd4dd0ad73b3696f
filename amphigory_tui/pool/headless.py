"""``amphigory worker``: the pool without a UI — open the services, run the pool, stop cleanly on a signal.

Kept in three plain steps so the lifecycle parts can grow in place: ``startup`` (instance lock, crash recovery),
``_watch_signals`` (SIGINT/SIGTERM/SIGHUP → ``pool.shutdown()``; a second signal skips the grace period) and
``run_worker`` tying them together.
"""

from __future__ import annotations

import logging
import sys
from functools import partial

import anyio
from anyio.abc import TaskGroup

from amphigory_tui.config import Settings
from amphigory_tui.domain.jobs import RecoveryReport
from amphigory_tui.pool.pool import WorkerPool
from amphigory_tui.pool.sink import EventSink, LoggingSink
from amphigory_tui.services.locks import hold_process_lock, release_process_lock
from amphigory_tui.services.recovery import recover, summarize
from amphigory_tui.services.runtime import Services, open_services
from amphigory_tui.services.signals import STOP_SIGNALS, watch_stop_signals

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


async def _watch_signals(pool: WorkerPool, tg: TaskGroup) -> None:
    """[lifecycle] First signal: pause running jobs and stop; a later one: the same without the grace period."""

    def on_stop(graceful: bool) -> None:
        # shutdown() waits for the pool to end: run it beside the watcher so a second signal is still heard.
        tg.start_soon(partial(pool.shutdown, pause_running=True, grace=graceful))

    await watch_stop_signals(on_stop, signals=SIGNALS)


async def _main(pool: WorkerPool) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, pool, tg)
        await pool.run()
        tg.cancel_scope.cancel()


def run_worker(
    settings: Settings, *, workers: int | None = None, drain: bool = False, sink: EventSink | None = None
) -> int:
    """Run the pool headless until a signal (or, with ``drain``, until nothing is left); the exit code."""
    services = open_services(settings)
    try:
        startup(services)
        pool = WorkerPool(services, settings, sink or LoggingSink(), size=workers, drain=drain)
        logger.info(
            "worker started: %d loops%s, database %s", pool.size, ", drain mode" if drain else "", settings.database_url
        )
        anyio.run(_main, pool)
        logger.info("worker stopped%s", " (queue drained)" if pool.drained else "")
    finally:
        services.close()
        release_process_lock()  # [lifecycle] a clean exit leaves no lock file behind
    return 0
