"""The job action menu: only the actions valid for the job's status, chosen with the arrows and Enter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from amphigory_tui.domain.jobs import Job, JobStatus
from amphigory_tui.ui import format as fmt


@dataclass(frozen=True)
class JobAction:
    """One entry of the menu: the pane action it runs, a label and what it does."""

    action: str
    label: str
    help: str


PAUSE = JobAction("pause", "Pause", "Stop it for now; it keeps its progress and its attempt")
RESUME = JobAction("resume", "Resume", "Put it back in the queue")
CANCEL = JobAction("cancel", "Cancel", "Stop it and remove its temp files")
KILL = JobAction("kill", "Force kill", "Kill its tool now, without a grace period")
RETRY = JobAction("retry", "Retry", "Queue it again with a fresh set of attempts")
REMOVE = JobAction("delete", "Remove from queue", "Cancel it and hide it from the list")
DISMISS = JobAction("delete", "Delete from list", "Hide it from the list (the file is not touched)")
PRIORITY = JobAction("priority", "Change priority…", "Higher runs sooner (0–100)")
DETAILS = JobAction("details", "Details…", "Paths, attempts and their errors, the last log lines")

ACTIONS_BY_STATUS: dict[JobStatus, tuple[JobAction, ...]] = {
    JobStatus.QUEUED: (PAUSE, CANCEL, PRIORITY, REMOVE),
    JobStatus.RUNNING: (PAUSE, CANCEL, KILL),
    JobStatus.PAUSED: (RESUME, CANCEL, PRIORITY, REMOVE),
    JobStatus.FAILED: (RETRY, DISMISS),
    JobStatus.CANCELED: (RETRY, DISMISS),
    JobStatus.SKIPPED: (RETRY, DISMISS),
    JobStatus.COMPLETED: (DISMISS,),
}


def actions_for(job: Job) -> tuple[JobAction, ...]:
    """The actions valid for a job in its current status, then Details."""
    return (*ACTIONS_BY_STATUS[job.status], DETAILS)


class ActionMenu(ModalScreen[str | None]):
    """Pick what to do with one job; returns the action name or None."""

    DEFAULT_CSS = """
    ActionMenu { align: center middle; }
    ActionMenu > Vertical {
        width: 64; max-width: 95%; height: auto; border: round $primary; background: $surface; padding: 0 1;
    }
    ActionMenu #menu-title { text-style: bold; padding: 0 1; }
    ActionMenu OptionList { height: auto; max-height: 14; border: none; }
    ActionMenu #menu-keys { color: $text-muted; text-style: italic; padding: 0 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close", id="menu-close")]

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self.actions = actions_for(job)

    def compose(self) -> ComposeResult:
        """The job, its actions, the keys."""
        with Vertical():
            name = fmt.printable(self.job.name)
            yield Static(f"Job #{self.job.id} · {self.job.status.value} · {name}", id="menu-title", markup=False)
            yield OptionList(
                *[Option(f"{a.label:<20} {a.help}", id=f"{n}:{a.action}") for n, a in enumerate(self.actions)],
                id="menu-options",
            )
            yield Static("↑↓ choose · Enter run · Esc close", id="menu-keys")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id or ""
        self.dismiss(option_id.split(":", 1)[1])

    def action_close(self) -> None:
        """Close without doing anything."""
        self.dismiss(None)
