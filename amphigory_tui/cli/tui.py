"""Starting the TUI: the only place the CLI imports Textual.

The app paints first and does the slow parts after: startup recovery (this process's lock, orphaned jobs, temp
files) runs in a thread worker, and the worker pool starts only once it is done, so nothing is claimed before the
database is consistent. The pool runs inside the app's event loop (anyio on Textual's asyncio) and reports
through the app's bridge; the pool also runs the periodic stall/orphan checks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from amphigory_tui.cli.context import CliContext
from amphigory_tui.domain.events import ScanProgress

if TYPE_CHECKING:
    from amphigory_tui.services.runtime import Services
    from amphigory_tui.ui.app import AmphigoryApp
    from amphigory_tui.ui.bridge import UiSink
    from amphigory_tui.ui.ports import PoolPort


def build_app(services: Services, *, run_pool: bool = True) -> AmphigoryApp:
    """The app with its pool (which also runs the periodic checks), scanner and startup recovery wired in.

    The pool, recovery and scanner modules are imported only when first used (after the first paint).
    """
    from amphigory_tui.ui.app import AmphigoryApp

    prepare_child_processes()
    app_ref: list[AmphigoryApp] = []
    watching = services.settings.scanner.watch
    interrupted: list[bool] = []

    def startup() -> str | None:
        from amphigory_tui.services.locks import hold_process_lock
        from amphigory_tui.services.recovery import recover, summarize

        services.settings.work_dir.mkdir(parents=True, exist_ok=True)
        report = recover(services, lock=hold_process_lock())
        interrupted.append(report.scan_interrupted)
        return summarize(report) if report.changed or report.notes else None

    def scan(on_progress: Callable[[ScanProgress], None], cancel: threading.Event) -> Any:
        from amphigory_tui.services.scanner import Scanner

        # The live settings: roots and rules edited on the settings screen apply to the next scan.
        settings = app_ref[0].settings if app_ref else services.settings
        with Scanner(services.store, settings) as scanner:
            return scanner.scan(cancel=cancel, on_progress=on_progress)

    async def watch() -> None:
        # [scanner] watch = true: the catch-up scan (it resumes an interrupted one), then new files as they land.
        from amphigory_tui.services.watch import watch_library

        await watch_library(services.store, services.settings, on_event=app_ref[0].sink.emit)

    def pool_factory(sink: UiSink) -> PoolPort:
        from amphigory_tui.pool.pool import WorkerPool

        return WorkerPool(services, services.settings, sink)

    app = AmphigoryApp(
        services,
        pool_factory=pool_factory if run_pool else None,
        scan_runner=scan,
        startup=startup,
        stop_signals=run_pool,
        background=watch if watching else None,
        # Without watch mode the Scan tab restarts an interrupted scan itself (with watch, the catch-up scan does).
        resume_scan=lambda: bool(interrupted and interrupted[0]) and not watching,
    )
    app_ref.append(app)
    return app


def prepare_child_processes() -> None:
    """Start multiprocessing's resource tracker now, while ``sys.stderr`` is still the real one.

    The scanner's probe pool uses the forkserver, which starts the resource tracker on first use and passes it
    ``sys.stderr.fileno()``; inside a running Textual app stderr is a capture object whose ``fileno()`` is -1, and
    the start fails with "bad value(s) in fds_to_keep". Started here, it is already running when the scan begins.
    """
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def run_tui(cli: CliContext) -> None:
    """Open the services and run the Textual app until the user quits."""
    services = cli.services()
    build_app(services).run()
