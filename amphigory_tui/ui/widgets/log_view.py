"""LogView: a bounded, level-filtered log that follows new lines unless the user scrolled up (Line API)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from amphigory_tui.ui import format as fmt
from amphigory_tui.ui.palette import dim_style, level_rank, level_style, normalize_level

MAX_LINES = 5000


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of the Log tab: when, how bad, what, for which job, and where it came from."""

    created_at: float | None
    level: str
    message: str
    job_id: int | None = None
    source: str = "db"


class LogView(ScrollView, can_focus=True):
    """The last ``MAX_LINES`` lines, newest at the bottom."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "scroll_up", "Up", show=False, id="log-up"),
        Binding("down,j", "scroll_down", "Down", show=False, id="log-down"),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False, id="log-page-up"),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False, id="log-page-down"),
        Binding("home,g", "scroll_home", "Top", show=False, id="log-top"),
        Binding("end,G", "follow", "Follow", id="log-follow"),
    ]

    DEFAULT_CSS = """
    LogView { height: 1fr; overflow-x: hidden; overflow-y: auto; scrollbar-size-vertical: 1; background: $surface; }
    LogView > .log-view--empty { color: $text-muted; text-style: italic; }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"log-view--empty"}

    min_level: reactive[str] = reactive("debug")

    def __init__(self, *, max_lines: int = MAX_LINES, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.lines: deque[LogLine] = deque(maxlen=max_lines)
        self._shown: list[LogLine] = []

    @property
    def shown(self) -> list[LogLine]:
        """The lines that pass the level filter, oldest first."""
        return self._shown

    @property
    def following(self) -> bool:
        """Whether the view is at the bottom (new lines scroll it)."""
        return self.scroll_offset.y >= self.max_scroll_y

    def on_mount(self) -> None:
        """Lines may arrive before the (lazily mounted) view is: show them."""
        self.watch_min_level()

    def add(self, lines: Iterable[LogLine]) -> None:
        """Append lines; keep following if the view was at the bottom."""
        follow = self.following or not self.is_mounted
        rank = level_rank(self.min_level)
        added = False
        for line in lines:
            if len(self.lines) == self.lines.maxlen and self._shown and self._shown[0] is self.lines[0]:
                self._shown.pop(0)
            self.lines.append(line)
            if level_rank(line.level) >= rank:
                self._shown.append(line)
            added = True
        if added and self.is_mounted:
            self._resize()
            if follow:
                self._to_end()
            self.refresh()

    def watch_min_level(self) -> None:
        """Re-filter everything kept."""
        rank = level_rank(self.min_level)
        self._shown = [line for line in self.lines if level_rank(line.level) >= rank]
        self._resize()
        self._to_end()
        self.refresh()

    def _to_end(self) -> None:
        # force: right after a resize the scrollbars are not laid out yet and a plain scroll would be refused.
        self.scroll_to(y=self.max_scroll_y, animate=False, force=True)

    def _resize(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width or 1, len(self._shown))

    def on_resize(self) -> None:
        """Keep the virtual width equal to the view."""
        self._resize()

    def action_follow(self) -> None:
        """Jump to the newest line and follow again."""
        self._to_end()

    def render_line(self, y: int) -> Strip:
        """One log line: time, level, job, message (cut to the width)."""
        width = self.scrollable_content_region.width
        base = self.rich_style
        index = int(self.scroll_offset.y) + y
        if not self._shown:
            if y == 0:
                style = base + self.get_component_rich_style("log-view--empty")
                return Strip([Segment(set_cell_size(" No log lines yet", width), style)], width)
            return Strip.blank(width, base)
        if index >= len(self._shown):
            return Strip.blank(width, base)
        line = self._shown[index]
        dark = self.app.current_theme.dark
        level = normalize_level(line.level)
        parts: list[tuple[str, Style]] = [
            (fmt.short_time(line.created_at) + " ", dim_style(dark)),
            (f"{level.upper():<8}", level_style(level, dark)),
        ]
        if line.job_id is not None:
            parts.append((f"#{line.job_id} ", dim_style(dark)))
        parts.append((fmt.printable(line.message), Style()))
        segments: list[Segment] = []
        used = 0
        for text, style in parts:
            if used >= width:
                break
            text = text[: width - used]
            segments.append(Segment(text, base + style))
            used += len(text)
        if used < width:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments, width)
