"""The job detail screen: full paths, preset, status and timings, every attempt with its error, the last log lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.services.queries import JobDetail
from amphigory_tui.ui import format as fmt
from amphigory_tui.ui.context import UiContext
from amphigory_tui.ui.palette import dim_style, level_style, stage_style, status_style

REFRESH_S = 1.0


@dataclass
class DetailLoaded(Message):
    """The job's details, read in a worker."""

    detail: JobDetail | None
    error: str | None = None


def render_detail(detail: JobDetail, now: float, dark: bool) -> RenderableType:
    """Everything about one job, as a Rich renderable."""
    job = detail.job
    dim = dim_style(dark)
    facts = Table.grid(padding=(0, 1))
    facts.add_column(style=dim, no_wrap=True)
    facts.add_column(overflow="fold")

    def row(label: str, value: str | Text) -> None:
        facts.add_row(label, value if isinstance(value, Text) else Text(value))

    status = Text(job.status.value, style=status_style(job.status, dark))
    if job.stage:
        status.append(" · ")
        status.append(job.stage.value, style=stage_style(job.stage, dark))
    if job.status in (JobStatus.RUNNING, JobStatus.PAUSED):
        status.append(f" · {job.progress_percent:.1f}%")
        if job.status is JobStatus.RUNNING:
            status.append(f" · {fmt.fps(job.fps)} fps · ETA {fmt.duration(job.eta_s)}")
    if job.control_request:
        status.append(f" · {job.control_request} requested", style="bold")
    row("Status", status)
    row("Kind", job.kind.value)
    row("Input", fmt.printable(job.input_path))
    row("Output", fmt.printable(job.output_path or "—"))
    if job.temp_path:
        row("Temp", fmt.printable(job.temp_path))
    row("Preset", job.preset or "—")
    row("Priority", str(job.priority))
    row("Attempts", f"{job.attempts} of {job.max_retries}")
    if job.next_attempt_at and job.status is JobStatus.QUEUED:
        row("Next try", f"in {fmt.duration(job.next_attempt_at - now)}")
    if job.worker_id:
        row("Worker", f"{job.worker_id} · heartbeat {fmt.age(now, job.last_heartbeat)} ago")
    row("Created", fmt.clock_time(job.created_at))
    row("Started", fmt.clock_time(job.started_at))
    row("Finished", fmt.clock_time(job.completed_at))
    if job.encode_time_s is not None:
        row("Encode time", fmt.duration(job.encode_time_s))
    if job.duration_s is not None:
        row("Media length", fmt.duration(job.duration_s))
    sizes = f"{fmt.human_size(job.source_size)} → {fmt.human_size(job.output_size)}"
    if job.source_size and job.output_size:
        saved = job.source_size - job.output_size
        sizes += f" (saved {fmt.human_size(saved)}, {saved * 100 / job.source_size:.0f}%)"
    row("Size", sizes)
    if job.error_message:
        # The first line is the reason; an encoder's stderr tail may follow it, shown line by line and dimmed.
        reason, *tail = job.error_message.split("\n")
        error = Text(fmt.printable(reason), style=status_style(JobStatus.FAILED, dark))
        for line in tail:
            error.append("\n" + fmt.printable(line), style=dim)
        row("Last error", error)
    media = detail.media
    if media is not None:
        probe = media.probe
        res = f"{probe.width}×{probe.height}" if probe.width and probe.height else "—"
        row("Source", f"{probe.video_codec or '?'} {res} · {media.reason or '—'}")

    # One line per attempt and its error below it: a table squeezed into 80 columns wraps the error to pieces.
    attempts = Text()
    for attempt in detail.attempts:
        took = fmt.duration((attempt.ended_at or now) - attempt.started_at)
        outcome = attempt.outcome or "running"
        attempts.append(f"#{attempt.attempt} ", style="bold")
        attempts.append(outcome, style=_outcome_style(outcome, dark))
        attempts.append(f" · {fmt.clock_time(attempt.started_at)} · took {took} · {attempt.worker_id}\n", style=dim)
        if attempt.error:
            reason = attempt.error.partition("\n")[0]  # a stderr tail after it is shown under "Last error"
            attempts.append(f"   {fmt.printable(reason)}\n")
    log = Text()
    for record in detail.log:
        log.append(f"{fmt.short_time(record.created_at)} ", style=dim)
        log.append(f"{record.level.upper():<7}", style=level_style(record.level, dark))
        log.append(f" {fmt.printable(record.message)}\n")
    parts: list[RenderableType] = [facts, Text("\nAttempts", style="bold")]
    parts.append(attempts if detail.attempts else Text("No attempts yet", style=dim))
    parts.append(Text("\nLast log lines", style="bold"))
    parts.append(log if detail.log else Text("No log lines for this job", style=dim))
    return Group(*parts)


class JobDetailScreen(ModalScreen[None]):
    """One job in full; refreshed every second while open."""

    DEFAULT_CSS = """
    JobDetailScreen { align: center middle; }
    JobDetailScreen > VerticalScroll {
        width: 100%; height: 1fr; border: round $primary; background: $surface; padding: 0 1;
        border-title-style: bold;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,i", "close", "Close", id="detail-close"),
    ]

    def __init__(self, ctx: UiContext, job_id: int) -> None:
        super().__init__()
        self.ctx = ctx
        self.job_id = job_id
        self.detail: JobDetail | None = None

    def compose(self) -> ComposeResult:
        """A scrolling body and the footer."""
        with VerticalScroll(id="detail-body") as body:
            body.border_title = f"Job #{self.job_id}"
            yield Static("Loading…", id="detail-text")
        yield Footer()

    def on_mount(self) -> None:
        """Load now and every second."""
        self._load()
        self.set_interval(REFRESH_S, self._load)

    @work(thread=True, exclusive=True, group="job-detail", exit_on_error=False)
    def _load(self) -> None:
        from amphigory_tui.domain.errors import AmphigoryError

        try:
            self.post_message(DetailLoaded(self.ctx.queries.job_detail(self.job_id)))
        except AmphigoryError as exc:
            self.post_message(DetailLoaded(None, str(exc)))

    @on(DetailLoaded)
    def _loaded(self, message: DetailLoaded) -> None:
        text = self.query_one("#detail-text", Static)
        if message.detail is None:
            text.update(Text(message.error or "not found"))
            return
        self.detail = message.detail
        body = self.query_one("#detail-body", VerticalScroll)
        body.border_title = f"Job #{self.job_id} · {fmt.printable(message.detail.job.name)}"
        text.update(render_detail(message.detail, self.ctx.clock.now(), self.app.current_theme.dark))

    def action_close(self) -> None:
        """Back to the queue."""
        self.dismiss(None)


def _outcome_style(outcome: str, dark: bool) -> Style:
    """An attempt's outcome in the colour of the status it matches (a retry is a failed attempt)."""
    status = {"retry": "failed", "abandoned": "failed"}.get(outcome, outcome)
    try:
        return status_style(JobStatus(status), dark)
    except ValueError:
        return dim_style(dark)
