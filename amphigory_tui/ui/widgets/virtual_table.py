"""VirtualTable: a Line API table that renders only the rows on screen.

Textual's DataTable builds every row up front (27 s for 100,000 jobs on this machine); this widget asks a
``RowSource`` for the few rows in view, so its cost does not depend on the number of rows. Rows that are not
loaded yet show a placeholder and the source is asked to load them (in a thread worker, never here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

ROW_CACHE = 400
"""Rendered rows kept (a few screens' worth): scrolling back and repaints of unchanged rows cost nothing."""

Piece = tuple[str, Style]
Cell = str | Piece | list[Piece]
"""One table cell: plain text, text in a style, or several styled pieces (a progress bar and its percentage)."""


@dataclass(frozen=True)
class _Styles:
    """The table's resolved styles for one theme and focus state."""

    base: Style
    header: Style
    cursor: Style
    placeholder: Style
    empty: Style
    dark: bool


@dataclass(frozen=True)
class Column:
    """A column: its header, minimum width, share of spare width, alignment and the narrowest screen it shows on."""

    key: str
    label: str
    width: int
    flex: int = 0
    align: Literal["left", "right"] = "left"
    min_screen: int = 0
    cut: Literal["end", "start"] = "end"
    """Where a too-long value loses text: file names keep their end (``…S01E05.mkv``)."""


class RowSource(Protocol[T_co]):
    """What a VirtualTable reads rows from."""

    def __len__(self) -> int:
        """How many rows there are."""
        ...

    def item_at(self, index: int) -> T_co | None:
        """The item of row ``index``, or None while it is loading."""
        ...

    def request(self, start: int, stop: int) -> None:
        """Load rows ``[start, stop)`` soon (from a worker); the table is refreshed when they arrive."""
        ...


class VirtualTable(ScrollView, Generic[T], can_focus=True):
    """A keyboard-driven table over a ``RowSource``; Enter posts ``Activated`` for the row under the cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False, id="table-up"),
        Binding("down,j", "cursor_down", "Down", show=False, id="table-down"),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False, id="table-page-up"),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False, id="table-page-down"),
        Binding("home,g", "first", "First", show=False, id="table-first"),
        Binding("end,G", "last", "Last", show=False, id="table-last"),
        Binding("enter", "activate", "Open", show=False, id="table-activate"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "virtual-table--header",
        "virtual-table--cursor",
        "virtual-table--placeholder",
        "virtual-table--empty",
    }

    DEFAULT_CSS = """
    VirtualTable {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        background: $surface;
    }
    VirtualTable > .virtual-table--header { text-style: bold; color: $text; background: $panel; }
    VirtualTable > .virtual-table--cursor { background: $panel-lighten-1; text-style: bold; }
    VirtualTable:focus > .virtual-table--cursor { background: $primary 60%; color: $text; text-style: bold; }
    VirtualTable > .virtual-table--placeholder { color: $text-muted; }
    VirtualTable > .virtual-table--empty { color: $text-muted; text-style: italic; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    class CursorMoved(Message):
        """The cursor moved to another row."""

        def __init__(self, table: VirtualTable[Any], index: int) -> None:
            super().__init__()
            self.table = table
            self.index = index

        @property
        def control(self) -> VirtualTable[Any]:
            """The table."""
            return self.table

    class Activated(Message):
        """Enter (or a click on the cursor row) on a row."""

        def __init__(self, table: VirtualTable[Any], index: int) -> None:
            super().__init__()
            self.table = table
            self.index = index

        @property
        def control(self) -> VirtualTable[Any]:
            """The table."""
            return self.table

    def __init__(
        self,
        columns: Sequence[Column],
        source: RowSource[T],
        cells: Callable[[T, bool], Sequence[Cell]],
        *,
        empty_text: str = "Nothing to show",
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's own parameter name
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns = list(columns)
        self._column_index = {c.key: i for i, c in enumerate(self.columns)}
        self.source = source
        self._cells = cells
        self.empty_text = empty_text
        self._widths: list[tuple[Column, int]] = []
        self._layout_width = -1
        self._request_scheduled = False
        self._style_key: tuple[str, bool] | None = None
        self._style_cache: _Styles | None = None
        self._rows: dict[int, tuple[object, bool, int, Strip]] = {}

    # ------------------------------------------------------------------ geometry
    @property
    def body_height(self) -> int:
        """Rows visible below the header."""
        return max(self.scrollable_content_region.height - 1, 1)

    @property
    def first_visible(self) -> int:
        """Index of the top visible row."""
        return int(self.scroll_offset.y)

    def reload(self) -> None:
        """The source changed (length or order): resize, clamp the cursor, repaint and load what shows."""
        self._rows.clear()
        count = len(self.source)
        self.virtual_size = Size(self.scrollable_content_region.width or 1, count + 1)
        if self.cursor >= count:
            self.cursor = max(count - 1, 0)
        self._scroll_cursor_into_view()
        self.refresh()
        self._schedule_request()

    def invalidate(self) -> None:
        """The cells depend on more than the items (the clock, settings): render every row again."""
        self._rows.clear()
        self.refresh()

    def refresh_row(self, index: int) -> None:
        """Repaint one row if it is on screen."""
        top = self.first_visible
        if top <= index < top + self.body_height:
            self.refresh_line(index + 1)

    def visible_range(self) -> tuple[int, int]:
        """``[start, stop)`` of the rows on screen."""
        top = self.first_visible
        return top, min(top + self.body_height, len(self.source))

    # ------------------------------------------------------------------ cursor
    def move_cursor(self, index: int) -> None:
        """Put the cursor on ``index`` (clamped) and scroll it into view."""
        count = len(self.source)
        index = min(max(index, 0), max(count - 1, 0))
        changed = index != self.cursor
        self.cursor = index
        self._scroll_cursor_into_view()
        if changed:
            self.post_message(self.CursorMoved(self, index))

    def watch_cursor(self, old: int, new: int) -> None:
        """Repaint the two rows whose highlight changed."""
        self.refresh_row(old)
        self.refresh_row(new)

    def _scroll_cursor_into_view(self) -> None:
        top, height = self.first_visible, self.body_height
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, force=True)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False, force=True)

    def action_cursor_up(self) -> None:
        """Move up a row."""
        self.move_cursor(self.cursor - 1)

    def action_cursor_down(self) -> None:
        """Move down a row."""
        self.move_cursor(self.cursor + 1)

    def action_page_up(self) -> None:
        """Move up a screen."""
        height = self.body_height
        self.scroll_to(y=max(self.first_visible - height, 0), animate=False, force=True)
        self.move_cursor(self.cursor - height)

    def action_page_down(self) -> None:
        """Move down a screen."""
        height = self.body_height
        self.scroll_to(y=self.first_visible + height, animate=False, force=True)
        self.move_cursor(self.cursor + height)

    def action_first(self) -> None:
        """Go to the first row."""
        self.move_cursor(0)

    def action_last(self) -> None:
        """Go to the last row."""
        self.move_cursor(len(self.source) - 1)

    def action_activate(self) -> None:
        """Enter on the cursor row."""
        if len(self.source):
            self.post_message(self.Activated(self, self.cursor))

    def on_click(self, event: events.Click) -> None:
        """Click a row to put the cursor on it; click the cursor row again to activate it."""
        if event.y < 1:
            return
        index = self.first_visible + event.y - 1
        if index >= len(self.source):
            return
        if index == self.cursor and event.chain >= 1:
            self.action_activate()
        else:
            self.move_cursor(index)

    # ------------------------------------------------------------------ rendering
    def _layout(self, width: int) -> list[tuple[Column, int]]:
        if width == self._layout_width:
            return self._widths
        shown = [c for c in self.columns if width >= c.min_screen]
        fixed = sum(c.width for c in shown) + max(len(shown) - 1, 0)
        spare = max(width - fixed, 0)
        flex_total = sum(c.flex for c in shown) or 1
        widths: list[tuple[Column, int]] = []
        given = 0
        flexed = [c for c in shown if c.flex]
        for col in shown:
            extra = 0
            if col.flex:
                extra = spare * col.flex // flex_total
                if col is flexed[-1]:
                    extra = spare - given
                given += extra
            widths.append((col, col.width + extra))
        self._widths, self._layout_width = widths, width
        return widths

    def on_resize(self, event: events.Resize) -> None:
        """Re-lay the columns out and load the rows that became visible."""
        self._layout_width = -1
        self._rows.clear()
        self.virtual_size = Size(self.scrollable_content_region.width or 1, len(self.source) + 1)
        self._schedule_request()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        """Scrolling shows other rows: load them."""
        super().watch_scroll_y(old_value, new_value)
        self._schedule_request()

    def _schedule_request(self) -> None:
        if not self._request_scheduled:
            self._request_scheduled = True
            self.call_later(self._request_visible)

    def _request_visible(self) -> None:
        self._request_scheduled = False
        start, stop = self.visible_range()
        if stop > start:
            self.source.request(start, stop)

    def notify_style_update(self) -> None:
        """CSS or theme changed: styles and rendered rows are stale."""
        super().notify_style_update()
        self._style_key = None
        self._rows.clear()

    def _styles(self) -> _Styles:
        # Resolving a widget's CSS style is the costliest part of a line; do it once per theme and focus state.
        key = (self.app.theme, self.has_focus)
        if key != self._style_key or self._style_cache is None:
            base = self.rich_style
            self._style_cache = _Styles(
                base=base,
                header=base + self.get_component_rich_style("virtual-table--header"),
                cursor=base + self.get_component_rich_style("virtual-table--cursor"),
                placeholder=self.get_component_rich_style("virtual-table--placeholder"),
                empty=base + self.get_component_rich_style("virtual-table--empty"),
                dark=self.app.current_theme.dark,
            )
            self._style_key = key
            self._rows.clear()
        return self._style_cache

    def render_line(self, y: int) -> Strip:
        """Line 0 is the header; the others are rows from the scroll position (cached until their item changes)."""
        width = self.scrollable_content_region.width
        layout = self._layout(width)
        styles = self._styles()
        if y == 0:
            return self._strip([[(c.label, Style())] for c in self.columns], layout, styles.header, width)
        count = len(self.source)
        index = self.first_visible + y - 1
        if count == 0:
            if y == 1:
                return Strip([Segment(set_cell_size(" " + self.empty_text, width), styles.empty)], width)
            return Strip.blank(width, styles.base)
        if index >= count:
            return Strip.blank(width, styles.base)
        is_cursor = index == self.cursor
        row_style = styles.cursor if is_cursor else styles.base
        item = self.source.item_at(index)
        if item is None:
            self._schedule_request()
            return Strip([Segment(set_cell_size(" …", width), row_style + styles.placeholder)], width)
        cached = self._rows.get(index)
        if cached is not None and cached[0] is item and cached[1] == is_cursor and cached[2] == width:
            return cached[3]
        cells = [_pieces(c) for c in self._cells(item, styles.dark)]
        strip = self._strip(cells, layout, row_style, width)
        if len(self._rows) > ROW_CACHE:
            self._rows.clear()
        self._rows[index] = (item, is_cursor, width, strip)
        return strip

    def _strip(self, cells: list[list[Piece]], layout: list[tuple[Column, int]], style: Style, width: int) -> Strip:
        by_key = self._column_index
        segments: list[Segment] = []
        gap = Segment(" ", style)
        used = 0
        for n, (col, col_width) in enumerate(layout):
            if n:
                segments.append(gap)
                used += 1
            pos = by_key[col.key]
            segments.extend(_fit(cells[pos] if pos < len(cells) else [], col_width, col.align, style, col.cut))
            used += col_width  # _fit returns exactly col_width cells
        if used < width:
            segments.append(Segment(" " * (width - used), style))
        elif used > width:
            return Strip(segments, used).crop(0, width)
        return Strip(segments, width)


def _pieces(cell: Cell) -> list[Piece]:
    if isinstance(cell, str):
        return [(cell, Style())]
    if isinstance(cell, tuple):
        return [cell]
    return cell


def _fit(pieces: list[Piece], width: int, align: str, base: Style, cut: str = "end") -> list[Segment]:
    """Cut or pad styled pieces to exactly ``width`` cells (the cut side shows ``…``)."""
    total = sum(cell_len(t) for t, _ in pieces)
    out: list[Segment] = []
    if total > width and cut == "start" and len(pieces) == 1 and width > 1:
        text, style = pieces[0]
        tail = text[-(width - 1) :]
        while cell_len(tail) > width - 1:
            tail = tail[1:]
        return [Segment(set_cell_size("…" + tail, width), base + style)]
    if total > width:
        remaining = width
        for text, style in pieces:
            if remaining <= 0:
                break
            length = cell_len(text)
            if length > remaining:
                text = set_cell_size(text, max(remaining - 1, 0)) + "…" if remaining > 1 else "…"
                length = remaining
            out.append(Segment(text, base + style))
            remaining -= length
        return out
    if len(pieces) == 1:
        text, style = pieces[0]
        if not (style.bgcolor or style.underline or style.reverse or style.strike):
            # One segment per cell: the padding spaces look the same in the cell's foreground style.
            spaces = " " * (width - total)
            return [Segment(text + spaces if align == "left" else spaces + text, base + style)]
    pad = Segment(" " * (width - total), base)
    segs = [Segment(t, base + s) for t, s in pieces]
    return [*segs, pad] if align == "left" else [pad, *segs]
