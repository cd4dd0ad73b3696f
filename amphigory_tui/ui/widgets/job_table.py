"""The Queue tab's table: columns and cells of a job row, over a paged source."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.style import Style
from textual.binding import Binding, BindingType

from amphigory_tui.domain.jobs import Job, JobStatus
from amphigory_tui.ui import format as fmt
from amphigory_tui.ui.paging import PagedRows
from amphigory_tui.ui.palette import dim_style, stage_style, status_style
from amphigory_tui.ui.widgets.virtual_table import Cell, Column, Piece, VirtualTable

BAR_WIDTH = 10

JOB_COLUMNS = (
    Column("id", "ID", 6, align="right"),
    Column("file", "File", 12, flex=1, cut="start"),
    Column("status", "Status", 9),
    Column("stage", "Stage", 9, min_screen=100),
    Column("priority", "Pri", 3, align="right"),
    Column("progress", "Progress", BAR_WIDTH + 7),
    Column("fps", "FPS", 5, align="right", min_screen=100),
    Column("eta", "ETA", 6, align="right"),
    Column("attempts", "Try", 4, align="right", min_screen=90),
)


def progress_cell(job: Job, dark: bool) -> list[Piece]:
    """A bar in the stage's colour and the percentage, for jobs that have progress to show."""
    if job.status is JobStatus.COMPLETED:
        return [("done", status_style(job.status, dark))]
    if job.status not in (JobStatus.RUNNING, JobStatus.PAUSED):
        return []
    style = stage_style(job.stage, dark) if job.status is JobStatus.RUNNING else status_style(job.status, dark)
    pieces: list[Piece] = fmt.progress_bar(job.progress_percent, BAR_WIDTH, style)
    pieces.append((f" {job.progress_percent:5.1f}%", Style()))
    return pieces


def display_path(path: str, roots: Sequence[str]) -> str:
    """A job's input without its library root (``Doctor Who/S01E02.mkv``), or its file name outside the roots."""
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path.rsplit("/", 1)[-1]


def job_cells(job: Job, dark: bool, roots: Sequence[str] = ()) -> Sequence[Cell]:
    """One job as table cells, in ``JOB_COLUMNS`` order."""
    running = job.status is JobStatus.RUNNING
    dim = dim_style(dark)
    stage: Cell = (job.stage.value, stage_style(job.stage, dark)) if job.stage else ("—", dim)
    return [
        str(job.id),
        fmt.printable(display_path(job.input_path, roots)),
        (job.status.value, status_style(job.status, dark)),
        stage,
        str(job.priority),
        progress_cell(job, dark),
        fmt.fps(job.fps) if running else "",
        fmt.duration(job.eta_s) if running else "",
        f"{job.attempts}/{job.max_retries}",
    ]


class JobSource(PagedRows[Job]):
    """The Queue table's rows: ids in order, jobs loaded by id on demand through ``loader``."""

    def __init__(self, loader: Callable[[int, int], None]) -> None:
        super().__init__(lambda job: job.id)
        self._loader = loader

    def request(self, start: int, stop: int) -> None:
        """Ask the pane to load rows around ``[start, stop)``."""
        self._loader(start, stop)


class JobTable(VirtualTable[Job]):
    """The Queue tab's table."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "activate", "Actions", id="job-menu")]

    def __init__(
        self,
        source: JobSource,
        *,
        roots: Callable[[], Sequence[str]] = tuple,
        id: str | None = None,  # noqa: A002
    ) -> None:
        super().__init__(
            JOB_COLUMNS, source, lambda job, dark: job_cells(job, dark, roots()), empty_text="No jobs here", id=id
        )
        self.jobs = source

    @property
    def cursor_job(self) -> Job | None:
        """The job shown under the cursor (None while its row is still loading)."""
        return self.jobs.item_at(self.cursor)
