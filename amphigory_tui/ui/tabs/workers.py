"""The Workers tab: every worker of every amphigory process on this database, and this process's pool controls.

Rows come from the database's worker registry (so a headless ``amphigory worker`` on another machine shows up);
the job columns come from each worker's current job, kept live by this process's pool events. A heartbeat older
than two intervals turns warning-coloured, one older than the stall timeout error-coloured ("stalled").
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from rich.style import Style
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static

from amphigory_tui.config import WorkersSettings
from amphigory_tui.domain.events import JobProgress, WorkerBeat
from amphigory_tui.domain.jobs import Job, JobStatus, Stage
from amphigory_tui.domain.workers import WorkerInfo
from amphigory_tui.ui import format as fmt
from amphigory_tui.ui.context import UiContext
from amphigory_tui.ui.palette import dim_style, health_style, stage_style, status_style
from amphigory_tui.ui.widgets.virtual_table import Cell, Column, Piece, VirtualTable

if TYPE_CHECKING:
    from amphigory_tui.pool.pool import WorkerSnapshot

MAX_POOL = 64


@dataclass(frozen=True)
class JobView:
    """What a worker row shows of its job."""

    job_id: int
    stage: Stage | None
    percent: float
    fps: float | None
    eta_s: float | None

    @classmethod
    def of_job(cls, job: Job) -> JobView:
        """From a job row of the database."""
        return cls(job.id, job.stage, job.progress_percent, job.fps, job.eta_s)


@dataclass(frozen=True)
class WorkerRow:
    """One worker as the table shows it."""

    info: WorkerInfo
    job: JobView | None
    local: bool


def heartbeat_health(age_s: float, interval_s: float, stall_s: float) -> str:
    """``ok``, ``warning`` (older than two heartbeats) or ``error`` (stalled)."""
    if age_s > stall_s:
        return "error"
    if age_s > 2 * interval_s:
        return "warning"
    return "ok"


def worker_health(info: WorkerInfo, now: float, settings: WorkersSettings) -> str:
    """``heartbeat_health`` of a worker's row at ``now``.

    Late is judged by the worker's own heartbeat interval (another machine may beat less often than this one);
    stalled by this machine's ``stall_timeout_s``, the threshold its own recovery takes a job over by.
    """
    interval = info.heartbeat_interval_s or settings.heartbeat_interval_s
    return heartbeat_health(max(now - info.last_seen, 0.0), interval, settings.stall_timeout_s)


WORKER_COLUMNS = (
    Column("host", "Host", 8, flex=1),
    Column("pid", "PID", 7, align="right"),
    Column("worker", "Worker", 6, min_screen=100),
    Column("state", "State", 8),
    Column("job", "Job", 6, align="right"),
    Column("stage", "Stage", 9, min_screen=90),
    Column("progress", "Progress", 17),
    Column("fps", "FPS", 5, align="right", min_screen=100),
    Column("eta", "ETA", 6, align="right", min_screen=90),
    Column("beat", "Beat", 7, align="right"),
)


class WorkerList:
    """The rows of the Workers table (a plain list: there are a few dozen at most)."""

    def __init__(self) -> None:
        self.rows: list[WorkerRow] = []

    def __len__(self) -> int:
        return len(self.rows)

    def item_at(self, index: int) -> WorkerRow | None:
        """Row ``index``."""
        return self.rows[index] if 0 <= index < len(self.rows) else None

    def request(self, start: int, stop: int) -> None:
        """Everything is loaded already."""


class WorkersPane(Vertical):
    """Who is working on what, and how alive they are."""

    BINDING_GROUP_TITLE = "Workers"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus,equals_sign", "resize(1)", "Add worker", id="workers-add"),
        Binding("minus,underscore", "resize(-1)", "Remove worker", id="workers-remove"),
        Binding("P", "toggle_pause", "Pause/resume all", id="workers-pause-all"),
    ]

    DEFAULT_CSS = """
    WorkersPane { height: 1fr; }
    WorkersPane #workers-summary { height: auto; padding: 0 1; text-style: bold; }
    WorkersPane.-paused #workers-summary { color: $warning; }
    """

    paused: reactive[bool] = reactive(False)

    def __init__(self, ctx: UiContext, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.ctx = ctx
        self.list = WorkerList()
        self._registry: list[WorkerInfo] = []
        self._jobs: dict[int, JobView] = {}
        self.table: VirtualTable[WorkerRow] = VirtualTable(
            WORKER_COLUMNS, self.list, self._cells, empty_text="No workers", id="workers-table"
        )
        self._summary = ""
        self._host = socket.gethostname()
        self._pid = os.getpid()

    def compose(self) -> ComposeResult:
        """Summary line and the table."""
        yield Static("Loading…", id="workers-summary", markup=False)
        yield self.table

    def on_mount(self) -> None:
        """Show what arrived before this tab was mounted (after a refresh: a lazy tab's children may not be
        composed yet when it mounts)."""
        self._rebuild()
        self.call_after_refresh(self._rebuild)

    # ------------------------------------------------------------------ data
    def apply_poll(self, workers: list[WorkerInfo], jobs: dict[int, Job]) -> None:
        """A fresh copy of the registry and of the workers' current jobs."""
        self._registry = workers
        self._jobs = {job_id: JobView.of_job(job) for job_id, job in jobs.items()}
        self._rebuild()

    def apply_progress(self, progress: dict[int, JobProgress]) -> None:
        """Live progress from this process's pool."""
        touched = False
        for job_id, event in progress.items():
            if job_id in self._jobs:
                self._jobs[job_id] = JobView(job_id, event.stage, event.percent, event.fps, event.eta_s)
                touched = True
        if touched:
            self._rebuild()

    def apply_beat(self, event: WorkerBeat) -> None:
        """A local worker is alive: its row's state and heartbeat age update at once."""
        for n, info in enumerate(self._registry):
            if info.id == event.worker_id:
                self._registry[n] = replace(
                    info, state=event.state, current_job_id=event.job_id, last_seen=self.ctx.clock.now()
                )
                self._rebuild()
                return

    def _local(self) -> dict[str, WorkerSnapshot]:
        pool = self.ctx.pool
        return {snap.worker_id: snap for snap in pool.snapshot()} if pool is not None else {}

    def _rebuild(self) -> None:
        if not self.is_mounted:
            return  # mounted lazily, after the first frame: on_mount rebuilds from what arrived meanwhile
        keep = self.list.item_at(self.table.cursor)
        local = self._local()
        now = self.ctx.clock.now()
        rows: list[WorkerRow] = []
        seen: set[str] = set()
        for info in self._registry:
            seen.add(info.id)
            snap = local.get(info.id)
            if snap is not None:
                # This process's own loops: the pool's in-memory state is fresher than the registry row.
                info = replace(info, state=snap.state, current_job_id=snap.job_id)
                job = _snap_job(snap)
            else:
                job = self._jobs.get(info.current_job_id) if info.current_job_id else None
            is_local = snap is not None or (info.host == self._host and info.pid == self._pid)
            rows.append(WorkerRow(info=info, job=job, local=is_local))
        for worker_id, snap in local.items():
            if worker_id not in seen:
                info = WorkerInfo(worker_id, self._host, self._pid, snap.state, now, now, snap.job_id)
                rows.append(WorkerRow(info=info, job=_snap_job(snap), local=True))
        # This process's workers first: they are the ones the keys of this tab control.
        rows.sort(key=lambda r: (not r.local, r.info.host, r.info.pid, r.info.started_at, r.info.id))
        if rows == self.list.rows:
            # Nothing moved: a relayout twice a second for nothing is most of an idle app's CPU.
            self.table.invalidate()
            self._render_summary()
            return
        self.list.rows = rows
        if keep is not None:
            for n, row in enumerate(rows):
                if row.info.id == keep.info.id:
                    self.table.cursor = n
        self.table.reload()
        self._render_summary()

    def tick(self) -> None:
        """Heartbeat ages move with the clock, local states change: rebuild from the pool's snapshot."""
        if not self.is_mounted:
            return
        if self.ctx.pool is not None:
            self._rebuild()
        else:
            self.table.invalidate()

    # ------------------------------------------------------------------ rendering
    def _cells(self, row: WorkerRow, dark: bool) -> Sequence[Cell]:
        settings = self.ctx.settings.workers
        now = self.ctx.clock.now()
        info, job = row.info, row.job
        health = worker_health(info, now, settings)
        beat_style = health_style(health, dark)
        dim = dim_style(dark)
        state_text = "stalled" if health == "error" else info.state
        state_style = beat_style if health != "ok" else status_style(JobStatus.RUNNING, dark) if job else dim
        state: Cell = (state_text, state_style)
        progress: list[Piece] = []
        stage: Cell = ("—", dim)
        if job is not None:
            stage = (job.stage.value, stage_style(job.stage, dark)) if job.stage else ("—", dim)
            progress = fmt.progress_bar(job.percent, 10, stage_style(job.stage, dark))
            progress.append((f" {job.percent:5.1f}%", Style()))
        host = info.host + (" (this)" if row.local else "")
        return [
            host,
            str(info.pid),
            info.id.rsplit(":", 1)[-1][:6],
            state,
            str(info.current_job_id) if info.current_job_id else "—",
            stage,
            progress,
            fmt.fps(job.fps) if job else "",
            fmt.duration(job.eta_s) if job else "",
            (fmt.age(now, info.last_seen), beat_style),
        ]

    def _render_summary(self) -> None:
        pool = self.ctx.pool
        local = sum(1 for r in self.list.rows if r.local)
        others = [r for r in self.list.rows if not r.local]
        hosts = {r.info.host for r in others}
        processes = {(r.info.host, r.info.pid) for r in others}
        if pool is None:
            mine = "This process runs no workers"
        else:
            state = "paused" if self.paused else "running"
            mine = f"This process: {pool.size} workers ({state}, {local} registered)"
        theirs = f"other processes: {len(others)} workers in {len(processes)} processes on {len(hosts)} hosts"
        text = f"{mine} · {theirs}"
        # A poll can land while this lazy tab is still composing: on_mount renders the summary then.
        found = self.query("#workers-summary")
        if text != self._summary and found:
            self._summary = text
            found.first(Static).update(text)

    def watch_paused(self, paused: bool) -> None:
        """Paused shows in the summary's colour."""
        self.set_class(paused, "-paused")
        if self.is_mounted:
            self._render_summary()

    # ------------------------------------------------------------------ keys
    def action_resize(self, delta: int) -> None:
        """Grow or shrink this process's pool now."""
        pool = self.ctx.pool
        if pool is None:
            self.notify("This process runs no worker pool.", severity="warning")
            return
        new = min(max(pool.size + delta, 0), MAX_POOL)
        if new == pool.size:
            self.notify(f"The pool is already at {new} workers (0–{MAX_POOL}).", severity="warning")
            return
        pool.set_size(new)
        # The live settings follow, or the settings screen would show the old count and its next apply undo this.
        settings = self.ctx.settings
        self.ctx.settings = replace(settings, workers=replace(settings.workers, count=new))
        self.notify(f"Workers: {new}")
        self._render_summary()

    def action_toggle_pause(self) -> None:
        """Pause every job of this process's pool, or resume them."""
        pool = self.ctx.pool
        if pool is None:
            self.notify("This process runs no worker pool.", severity="warning")
            return
        if self.paused:
            pool.resume_all()
            self.paused = False
            self.notify("Workers resumed")
        else:
            pool.pause_all()
            self.paused = True
            self.notify("Workers paused: running jobs are paused, no new job starts")


def _snap_job(snap: WorkerSnapshot) -> JobView | None:
    if snap.job_id is None:
        return None
    return JobView(snap.job_id, snap.stage, snap.percent, snap.fps, snap.eta_s)
