"""DeferredPane: a hidden tab's content mounts after the first frame, and an app that quits first closes cleanly."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static, TabbedContent, TabPane

from amphigory_tui.ui.widgets.deferred import DeferredPane

pytestmark = pytest.mark.anyio


class TwoTabs(App[None]):
    """A visible tab and a hidden one whose content is deferred; optionally quits before the first refresh."""

    def __init__(self, *, quit_at_once: bool) -> None:
        super().__init__()
        self.quit_at_once = quit_at_once

    def compose(self) -> ComposeResult:
        with TabbedContent(initial="shown"):
            with TabPane("shown", id="shown"):
                yield Static("shown")
            with TabPane("hidden", id="hidden"):
                yield DeferredPane(Static("deferred", id="deferred"))

    def on_mount(self) -> None:
        if self.quit_at_once:
            self.exit()  # before the refresh after which the deferred content would mount


async def test_the_deferred_content_mounts_after_the_first_frame() -> None:
    app = TwoTabs(quit_at_once=False)
    async with app.run_test() as pilot:
        for _ in range(50):
            if app.query("#deferred") and not app.query(DeferredPane):
                break
            await pilot.pause(0.02)
        assert app.query_one("#deferred", Static).parent is app.query_one("#hidden", TabPane)
        assert not app.query(DeferredPane)  # the placeholder removed itself


async def test_an_app_that_quits_before_the_deferred_mount_closes_without_an_error() -> None:
    """Textual's Lazy raises MountError out of run_test here (the tab is detached when its mount runs)."""
    app = TwoTabs(quit_at_once=True)
    async with app.run_test() as pilot:
        await pilot.pause()
    assert app.return_code == 0 and not app.query("#deferred")
