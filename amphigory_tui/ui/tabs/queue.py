"""The Queue tab: the stats line, status sections, path filter, search, and a paged table of jobs.

Every action reads the job under the cursor from the rows the table shows (the Go tool acted on an index into the
unfiltered list, so a filtered view could pause a hidden job). When the list is reloaded the cursor stays on the
same job, so a reorder never moves an action onto another row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Input, Static
from textual.worker import Worker, WorkerState

from amphigory_tui.domain.errors import AmphigoryError
from amphigory_tui.domain.events import JobChanged, JobProgress
from amphigory_tui.domain.jobs import Job, JobStatus, QueueStats
from amphigory_tui.ui import format as fmt
from amphigory_tui.ui.context import UiContext
from amphigory_tui.ui.messages import ActionDone, JobRowsLoaded, QueueLoaded, QueueStatsLoaded
from amphigory_tui.ui.screens.action_menu import ActionMenu
from amphigory_tui.ui.screens.prompt import PromptModal, priority_validator
from amphigory_tui.ui.widgets.confirm import ConfirmModal
from amphigory_tui.ui.widgets.job_table import JobSource, JobTable


@dataclass(frozen=True)
class Section:
    """A status section of the table."""

    key: str
    label: str
    statuses: frozenset[JobStatus] | None


SECTIONS = (
    Section("all", "All", None),
    Section("active", "Active", frozenset({JobStatus.RUNNING, JobStatus.PAUSED})),
    Section("queued", "Queued", frozenset({JobStatus.QUEUED})),
    Section("failed", "Failed", frozenset({JobStatus.FAILED, JobStatus.CANCELED})),
    Section("done", "Done", frozenset({JobStatus.COMPLETED, JobStatus.SKIPPED})),
)
SECTION_BY_KEY = {s.key: s for s in SECTIONS}

PATH_FILTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "all": ("All paths", ()),
    "movies": ("Movies", ("/movies/", "/movie/")),
    "tv": ("TV", ("/tv/", "/tv shows/", "/series/")),
}
PATH_ORDER = ("all", "movies", "tv")


_Filters = tuple[frozenset[JobStatus] | None, str, tuple[str, ...]]
"""What a list of ids was loaded for: the section's statuses, the search text, the path filter."""


@dataclass(frozen=True)
class _Window:
    """Where the cursor is when a reload starts: the rows around it are loaded with the new list."""

    cursor_id: int | None
    cursor: int
    height: int


PRIORITY_STEP = 5
AUTO_RELOAD_S = 1.0
KNOWN_LIMIT = 50_000


def stats_line(stats: QueueStats) -> str:
    """``X files need transcoding · Y queued · Z running · F failed · saved N GB``."""
    return (
        f"{stats.need_transcoding} files need transcoding · {stats.queued} queued · {stats.running} running · "
        f"{stats.failed} failed · saved {fmt.gigabytes(stats.saved_bytes)} GB"
    )


def queue_hint(stats: QueueStats, total_jobs: int) -> str:
    """What to do when nothing is queued or running."""
    if stats.queued or stats.running or stats.paused:
        return ""
    if stats.need_transcoding:
        return f"Press a to queue {stats.need_transcoding} files that need transcoding"
    if total_jobs:
        return ""
    return "Nothing needs transcoding yet. Press 1, then s, to scan the library."


class QueuePane(Vertical):
    """Jobs: what is queued, running, failed and done, and what you can do with each."""

    BINDING_GROUP_TITLE = "Queue"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "queue_all", "Queue all", id="queue-all"),
        Binding("p", "pause", "Pause/resume", id="job-pause", show=False),
        Binding("c", "cancel", "Cancel", id="job-cancel", show=False),
        Binding("r", "retry", "Retry", id="job-retry", show=False),
        Binding("d", "delete", "Delete", id="job-delete", show=False),
        Binding("plus,equals_sign", "priority(1)", "Pri+", id="job-priority-up", show=False),
        Binding("minus,underscore", "priority(-1)", "Pri-", id="job-priority-down", show=False),
        Binding("K", "kill", "Kill", id="job-kill", show=False),
        Binding("i", "details", "Details", id="job-details", show=False),
        Binding("slash", "search", "Search", id="job-search"),
        Binding("f", "path_filter", "Movies/TV", id="job-path-filter"),
        Binding("v", "section", "Section", id="job-section"),
        Binding("P", "bulk('pause')", "Pause matches", id="bulk-pause"),
        Binding("C", "bulk('cancel')", "Cancel matches", id="bulk-cancel"),
        Binding("escape", "clear_search", "Clear search", show=False, id="job-clear-search"),
    ]

    DEFAULT_CSS = """
    QueuePane { height: 1fr; }
    QueuePane #queue-stats { height: auto; padding: 0 1; text-style: bold; }
    QueuePane #queue-hint { height: auto; padding: 0 1; color: $warning; display: none; }
    QueuePane.-empty #queue-hint { display: block; }
    QueuePane #queue-filters { height: auto; padding: 0 1; }
    QueuePane #queue-search { display: none; height: 1; border: none; padding: 0 1; margin: 0; }
    QueuePane.-searching #queue-search { display: block; }
    """

    section: reactive[str] = reactive("all")
    path_filter: reactive[str] = reactive("all")
    search: reactive[str] = reactive("")

    def __init__(self, ctx: UiContext, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.ctx = ctx
        self.rows = JobSource(self._load_rows)
        self.table = JobTable(self.rows, roots=lambda: self.ctx.settings.library.roots, id="queue-table")
        self.counts: dict[JobStatus, int] = {}
        self.stats: QueueStats | None = None
        self.loaded = False
        self._known: dict[int, tuple[JobStatus, bool]] = {}
        self._structure_gen = 0
        self._structure_filters: _Filters | None = None
        self._shown_filters: _Filters | None = None
        """What ``rows.ids`` were loaded for (None before the first list landed)."""
        self._structure_running = False
        self._structure_dirty = False
        self._search_timer: Timer | None = None
        self._soon: Timer | None = None
        self._last_load_started = -AUTO_RELOAD_S

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        """Stats line, empty-queue hint, section bar, search box, the table."""
        yield Static("Loading…", id="queue-stats", markup=False)
        yield Static("", id="queue-hint", markup=False)
        yield Static("", id="queue-filters")
        yield Input(placeholder="Search jobs by file name… (Enter: back to the table · Esc: clear)", id="queue-search")
        yield self.table

    def on_mount(self) -> None:
        """Draw the empty frame; the app asks for the first page right after the first paint (``activate``)."""
        self._render_filters()

    def activate(self) -> None:
        """Load the first page, once (the worker thread would compete with the first paint for the GIL)."""
        if not self.loaded and not self._structure_running:
            self.request_structure()

    # ------------------------------------------------------------------ loading
    def request_structure(self) -> None:
        """Reload the id list, the counts, the stats line and the rows in view; one load at a time, repeated if
        asked meanwhile."""
        if self._structure_running:
            self._structure_dirty = True
            return
        self._structure_running = True
        self._last_load_started = time.monotonic()
        self._structure_gen += 1
        filters = self._filters()
        self._structure_filters = filters
        window = _Window(self.rows.id_at(self.table.cursor), self.table.cursor, max(self.table.body_height, 10))
        self._load_structure(self._structure_gen, *filters, window)

    def _filters(self) -> _Filters:
        return SECTION_BY_KEY[self.section].statuses, self.search, PATH_FILTERS[self.path_filter][1]

    @property
    def list_is_current(self) -> bool:
        """Whether the ids shown were loaded for exactly the current section, search and path filter."""
        return self._shown_filters == self._filters()

    @work(thread=True, group="queue-structure", exit_on_error=False)
    def _load_structure(
        self,
        generation: int,
        statuses: frozenset[JobStatus] | None,
        search: str,
        paths: tuple[str, ...],
        window: _Window,
    ) -> None:
        queries = self.ctx.queries
        ids = queries.job_ids(statuses=statuses, search=search, path_contains=paths)
        # The rows around the cursor come fresh with the list, so what shows is never older than the list.
        try:
            at = ids.index(window.cursor_id) if window.cursor_id is not None else window.cursor
        except ValueError:
            at = window.cursor
        start = max(at - 2 * window.height, 0)
        jobs = queries.jobs_by_ids(ids[start : at + 3 * window.height]) if ids else []
        counts = queries.status_counts()
        self.post_message(QueueLoaded(generation, ids, counts, jobs))
        # The stats line's "need transcoding" count is the slowest query: the rows show before it.
        self.post_message(QueueStatsLoaded(generation, queries.queue_stats()))

    @on(QueueLoaded)
    def _structure_loaded(self, message: QueueLoaded) -> None:
        message.stop()
        if message.generation == self._structure_gen:
            table = self.table
            keep = self.rows.id_at(table.cursor)
            self.rows.set_ids(message.ids)
            # One load runs at a time, so the newest generation's filters are the ones this list was loaded for.
            self._shown_filters = self._structure_filters
            # Rows outside the fresh window may be stale: drop them, they load again when shown.
            self.rows.invalidate()
            self.rows.put(message.jobs)
            for job in message.jobs:
                self._remember(job)
            if keep is not None:
                index = self.rows.index_of(keep)
                if index is not None:
                    table.cursor = index
            self.counts = message.counts
            self.loaded = True
            self._render_filters()
            table.reload()

    @on(QueueStatsLoaded)
    def _stats_loaded(self, message: QueueStatsLoaded) -> None:
        message.stop()
        self._structure_running = False
        # The stats do not depend on the filter: an older load's are still the newest numbers.
        self.stats = message.stats
        self._render_stats()
        if self._structure_dirty:
            self._structure_dirty = False
            self.request_structure()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A failed load must not leave the pane thinking one is still running."""
        if event.worker.group == "queue-structure" and event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self._structure_running = False

    def _load_rows(self, start: int, stop: int) -> None:
        wanted = self.rows.to_fetch(start, stop)
        if wanted:
            self._fetch_rows(self.rows.generation, wanted)

    @work(thread=True, group="queue-rows", exit_on_error=False)
    def _fetch_rows(self, generation: int, ids: list[int]) -> None:
        self.post_message(JobRowsLoaded(generation, self.ctx.queries.jobs_by_ids(ids), ids))

    @on(JobRowsLoaded)
    def _rows_loaded(self, message: JobRowsLoaded) -> None:
        message.stop()
        start, stop = self.table.visible_range()
        self.rows.put(message.jobs, keep=self.rows.keep_around(start, stop))
        self.rows.forget_pending(message.requested)
        for job in message.jobs:
            self._remember(job)
        requested = set(message.requested)
        if any(self.rows.id_at(i) in requested for i in range(start, stop)):
            self.table.refresh()

    def _remember(self, job: Job) -> None:
        if len(self._known) > KNOWN_LIMIT:
            self._known.clear()
        self._known[job.id] = (job.status, job.dismissed)

    # ------------------------------------------------------------------ live updates
    def apply_changes(self, changed: list[Job], *, truncated: bool = False) -> None:
        """Jobs changed in the database: patch the rows shown; reload the list if a status changed."""
        structural = truncated
        for job in changed:
            if self._known.get(job.id) != (job.status, job.dismissed):
                structural = True
            self._remember(job)
            if self.rows.update(job):
                self._refresh_job(job.id)
        if structural:
            self.request_structure_soon()

    def apply_progress(self, progress: dict[int, JobProgress]) -> None:
        """Progress from this process's pool: update the rows on screen without touching the database."""
        for job_id, event in progress.items():
            job = self.rows.get(job_id)
            if job is None:
                continue
            self.rows.update(
                replace(
                    job,
                    stage=event.stage,
                    progress_percent=event.percent,
                    fps=event.fps,
                    avg_fps=event.avg_fps,
                    eta_s=event.eta_s,
                )
            )
            self._refresh_job(job_id)

    def _refresh_job(self, job_id: int) -> None:
        index = self.rows.position(job_id)
        if index is not None:
            self.table.refresh_row(index)

    def apply_job_changed(self, event: JobChanged) -> None:
        """A job of this process changed status: the list order and counts change."""
        self.request_structure_soon()

    def request_structure_soon(self) -> None:
        """A reload for a change nobody is waiting on (another process, the pool): at most one per
        ``AUTO_RELOAD_S``, so many short jobs finishing do not keep reloading 100,000 ids."""
        if self._soon is not None:
            return
        wait = AUTO_RELOAD_S - (time.monotonic() - self._last_load_started)
        if wait <= 0:
            self.request_structure()
            return

        def due() -> None:
            self._soon = None
            self.request_structure()

        self._soon = self.set_timer(wait, due)

    # ------------------------------------------------------------------ rendering
    def _render_stats(self) -> None:
        if self.stats is None:
            return
        self.query_one("#queue-stats", Static).update(stats_line(self.stats))
        hint = queue_hint(self.stats, sum(self.counts.values()))
        self.query_one("#queue-hint", Static).update(hint)
        self.set_class(bool(hint), "-empty")

    def _render_filters(self) -> None:
        bar = Text()
        for n, section in enumerate(SECTIONS):
            if n:
                bar.append(" │ ", style="dim")
            count = (
                sum(self.counts.values())
                if section.statuses is None
                else sum(self.counts.get(s, 0) for s in section.statuses)
            )
            label = f" {section.label} {count} " if self.loaded else f" {section.label} "
            bar.append(label, style="reverse bold" if section.key == self.section else "")
        path_label = PATH_FILTERS[self.path_filter][0]
        bar.append("   path: ", style="dim")
        bar.append(path_label, style="bold" if self.path_filter != "all" else "")
        if self.search:
            bar.append("   search: ", style="dim")
            found = f"{len(self.rows)} matches" if self.list_is_current else "searching…"
            bar.append(f"“{fmt.printable(self.search)}” {found}", style="bold")
        self.query_one("#queue-filters", Static).update(bar)

    def watch_section(self) -> None:
        """A new section: reload the list."""
        if self.is_mounted:
            self._render_filters()
            self.request_structure()

    def watch_path_filter(self) -> None:
        """A new path filter: reload the list."""
        if self.is_mounted:
            self._render_filters()
            self.request_structure()

    def watch_search(self) -> None:
        """A new search: reload the list; bulk keys appear while a search is active."""
        if self.is_mounted:
            self._render_filters()
            self.request_structure()
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Bulk actions only while searching (they act on the matches)."""
        if action == "bulk":
            return bool(self.search)
        return True

    # ------------------------------------------------------------------ filter keys
    def action_section(self) -> None:
        """Cycle the status section: all → active → queued → failed → done."""
        keys = [s.key for s in SECTIONS]
        self.section = keys[(keys.index(self.section) + 1) % len(keys)]

    def action_path_filter(self) -> None:
        """Cycle the path filter: all → movies → TV."""
        self.path_filter = PATH_ORDER[(PATH_ORDER.index(self.path_filter) + 1) % len(PATH_ORDER)]

    def action_search(self) -> None:
        """Open the search box."""
        self.add_class("-searching")
        self.query_one("#queue-search", Input).focus()

    def action_clear_search(self) -> None:
        """Clear the search and go back to the table."""
        box = self.query_one("#queue-search", Input)
        box.value = ""
        self.remove_class("-searching")
        self.search = ""
        self.table.focus()

    @on(Input.Changed, "#queue-search")
    def _search_changed(self, event: Input.Changed) -> None:
        # Debounced: a query per keystroke would queue up behind each other on a big table.
        if self._search_timer is not None:
            self._search_timer.stop()
        value = event.value.strip()
        self._search_timer = self.set_timer(0.25, lambda: self._set_search(value))

    def _set_search(self, value: str) -> None:
        self.search = value

    @on(Input.Submitted, "#queue-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self.search = event.value.strip()
        if not self.search:
            self.remove_class("-searching")
        self.table.focus()

    # ------------------------------------------------------------------ job actions
    def _target(self) -> Job | None:
        job = self.table.cursor_job
        if job is None:
            if len(self.rows):
                self.notify("That row is still loading; try again in a moment.", severity="warning")
            else:
                self.notify("No job selected.", severity="warning")
        return job

    def _refuse(self, job: Job, what: str) -> None:
        self.notify(f"Job {job.id} is {job.status.value}: {what}", severity="warning")

    def _run(self, call: Callable[[], object], done: str) -> None:
        self._do_action(call, done)

    @work(thread=True, group="queue-action", exit_on_error=False)
    def _do_action(self, call: Callable[[], object], done: str) -> None:
        try:
            result = call()
        except AmphigoryError as exc:
            self.post_message(ActionDone(str(exc), "error"))
            return
        text = done.format(result=result)
        self.post_message(ActionDone(text))

    @on(ActionDone)
    def _action_done(self, message: ActionDone) -> None:
        # Not stopped: it bubbles to the app, which reloads every tab whose data changed (this one included).
        if message.text:
            self.notify(message.text, severity=message.severity)  # type: ignore[arg-type]

    def action_queue_all(self) -> None:
        """Queue every file that needs transcoding and has no job yet."""
        self._do_queue_all()

    @work(thread=True, group="queue-action", exit_on_error=False)
    def _do_queue_all(self) -> None:
        count = self.ctx.actions.queue_all()
        text = f"Queued {count} jobs" if count else "Queued 0 jobs — all candidates already queued"
        self.post_message(ActionDone(text))

    def action_pause(self) -> None:
        """Pause the job under the cursor (resume it if it is paused)."""
        job = self._target()
        if job is None:
            return
        actions = self.ctx.actions
        if job.status is JobStatus.PAUSED:
            self._run(lambda: actions.resume(job.id), f"Resumed job {job.id}")
        elif job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            self._run(lambda: actions.pause(job.id), f"Pausing job {job.id}")
        else:
            self._refuse(job, "only a queued or running job can be paused")

    def action_resume(self) -> None:
        """Resume the paused job under the cursor."""
        job = self._target()
        if job is None:
            return
        if job.status is not JobStatus.PAUSED:
            self._refuse(job, "only a paused job can be resumed")
            return
        actions = self.ctx.actions
        self._run(lambda: actions.resume(job.id), f"Resumed job {job.id}")

    def action_cancel(self) -> None:
        """Cancel the job under the cursor."""
        job = self._target()
        if job is None:
            return
        if not job.is_live:
            self._refuse(job, "there is nothing to cancel")
            return
        actions = self.ctx.actions
        self._run(lambda: actions.cancel(job.id), f"Canceling job {job.id}")

    def action_kill(self) -> None:
        """Force-kill the running job under the cursor."""
        job = self._target()
        if job is None:
            return
        if job.status is not JobStatus.RUNNING:
            self._refuse(job, "only a running job can be force-killed")
            return
        actions = self.ctx.actions
        self._run(lambda: actions.kill(job.id), f"Killing job {job.id}")

    def action_retry(self) -> None:
        """Queue the failed, canceled or skipped job under the cursor again."""
        job = self._target()
        if job is None:
            return
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.SKIPPED):
            self._refuse(job, "only a failed, canceled or skipped job can be retried")
            return
        actions = self.ctx.actions
        self._run(lambda: actions.retry(job.id), f"Queued job {job.id} again")

    def action_delete(self) -> None:
        """Remove the job under the cursor from the list (a queued one is canceled first)."""
        job = self._target()
        if job is None:
            return
        if job.status is JobStatus.RUNNING:
            self._refuse(job, "cancel it before deleting it")
            return
        actions = self.ctx.actions
        self._run(lambda: actions.remove(job.id), f"Removed job {job.id} from the list")

    def action_priority(self, direction: int) -> None:
        """Raise or lower the priority of the queued or paused job under the cursor."""
        job = self._target()
        if job is None:
            return
        if job.status not in (JobStatus.QUEUED, JobStatus.PAUSED):
            self._refuse(job, "only a waiting job's priority matters")
            return
        new = min(max(job.priority + direction * PRIORITY_STEP, 0), 100)
        actions = self.ctx.actions
        self._run(lambda: actions.set_priority(job.id, new), f"Job {job.id} priority {new}")

    def action_details(self) -> None:
        """Open the detail screen of the job under the cursor."""
        job = self._target()
        if job is not None:
            from amphigory_tui.ui.screens.job_detail import JobDetailScreen

            self.app.push_screen(JobDetailScreen(self.ctx, job.id))

    @on(JobTable.Activated)
    def _activated(self, event: JobTable.Activated) -> None:
        event.stop()
        job = self._target()
        if job is None:
            return

        def chosen(action: str | None) -> None:
            if action:
                self._menu_action(job, action)

        self.app.push_screen(ActionMenu(job), chosen)

    def _menu_action(self, job: Job, action: str) -> None:
        """Run a menu choice on the job the menu was opened for (not whatever the cursor is on now)."""
        actions = self.ctx.actions
        if action == "details":
            from amphigory_tui.ui.screens.job_detail import JobDetailScreen

            self.app.push_screen(JobDetailScreen(self.ctx, job.id))
        elif action == "priority":

            def set_priority(text: str | None) -> None:
                if text is not None:
                    value = int(text)
                    self._run(lambda: actions.set_priority(job.id, value), f"Job {job.id} priority {value}")

            self.app.push_screen(
                PromptModal(
                    f"Priority of job #{job.id}",
                    str(job.priority),
                    help_text="0–100; higher runs sooner",
                    validate=priority_validator,
                    restrict=r"[0-9]*",
                    max_length=3,
                ),
                set_priority,
            )
        else:
            calls: dict[str, tuple[Callable[[], object], str]] = {
                "pause": (lambda: actions.pause(job.id), f"Pausing job {job.id}"),
                "resume": (lambda: actions.resume(job.id), f"Resumed job {job.id}"),
                "cancel": (lambda: actions.cancel(job.id), f"Canceling job {job.id}"),
                "kill": (lambda: actions.kill(job.id), f"Killing job {job.id}"),
                "retry": (lambda: actions.retry(job.id), f"Queued job {job.id} again"),
                "delete": (lambda: actions.remove(job.id), f"Removed job {job.id} from the list"),
            }
            call, done = calls[action]
            self._run(call, done)

    def action_bulk(self, what: str) -> None:
        """Pause or cancel every job matching the search (after a confirmation naming how many)."""
        box = self.query_one("#queue-search", Input)
        if box.value.strip() != self.search:
            # The box was left (a click) before its debounce ran: search for what it says now, then refuse below.
            if self._search_timer is not None:
                self._search_timer.stop()
            self.search = box.value.strip()
        if not self.search:
            return
        if not self.list_is_current:
            # The rows are still those of an older search or filter: acting on them would hit jobs that do not match.
            self.notify("Still searching… try again when the matches are shown.", severity="warning")
            return
        ids = list(self.rows.ids)
        if not ids:
            self.notify("No jobs match the search.", severity="warning")
            return
        verb = "Pause" if what == "pause" else "Cancel"
        actions = self.ctx.actions

        def answered(yes: bool | None) -> None:
            if yes:
                done = "Paused" if what == "pause" else "Canceled"
                self._run(lambda: actions.bulk(what, ids), done + " {result} of " + f"{len(ids)} matching jobs")

        self.app.push_screen(
            ConfirmModal(
                f"{verb} matching jobs",
                f"{verb} the {len(ids)} jobs matching “{fmt.printable(self.search)}”? "
                "Jobs that cannot be (finished ones) are left alone.",
                yes=verb,
            ),
            answered,
        )
