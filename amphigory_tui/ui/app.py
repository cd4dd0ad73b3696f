"""AmphigoryApp: the Scan / Queue / Workers / Log tabs over the job database, with the worker pool running inside.

Nothing here touches the database on the UI thread: every read and write runs in a thread worker that posts a
message back. One poll (every ``ui.poll_interval_s``) reads only the jobs changed since the last one, the worker
registry and new log lines; in-process pool events arrive through the bridge without waiting for it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Footer, Header, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from amphigory_tui.config import Settings
from amphigory_tui.domain.clock import Clock
from amphigory_tui.domain.errors import AmphigoryError
from amphigory_tui.services.runtime import Services
from amphigory_tui.ui.bridge import UiLogHandler, UiSink
from amphigory_tui.ui.commands import AmphigoryCommands
from amphigory_tui.ui.context import UiContext
from amphigory_tui.ui.messages import (
    ActionDone,
    DataChanged,
    JobStatusChanged,
    LogAppended,
    Polled,
    ProgressFlush,
    StartupDone,
    WorkerBeaten,
)
from amphigory_tui.ui.poller import Poller
from amphigory_tui.ui.ports import PoolPort, ScanRunner
from amphigory_tui.ui.tabs.log import LogPane
from amphigory_tui.ui.tabs.queue import QueuePane
from amphigory_tui.ui.tabs.scan import ScanPane
from amphigory_tui.ui.tabs.workers import WorkersPane
from amphigory_tui.ui.theme import DARK, DARK_THEME, LIGHT_THEME, theme_name
from amphigory_tui.ui.widgets.confirm import ConfirmModal
from amphigory_tui.ui.widgets.deferred import DeferredPane

log = logging.getLogger(__name__)

TABS = ("scan", "queue", "workers", "log")
FULL_RELOAD_S = 60.0
"""A full reload of the Queue tab this often, in case another machine's clock hid a change from the poll."""
SHUTDOWN_WAIT_S = 30.0


class AmphigoryApp(App[None]):
    """amphigory's terminal UI."""

    # Absolute, as Posting does: a relative CSS_PATH is resolved next to a subclass's module, not this one.
    CSS_PATH = Path(__file__).parent / "app.tcss"
    TITLE = "amphigory"
    COMMANDS: ClassVar[set[Any]] = App.COMMANDS | {AmphigoryCommands}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "show_tab('scan')", "Scan", id="tab-scan", show=False),
        Binding("2", "show_tab('queue')", "Queue", id="tab-queue", show=False),
        Binding("3", "show_tab('workers')", "Workers", id="tab-workers", show=False),
        Binding("4", "show_tab('log')", "Log", id="tab-log", show=False),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("S", "settings", "Settings", id="settings"),
        Binding("ctrl+t", "toggle_theme", "Light/dark", show=False, id="toggle-theme"),
        Binding("ctrl+r", "reload", "Reload", show=False, id="reload"),
        Binding("q", "request_quit", "Quit", id="quit"),
    ]

    def __init__(
        self,
        services: Services,
        *,
        pool: PoolPort | None = None,
        pool_factory: Callable[[UiSink], PoolPort] | None = None,
        scan_runner: ScanRunner | None = None,
        startup: Callable[[], str | None] | None = None,
        background: Callable[[], Awaitable[None]] | None = None,
        notice: str | None = None,
        clock: Clock | None = None,
        poll: bool = True,
        install_log_handler: bool = True,
        stop_signals: bool = False,
        resume_scan: Callable[[], bool] | None = None,
    ) -> None:
        """``startup`` (blocking: lock, recovery) runs in a thread before the pool starts and returns a notice;
        ``background`` (watch mode) runs beside the pool; ``pool_factory`` builds the pool on our sink;
        ``stop_signals`` makes SIGTERM/SIGHUP pause the pool's jobs and quit (the real app, not tests);
        ``resume_scan`` (asked once startup is done; it must not touch the database) says whether to restart the
        scan an earlier run left interrupted, from its checkpoint."""
        super().__init__()
        self.services = services
        self.sink = UiSink(self)
        self._pool_factory = pool_factory
        self.ctx = UiContext(
            queries=services.queries,
            actions=services.actions,
            clock=clock or services.clock,
            settings=services.settings,
            pool=pool,
            scan_runner=scan_runner,
        )
        self.notice = notice
        self._startup = startup
        self._background = background
        self._poll_enabled = poll
        self._stop_signals = stop_signals
        self._resume_scan = resume_scan
        self._poller: Poller | None = None
        self._log_handler = UiLogHandler(self.sink) if install_log_handler else None
        self._pool_worker: Worker[None] | None = None
        self.started = startup is None
        """Whether startup (recovery) finished and the pool was started."""
        self._quit_after_startup = False
        self.started_loading = False
        """Whether the first frame was painted and the first data load began."""
        # Kept as attributes: app.query_one() searches the active screen, which is a modal now and then.
        self.scan_pane = ScanPane(self.ctx, id="scan-pane")
        self.queue_pane = QueuePane(self.ctx, id="queue-pane")
        self.workers_pane = WorkersPane(self.ctx, id="workers-pane")
        self.log_pane = LogPane(id="log-pane")
        self.register_theme(DARK_THEME)
        self.register_theme(LIGHT_THEME)
        self.theme = theme_name(services.settings.ui.dark)

    @property
    def settings(self) -> Settings:
        """The live settings (the settings screen can change them)."""
        return self.ctx.settings

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        """Header, the four tabs, the footer."""
        yield Header()
        with TabbedContent(initial="queue", id="tabs"):
            # The hidden tabs mount right after the first frame (DeferredPane): the first paint waits only for Queue.
            with TabPane("1 Scan", id="scan"):
                yield DeferredPane(self.scan_pane)
            with TabPane("2 Queue", id="queue"):
                yield self.queue_pane
            with TabPane("3 Workers", id="workers"):
                yield DeferredPane(self.workers_pane)
            with TabPane("4 Log", id="log"):
                yield DeferredPane(self.log_pane)
        # No ctrl+p entry: at 80 columns it pushed Settings and Quit off the line (? lists it with every key).
        yield Footer(compact=True, show_command_palette=False)

    def on_ready(self) -> None:
        """The first frame is on screen: now load data, poll, run startup and the pool (all in workers)."""
        self.started_loading = True
        self.queue_pane.activate()
        if self._poll_enabled:
            # The first poll right away: the Workers and Log tabs have something to show at once.
            self._poller = Poller(self.ctx.queries, self.ctx.clock, self.post_message, self.settings.ui.poll_interval_s)
            self._poller.start()
            self.set_interval(FULL_RELOAD_S, self.reload_all)
        self.set_interval(1.0, self._tick)
        if self._stop_signals:
            # From the start: a SIGTERM/SIGHUP during startup recovery must not kill the process half-way.
            self.run_worker(self._watch_signals(), name="signals", group="signals", exit_on_error=False)
        if self._startup is not None:
            self._run_startup(self._startup)
        else:
            self._begin()

    def on_mount(self) -> None:
        """Keymap, log handler; focus the Queue table."""
        if self.settings.ui.keymap:
            self._apply_keymap(self.settings.ui.keymap)
        if self._log_handler is not None:
            logging.getLogger("amphigory_tui").addHandler(self._log_handler)
        self.queue_pane.table.focus()
        if self.notice:
            self.notify(self.notice, title="Startup", timeout=10)

    @work(thread=True, group="startup", exit_on_error=False)
    def _run_startup(self, startup: Callable[[], str | None]) -> None:
        # Recovery must finish before the pool claims anything: the pool starts when this posts StartupDone.
        self.post_message(StartupDone(startup()))

    @on(StartupDone)
    def _startup_done(self, message: StartupDone) -> None:
        if message.notice:
            self.notify(message.notice, title="Recovery", timeout=15)
        if self._quit_after_startup:
            self.exit()  # a stop signal came during recovery: the pool never starts, nothing is claimed
            return
        self._begin()
        self.reload_all()
        if self._resume_scan is not None and self._resume_scan():
            # After a refresh: the Scan tab mounts lazily just after the first frame.
            self.call_after_refresh(self._resume_interrupted_scan)

    def _resume_interrupted_scan(self) -> None:
        if self.scan_pane.is_mounted and not self.scan_pane.scanning:
            self.notify("Resuming the interrupted scan from its checkpoint…", title="Scan")
            self.scan_pane.action_scan()

    def _begin(self) -> None:
        """Build (after the first paint: importing it is not free) and start the pool, and the background checks."""
        self.started = True
        if self.ctx.pool is None and self._pool_factory is not None:
            self.ctx.pool = self._pool_factory(self.sink)
        pool = self.ctx.pool
        if pool is not None:
            self._pool_worker = self.run_worker(self._run_pool(pool), name="pool", group="pool", exit_on_error=False)
        if self._background is not None:
            self.run_worker(self._background(), name="checks", group="checks", exit_on_error=False)

    async def _watch_signals(self) -> None:
        # SIGTERM or SIGHUP (the SSH session dropped): pause running jobs and quit; a second one hurries. During
        # startup recovery (it runs in a thread and must finish) the app quits as soon as recovery is done.
        from amphigory_tui.services.signals import watch_stop_signals

        async def on_stop(graceful: bool) -> None:
            if not self.started:
                self._quit_after_startup = True
                self.notify("Stopping once startup recovery is done…", title="Stop signal")
            elif graceful:
                self._stop_and_exit()
            elif self.ctx.pool is not None:
                await self.ctx.pool.shutdown(pause_running=True, grace=False)

        await watch_stop_signals(on_stop)

    def _apply_keymap(self, keymap: dict[str, str]) -> None:
        """Remap keys by binding id; an id no binding has is named in a warning instead of being ignored."""
        from amphigory_tui.ui.screens.help import binding_groups

        known = {b.id for _, group in binding_groups() for b in group if b.id}
        unknown = sorted(set(keymap) - known)
        if unknown:
            self.notify(
                f"[ui] keymap: no binding has the id {', '.join(unknown)} (the help screen, ?, lists the ids)",
                severity="warning",
                timeout=10,
                markup=False,
            )
        self.set_keymap(dict(keymap))

    async def _run_pool(self, pool: PoolPort) -> None:
        # The pool is anyio; anyio runs on the asyncio loop Textual already runs, inside this task.
        await pool.run()

    def on_unmount(self) -> None:
        """Stop polling; detach the log handler (tests run many apps in one process)."""
        if self._poller is not None:
            self._poller.stop()
        if self._log_handler is not None:
            logging.getLogger("amphigory_tui").removeHandler(self._log_handler)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Tab keys, settings and reload only on the main screen (not under the settings screen or a dialog)."""
        return action not in ("show_tab", "settings", "reload") or self.screen is self.screen_stack[0]

    # ------------------------------------------------------------------ panes
    def action_show_tab(self, tab: str) -> None:
        """Switch to a tab and focus its table."""
        self.screen_stack[0].query_one(TabbedContent).active = tab
        self._focus_tab(tab)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._focus_tab(event.pane.id or "")

    def _focus_tab(self, tab: str) -> None:
        if self._poller is not None:
            self._poller.want_workers = tab == "workers"
            if tab == "workers":
                self._poller.poke()
        targets: dict[str, Widget] = {
            "scan": self.scan_pane.table,
            "queue": self.queue_pane.table,
            "workers": self.workers_pane.table,
            "log": self.log_pane.view,
        }
        target = targets.get(tab)
        if target is None:
            return
        if not target.is_mounted:
            # The hidden tabs are mounted lazily, just after the first frame: try again after the next one.
            self.call_after_refresh(self._focus_tab, tab)
            return
        if tab == "scan":
            self.scan_pane.activate()
        elif tab == "queue":
            self.queue_pane.activate()
        target.focus()

    # ------------------------------------------------------------------ polling
    def _poll(self) -> None:
        """Poll now (after an action, ctrl+r, a pool event)."""
        if self._poller is not None:
            self._poller.poke()

    @on(Polled)
    def _polled(self, message: Polled) -> None:
        if message.log:
            self.log_pane.add_db(message.log)
        self.queue_pane.apply_changes(message.changed, truncated=message.truncated)
        if message.workers is not None:
            self.workers_pane.apply_poll(message.workers, message.worker_jobs)

    def _tick(self) -> None:
        self.workers_pane.tick()

    def reload_all(self) -> None:
        """Reload every tab's data (after an action, a scan, or as a safety net)."""
        self.queue_pane.request_structure()
        if self.scan_pane.loaded:
            self.scan_pane.request_reload()

    def action_reload(self) -> None:
        """Reload everything now."""
        self.reload_all()
        self._poll()

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        if message.changed:
            self.reload_all()
            self._poll()

    @on(DataChanged)
    def _data_changed(self, message: DataChanged) -> None:
        self.reload_all()

    # ------------------------------------------------------------------ pool events (bridge)
    @on(ProgressFlush)
    def _progress(self, message: ProgressFlush) -> None:
        progress = self.sink.drain_progress()
        if progress:
            self.queue_pane.apply_progress(progress)
            self.workers_pane.apply_progress(progress)

    @on(JobStatusChanged)
    def _job_changed(self, message: JobStatusChanged) -> None:
        self.queue_pane.apply_job_changed(message.event)
        self._poll()

    @on(WorkerBeaten)
    def _beat(self, message: WorkerBeaten) -> None:
        self.workers_pane.apply_beat(message.event)

    @on(LogAppended)
    def _log_appended(self, message: LogAppended) -> None:
        records = message.records + self.sink.drain_log()
        if records:
            self.log_pane.add_local(records)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """One place where a failed worker becomes a message the user can read (Harlequin's error router)."""
        if event.state is not WorkerState.ERROR:
            return
        worker = event.worker
        error = worker.error
        if isinstance(error, AmphigoryError):
            text = str(error)
        else:
            text = f"{type(error).__name__}: {error}"
            log.error("%s failed: %s", worker.name or worker.group, text, exc_info=error)
        if worker.group == "pool":
            text = f"The worker pool stopped: {text}"
        self.notify(text, severity="error", timeout=10)

    # ------------------------------------------------------------------ screens
    def action_help(self) -> None:
        """Every key, per tab."""
        from amphigory_tui.ui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_settings(self) -> None:
        """The settings screen."""
        from amphigory_tui.ui.screens.settings import SettingsScreen

        self.push_screen(SettingsScreen(self.settings, apply=self.apply_settings))

    def action_toggle_theme(self) -> None:
        """Switch between the dark and the light theme."""
        dark = self.current_theme.dark
        self.theme = theme_name(not dark)
        self.ctx.settings = replace(self.settings, ui=replace(self.settings.ui, dark=not dark))

    def apply_settings(self, new: Settings) -> None:
        """Apply what can change live: pool size, theme, poll interval, keymap; the rest at the next start."""
        old = self.settings
        self.ctx.settings = new
        pool = self.ctx.pool
        # Only a change of workers.count itself resizes: applying another key must leave the pool as it is.
        if pool is not None and new.workers.count != old.workers.count and new.workers.count != pool.size:
            pool.set_size(new.workers.count)
        if new.ui.dark != old.ui.dark or self.theme not in (DARK, theme_name(False)):
            self.theme = theme_name(new.ui.dark)
        if new.ui.keymap != old.ui.keymap:
            self._apply_keymap(new.ui.keymap)
        if self._poller is not None:
            self._poller.interval_s = new.ui.poll_interval_s
        if new.logging.level != old.logging.level:
            logging.getLogger("amphigory_tui").setLevel(new.logging.level.upper())
        self.workers_pane.refresh()

    # ------------------------------------------------------------------ quitting
    def running_here(self) -> int:
        """How many jobs this process's pool is running now."""
        pool = self.ctx.pool
        return sum(1 for snap in pool.snapshot() if snap.job_id is not None) if pool is not None else 0

    async def action_quit(self) -> None:
        """ctrl+q: quit the same careful way as `q` (running jobs are paused, not orphaned)."""
        self.action_request_quit()

    def action_help_quit(self) -> None:
        """ctrl+c: in a terminal it is a key, not a signal; quit as `q` does (the Go tool quit on ctrl+c)."""
        self.action_request_quit()

    def action_request_quit(self) -> None:
        """Quit; ask first when this process is running jobs (they are paused and resume at the next start)."""
        running = self.running_here()
        if not running:
            self._stop_and_exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop_and_exit()

        self.push_screen(
            ConfirmModal(
                "Quit amphigory?",
                f"{running} jobs are running in this process. Quitting pauses them; they resume where they "
                "were at the next start."
                if running != 1
                else "1 job is running in this process. Quitting pauses it; it resumes where it was at the next start.",
                yes="Quit",
                no="Stay",
            ),
            answered,
        )

    @work(group="shutdown", exclusive=True, exit_on_error=False)
    async def _stop_and_exit(self) -> None:
        self.scan_pane.cancel_scan()
        pool = self.ctx.pool
        if pool is not None and self._pool_worker is not None:
            self.notify("Stopping workers…", timeout=SHUTDOWN_WAIT_S)
            await pool.shutdown(pause_running=True, grace=True)
            try:
                await self._pool_worker.wait()
            except Exception as exc:  # the pool already reported its own failure through the error router
                log.warning("worker pool ended with %s", exc)
        self.exit()
