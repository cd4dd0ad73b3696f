"""The Scan tab: library roots, last scan, counts, a live scan with progress, and the table of media files."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Input, ProgressBar, Static
from textual.worker import Worker, WorkerState

from amphigory_tui.domain.errors import AmphigoryError, ScanBusy
from amphigory_tui.domain.events import ScanProgress
from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.domain.media import LibraryStats, MediaFile
from amphigory_tui.ui import format as fmt
from amphigory_tui.ui.context import UiContext
from amphigory_tui.ui.messages import (
    ActionDone,
    DataChanged,
    MediaLoaded,
    MediaRowsLoaded,
    ScanFinished,
    ScanProgressed,
)
from amphigory_tui.ui.paging import PagedRows
from amphigory_tui.ui.palette import dim_style, status_style
from amphigory_tui.ui.widgets.virtual_table import Cell, Column, VirtualTable

RELOAD_WHILE_SCANNING_S = 3.0

MEDIA_COLUMNS = (
    Column("name", "File", 12, flex=2, cut="start"),
    Column("codec", "Codec", 6),
    Column("res", "Res", 9),
    Column("size", "Size", 8, align="right"),
    Column("decision", "Decision", 9),
    Column("reason", "Reason", 10, flex=1, min_screen=90),
    Column("priority", "Pri", 3, align="right"),
)


def decision_cell(media: MediaFile, dark: bool) -> Cell:
    """What the rules decided, coloured like the job statuses it leads to."""
    if media.probe_error:
        return ("error", status_style(JobStatus.FAILED, dark))
    if media.should_transcode:
        return ("transcode", status_style(JobStatus.QUEUED, dark))
    if media.reason.startswith("excluded"):
        return ("excluded", dim_style(dark))
    return ("keep", status_style(JobStatus.COMPLETED, dark))


def media_cells(media: MediaFile, dark: bool) -> Sequence[Cell]:
    """One media file as table cells, in ``MEDIA_COLUMNS`` order."""
    probe = media.probe
    res = f"{probe.width}×{probe.height}" if probe.width and probe.height else "—"
    reason = media.probe_error or media.reason
    root = media.root.rstrip("/") + "/"
    # Relative to its library root: "Doctor Who/S01E01.mkv", not a bare and ambiguous "S01E01.mkv".
    shown = media.path[len(root) :] if media.root and media.path.startswith(root) else media.name
    return [
        fmt.printable(shown),
        probe.video_codec or "—",
        res,
        fmt.human_size(media.size_bytes),
        decision_cell(media, dark),
        fmt.printable(reason),
        str(media.priority),
    ]


def library_text(roots: Sequence[str], stats: LibraryStats | None, target: str, dark: bool) -> Text:
    """Roots, last scan and the counts, as three lines."""
    dim = dim_style(dark)
    text = Text()
    text.append("Library  ", style=dim)
    text.append(", ".join(fmt.printable(r) for r in roots) if roots else "no roots configured ([library] roots)")
    text.append("\nLast scan  ", style=dim)
    if stats is None:
        text.append("…")
        return text
    text.append(fmt.clock_time(stats.last_scan_at) if stats.last_scan_at else "never")
    text.append("\n")
    counts = (
        ("files", str(stats.files)),
        ("need transcoding", str(stats.need_transcoding)),
        (f"already {target}", str(stats.already_target)),
        ("excluded", str(stats.excluded)),
        ("probe errors", str(stats.probe_errors)),
        ("total", fmt.human_size(stats.total_bytes)),
        ("est. saving", fmt.human_size(stats.est_saving_bytes)),
    )
    for n, (label, value) in enumerate(counts):
        if n:
            text.append(" · ", style=dim)
        style = Style(bold=True)
        if label == "probe errors" and stats.probe_errors:
            style = status_style(JobStatus.FAILED, dark)
        text.append(value, style=style)
        text.append(f" {label}")
    return text


def progress_text(p: ScanProgress) -> str:
    """One line about a running scan."""
    total = f"/{p.total_estimate}" if p.total_estimate else ""
    eta = f" · ETA {fmt.duration(p.eta_s)}" if p.eta_s is not None else ""
    return (
        f"{p.seen}{total} files · {p.probed} probed · {p.added} new · {p.updated} changed · "
        f"{p.files_per_s:.0f} files/s{eta} · {p.errors} errors · {fmt.printable(p.current_dir)}"
    )


class MediaSource(PagedRows[MediaFile]):
    """The Scan table's rows, loaded by id on demand."""

    def __init__(self, pane: ScanPane) -> None:
        super().__init__(lambda media: media.id)
        self._pane = pane

    def request(self, start: int, stop: int) -> None:
        """Ask the pane to load rows around ``[start, stop)``."""
        self._pane.load_rows(start, stop)


class ScanPane(Vertical):
    """The library and its scanner."""

    BINDING_GROUP_TITLE = "Scan"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "scan", "Scan/cancel", id="scan-toggle"),
        Binding("a", "queue_all", "Queue all", id="queue-all"),
        Binding("slash", "filter", "Filter", id="scan-filter"),
        Binding("t", "needs_only", "Needs work", id="scan-needs-only", tooltip="Needs transcoding only"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="scan-clear-filter"),
    ]

    DEFAULT_CSS = """
    ScanPane { height: 1fr; }
    ScanPane #scan-info { height: auto; padding: 0 1; }
    ScanPane #scan-running { height: auto; display: none; padding: 0 1; }
    ScanPane.-scanning #scan-running { display: block; }
    ScanPane #scan-bar-row { height: 1; }
    ScanPane #scan-bar-row ProgressBar { width: auto; }
    ScanPane #scan-bar-label { width: 1fr; padding-left: 1; color: $success; text-style: bold; }
    ScanPane #scan-status { height: auto; max-height: 2; }
    ScanPane #scan-error { height: auto; color: $error; }
    ScanPane #scan-filters { height: 1; padding: 0 1; }
    ScanPane #scan-filter { display: none; height: 1; border: none; padding: 0 1; margin: 0; }
    ScanPane.-filtering #scan-filter { display: block; }
    """

    scanning: reactive[bool] = reactive(False)
    needs_only: reactive[bool] = reactive(False)
    search: reactive[str] = reactive("")

    def __init__(self, ctx: UiContext, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.ctx = ctx
        self.rows = MediaSource(self)
        self.table: VirtualTable[MediaFile] = VirtualTable(
            MEDIA_COLUMNS, self.rows, media_cells, empty_text="No media files", id="scan-table"
        )
        self.stats: LibraryStats | None = None
        self.last_progress: ScanProgress | None = None
        self.loaded = False
        self._cancel = threading.Event()
        self._gen = 0
        self._load_running = False
        self._dirty = False
        self._reload_timer: Timer | None = None
        self._filter_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        """Library summary, scan progress, filter line, search box and table."""
        yield Static("", id="scan-info")
        with Vertical(id="scan-running"):
            with Horizontal(id="scan-bar-row"):
                yield ProgressBar(total=None, show_eta=False, id="scan-bar")
                yield Static("Scanning…", id="scan-bar-label")
            yield Static("", id="scan-status", markup=False)
            yield Static("", id="scan-error", markup=False)
        yield Static("", id="scan-filters")
        yield Input(placeholder="Filter by path or reason… (Enter: back to the table · Esc: clear)", id="scan-filter")
        yield self.table

    def on_mount(self) -> None:
        """Show what is known without the database; the data loads when the tab is first shown."""
        self._render_info()
        self._render_filters()

    def activate(self) -> None:
        """The tab was shown: load it the first time."""
        if not self.loaded and not self._load_running:
            self.request_reload()

    # ------------------------------------------------------------------ loading
    def request_reload(self) -> None:
        """Reload the id list and the library counts (one load at a time, repeated if asked meanwhile)."""
        if self._load_running:
            self._dirty = True
            return
        self._load_running = True
        self._gen += 1
        self._load(self._gen, self.search, self.needs_only)

    @work(thread=True, group="scan-load", exit_on_error=False)
    def _load(self, generation: int, search: str, needs_only: bool) -> None:
        queries = self.ctx.queries
        ids = queries.media_ids(search=search, needs_transcoding_only=needs_only)
        self.post_message(MediaLoaded(generation, ids, queries.library_stats()))

    @on(MediaLoaded)
    def _loaded(self, message: MediaLoaded) -> None:
        message.stop()
        self._load_running = False
        if message.generation == self._gen:
            keep = self.rows.id_at(self.table.cursor)
            self.rows.set_ids(message.ids)
            # A rescan changes the files' rows: show the fresh ones.
            self.rows.invalidate()
            if keep is not None:
                index = self.rows.index_of(keep)
                if index is not None:
                    self.table.cursor = index
            self.stats = message.stats
            self.loaded = True
            self._render_info()
            self._render_filters()
            self.table.reload()
        if self._dirty:
            self._dirty = False
            self.request_reload()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A failed load or scan must not leave the pane stuck."""
        if event.state not in (WorkerState.ERROR, WorkerState.CANCELLED):
            return
        if event.worker.group == "scan-load":
            self._load_running = False
        elif event.worker.group == "scan-run":
            self.scanning = False

    def load_rows(self, start: int, stop: int) -> None:
        """Load the files of the rows around ``[start, stop)``."""
        wanted = self.rows.to_fetch(start, stop)
        if wanted:
            self._fetch_rows(self.rows.generation, wanted)

    @work(thread=True, group="scan-rows", exit_on_error=False)
    def _fetch_rows(self, generation: int, ids: list[int]) -> None:
        self.post_message(MediaRowsLoaded(generation, self.ctx.queries.media_by_ids(ids), ids))

    @on(MediaRowsLoaded)
    def _rows_loaded(self, message: MediaRowsLoaded) -> None:
        message.stop()
        start, stop = self.table.visible_range()
        self.rows.put(message.files, keep=self.rows.keep_around(start, stop))
        self.rows.forget_pending(message.requested)
        requested = set(message.requested)
        if any(self.rows.id_at(i) in requested for i in range(start, stop)):
            self.table.refresh()

    # ------------------------------------------------------------------ rendering
    def _render_info(self) -> None:
        settings = self.ctx.settings
        dark = self.app.current_theme.dark
        info = library_text(settings.library.roots, self.stats, settings.rules.target_codec, dark)
        self.query_one("#scan-info", Static).update(info)

    def _render_filters(self) -> None:
        text = Text()
        text.append(" All files ", style="" if self.needs_only else "reverse bold")
        text.append(" │ ", style="dim")
        text.append(" Needs transcoding ", style="reverse bold" if self.needs_only else "")
        if self.loaded:
            text.append(f"   {len(self.rows)} shown", style="dim")
        if self.search:
            text.append("   filter: ", style="dim")
            text.append(f"“{fmt.printable(self.search)}”", style="bold")
        self.query_one("#scan-filters", Static).update(text)

    def watch_needs_only(self) -> None:
        """Reload with the toggle."""
        if self.is_mounted:
            self._render_filters()
            self.request_reload()

    def watch_search(self) -> None:
        """Reload with the filter."""
        if self.is_mounted:
            self._render_filters()
            self.request_reload()

    def watch_scanning(self, scanning: bool) -> None:
        """The progress block shows only while scanning."""
        self.set_class(scanning, "-scanning")

    # ------------------------------------------------------------------ scanning
    def action_scan(self) -> None:
        """Start a scan, or cancel the running one."""
        if self.scanning:
            self._cancel.set()
            self.query_one("#scan-bar-label", Static).update("Canceling…")
            self.notify("Canceling the scan…")
            return
        runner = self.ctx.scan_runner
        if runner is None:
            self.notify("Scanning is not available in this process.", severity="error")
            return
        if not self.ctx.settings.library.roots:
            self.notify("No library roots: set [library] roots in the settings (S).", severity="warning")
            return
        self._cancel = threading.Event()
        self.last_progress = None
        self.scanning = True
        self.query_one("#scan-bar-label", Static).update("Scanning…")
        self.query_one("#scan-status", Static).update("Starting…")
        self.query_one("#scan-error", Static).update("")
        self.query_one("#scan-bar", ProgressBar).update(total=None, progress=0)
        self._run_scan(self._cancel)
        self._reload_timer = self.set_interval(RELOAD_WHILE_SCANNING_S, self.request_reload)

    @work(thread=True, group="scan-run", exit_on_error=False)
    def _run_scan(self, cancel: threading.Event) -> None:
        runner = self.ctx.scan_runner
        assert runner is not None
        last: list[ScanProgress] = []

        def on_progress(progress: ScanProgress) -> None:
            last[:] = [progress]
            self.post_message(ScanProgressed(progress))

        try:
            runner(on_progress, cancel)
        except ScanBusy as exc:  # the watch catch-up scan, or another process's: refused before it began
            self.post_message(ScanFinished(None, str(exc), busy=True))
            return
        except AmphigoryError as exc:
            self.post_message(ScanFinished(last[0] if last else None, str(exc)))
            return
        self.post_message(ScanFinished(last[0] if last else None))

    @on(ScanProgressed)
    def _progressed(self, message: ScanProgressed) -> None:
        message.stop()
        self.show_progress(message.progress)

    def show_progress(self, p: ScanProgress) -> None:
        """Update the bar and the status line."""
        self.last_progress = p
        bar = self.query_one("#scan-bar", ProgressBar)
        if p.total_estimate:
            bar.update(total=max(p.total_estimate, p.seen), progress=p.seen)
        self.query_one("#scan-status", Static).update(progress_text(p))
        if p.last_error:
            self.query_one("#scan-error", Static).update(f"Last error: {fmt.printable(p.last_error)}")

    @on(ScanFinished)
    def _finished(self, message: ScanFinished) -> None:
        message.stop()
        self.scanning = False
        if self._reload_timer is not None:
            self._reload_timer.stop()
            self._reload_timer = None
        p = message.progress
        if message.busy:
            # Nothing changed: no reload, and the progress block is already gone with ``scanning``.
            self.notify(f"Not scanning: {message.error}", severity="warning", timeout=10, markup=False)
            return
        if message.error:
            self.notify(f"Scan failed: {message.error}", severity="error", timeout=10, markup=False)
        elif p is not None and p.canceled:
            self.notify(f"Scan canceled after {p.seen} files")
        elif p is not None:
            self.notify(
                f"Scan complete: {p.seen} files, {p.added} new, {p.updated} changed, {p.missing} missing, "
                f"{p.errors} errors"
            )
        else:
            self.notify("Scan complete")
        self.post_message(DataChanged())

    def cancel_scan(self) -> None:
        """Ask a running scan to stop (quitting)."""
        self._cancel.set()

    # ------------------------------------------------------------------ other keys
    def action_queue_all(self) -> None:
        """Queue every file that needs transcoding (as on the Queue tab)."""
        self._queue_all()

    @work(thread=True, group="scan-action", exit_on_error=False)
    def _queue_all(self) -> None:
        count = self.ctx.actions.queue_all()
        text = f"Queued {count} jobs" if count else "Queued 0 jobs — all candidates already queued"
        self.post_message(ActionDone(text))

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        # Not stopped: it bubbles to the app, which reloads every tab whose data changed.
        self.notify(message.text, severity=message.severity)  # type: ignore[arg-type]

    def action_needs_only(self) -> None:
        """Toggle "needs transcoding only"."""
        self.needs_only = not self.needs_only

    def action_filter(self) -> None:
        """Open the filter box."""
        self.add_class("-filtering")
        self.query_one("#scan-filter", Input).focus()

    def action_clear_filter(self) -> None:
        """Clear the filter and go back to the table."""
        box = self.query_one("#scan-filter", Input)
        box.value = ""
        self.remove_class("-filtering")
        self.search = ""
        self.table.focus()

    @on(Input.Changed, "#scan-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        value = event.value.strip()
        self._filter_timer = self.set_timer(0.25, lambda: setattr(self, "search", value))

    @on(Input.Submitted, "#scan-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self.search = event.value.strip()
        if not self.search:
            self.remove_class("-filtering")
        self.table.focus()
