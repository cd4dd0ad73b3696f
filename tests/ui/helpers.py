"""Small helpers of the pilot tests: move the cursor to a job, read notifications."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from amphigory_tui.ui.app import AmphigoryApp
from tests.ui.conftest import settle


def app_of(pilot: Pilot[Any]) -> AmphigoryApp:
    """The pilot's app, typed."""
    assert isinstance(pilot.app, AmphigoryApp)
    return pilot.app


async def goto_job(pilot: Pilot[Any], job_id: int) -> None:
    """Put the Queue table's cursor on a job (what the arrow keys do; they have their own test)."""
    pane = app_of(pilot).queue_pane
    index = pane.rows.index_of(job_id)
    assert index is not None, f"job {job_id} is not in the table"
    pane.table.move_cursor(index)
    await settle(pilot)
    job = pane.table.cursor_job
    assert job is not None and job.id == job_id


def notes(app: AmphigoryApp) -> list[str]:
    """The texts of the notifications shown so far (still on screen)."""
    return [str(n.message) for n in app._notifications]


def shown_ids(app: AmphigoryApp) -> list[int]:
    """The job ids the Queue table shows, in order."""
    return list(app.queue_pane.rows.ids)


def static_text(widget: Any, width: int = 200) -> str:
    """The plain text a ``Static`` shows (its content rendered by Rich at ``width``)."""
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(widget.content)
    return console.export_text()
