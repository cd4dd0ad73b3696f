"""The Log tab: database lines of every process plus this process's records, level filter, follow, bounded."""

from __future__ import annotations

import logging

import pytest

from amphigory_tui.domain.events import LogRecord
from amphigory_tui.ui.widgets.log_view import LogView
from tests.ui.conftest import World, press, settle
from tests.ui.helpers import static_text

pytestmark = pytest.mark.anyio

SIZE = (100, 30)


async def wait_lines(pilot: object, view: LogView, count: int) -> None:
    """Wait until the view keeps ``count`` lines."""
    for _ in range(60):
        if len(view.lines) >= count:
            return
        await pilot.pause(0.05)  # type: ignore[attr-defined]
    raise AssertionError(f"the log has {len(view.lines)} lines, not {count}")


async def test_db_lines_arrive_and_the_level_filter_cycles(world: World) -> None:
    """Lines from processing_log show up; `l` cycles debug → info → warning → error → debug."""
    app = world.app(poll=True)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4")
        view = app.log_pane.view
        await wait_lines(pilot, view, 7)
        assert [line.message for line in view.shown][:2] == [
            "Scan complete: 11 files, 8 need transcoding",
            "Queued 3 jobs",
        ]
        assert app.focused is view
        await press(pilot, "l")
        assert view.min_level == "info" and len(view.shown) == 6
        await press(pilot, "l")
        assert view.min_level == "warning"
        assert [line.level for line in view.shown] == ["error", "warning"]
        await press(pilot, "l")
        assert [line.message for line in view.shown] == ["HandBrakeCLI exited with code 3: Encode failed"]
        assert "error and above" in static_text(app.log_pane.query_one("#log-status"))
        await press(pilot, "l")
        assert len(view.shown) == 7


async def test_follows_new_lines_unless_scrolled_up(world: World) -> None:
    """At the bottom the view follows new lines; scrolled up it stays put; End follows again."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4")
        view = app.log_pane.view
        app.log_pane.add_local([LogRecord("info", f"line {n}", created_at=world.clock.now()) for n in range(200)])
        await settle(pilot)
        assert view.following and view.scroll_offset.y == view.max_scroll_y > 0
        await press(pilot, "home")
        assert view.scroll_offset.y == 0
        await press(pilot, "down", "j")
        assert view.scroll_offset.y == 2
        await press(pilot, "k", "pagedown")
        assert view.scroll_offset.y == 1 + view.scrollable_content_region.height
        await press(pilot, "pageup", "up", "home")
        assert view.scroll_offset.y == 0
        app.log_pane.add_local([LogRecord("warning", "more", created_at=world.clock.now())])
        await settle(pilot)
        assert view.scroll_offset.y == 0
        await press(pilot, "end")
        assert view.following
        app.log_pane.add_local([LogRecord("info", "newest", created_at=world.clock.now())])
        await settle(pilot)
        assert view.following and view.shown[-1].message == "newest"


async def test_own_logging_records_show_and_memory_is_bounded(world: World) -> None:
    """This process's logging records reach the tab through the bridge; only the last 5000 lines are kept."""
    app = world.app(install_log_handler=True)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "4")
        logging.getLogger("amphigory_tui.test").warning("disk almost full: %s", "/work")
        await settle(pilot)
        view = app.log_pane.view
        assert view.shown[-1].message == "disk almost full: /work" and view.shown[-1].level == "warning"
        app.log_pane.add_local([LogRecord("info", f"n{n}") for n in range(6000)])
        await settle(pilot)
        assert len(view.lines) == 5000 and len(view.shown) == 5000
        assert view.shown[-1].message == "n5999"
