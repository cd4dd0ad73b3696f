"""The Log tab: the database's processing log (every process) and this process's own log records, live."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from amphigory_tui.domain.events import LogRecord
from amphigory_tui.ui.widgets.log_view import LogLine, LogView

LEVEL_CYCLE = ("debug", "info", "warning", "error")
RECENT = 500


class LogPane(Vertical):
    """Log lines coloured by level, filterable, following the newest unless scrolled up."""

    BINDING_GROUP_TITLE = "Log"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "level", "Level filter", id="log-level"),
    ]

    DEFAULT_CSS = """
    LogPane { height: 1fr; }
    LogPane #log-status { height: 1; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.view = LogView(id="log-view")
        # The pool may both write a line to processing_log and emit it as an event: a line already shown from the
        # other source is shown once. Repeats from the same source are real repeats and are kept.
        self._recent: dict[str, deque[tuple[str, int | None]]] = {
            "db": deque(maxlen=RECENT),
            "app": deque(maxlen=RECENT),
        }

    def compose(self) -> ComposeResult:
        """Status line and the log."""
        yield Static("", id="log-status")
        yield self.view

    def on_mount(self) -> None:
        """Show the filter."""
        self._render_status()

    def add_db(self, rows: list[tuple[int, LogRecord]]) -> None:
        """Lines read from processing_log."""
        self._add([r for _, r in rows], "db")

    def add_local(self, records: list[LogRecord]) -> None:
        """Records of this process (logging module, pool events)."""
        self._add(records, "app")

    def _add(self, records: list[LogRecord], source: str) -> None:
        lines = []
        other = self._recent["app" if source == "db" else "db"]
        mine = self._recent[source]
        for r in records:
            key = (r.message, r.job_id)
            if key in other:
                other.remove(key)
                continue
            mine.append(key)
            lines.append(LogLine(r.created_at, r.level, r.message, r.job_id, source))
        if lines:
            self.view.add(lines)
            if self.is_mounted:
                self._render_status()

    def action_level(self) -> None:
        """Cycle the lowest level shown: debug → info → warning → error."""
        view = self.view
        view.min_level = LEVEL_CYCLE[(LEVEL_CYCLE.index(view.min_level) + 1) % len(LEVEL_CYCLE)]
        self._render_status()

    def _render_status(self) -> None:
        view = self.view
        level = view.min_level
        shown = "all levels" if level == "debug" else f"{level} and above"
        text = f"Showing {shown} · {len(view.shown)} of {len(view.lines)} lines kept (last {view.lines.maxlen})"
        self.query_one("#log-status", Static).update(text)
