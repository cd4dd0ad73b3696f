"""The command palette's amphigory entries (ctrl+p): the main actions, found by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from amphigory_tui.ui.app import AmphigoryApp


def _commands(app: AmphigoryApp) -> list[tuple[str, str, Callable[[], object]]]:
    def tab_then(tab: str, action: str) -> Callable[[], object]:
        def run() -> None:
            app.action_show_tab(tab)
            pane = {"scan": app.scan_pane, "queue": app.queue_pane, "workers": app.workers_pane}[tab]
            getattr(pane, f"action_{action}")()

        return run

    return [
        ("Queue all files that need transcoding", "The a key", tab_then("queue", "queue_all")),
        ("Start or cancel a library scan", "The s key on the Scan tab", tab_then("scan", "scan")),
        ("Search jobs", "The / key on the Queue tab", tab_then("queue", "search")),
        ("Cycle the queue section (all, active, queued, failed, done)", "The v key", tab_then("queue", "section")),
        ("Cycle the movies / TV path filter", "The f key on the Queue tab", tab_then("queue", "path_filter")),
        ("Add a worker", "The + key on the Workers tab", partial(app.workers_pane.action_resize, 1)),
        ("Remove a worker", "The - key on the Workers tab", partial(app.workers_pane.action_resize, -1)),
        ("Pause or resume all workers", "The P key on the Workers tab", app.workers_pane.action_toggle_pause),
        ("Settings", "Every setting, its value and where it came from (S)", app.action_settings),
        ("Help: every key", "The ? key", app.action_help),
        ("Switch light / dark theme", "ctrl+t", app.action_toggle_theme),
        ("Reload everything", "ctrl+r", app.action_reload),
        ("Show the Scan tab", "1", partial(app.action_show_tab, "scan")),
        ("Show the Queue tab", "2", partial(app.action_show_tab, "queue")),
        ("Show the Workers tab", "3", partial(app.action_show_tab, "workers")),
        ("Show the Log tab", "4", partial(app.action_show_tab, "log")),
        ("Quit amphigory", "q", app.action_request_quit),
    ]


class AmphigoryCommands(Provider):
    """amphigory's actions in the command palette."""

    def _app(self) -> AmphigoryApp:
        from amphigory_tui.ui.app import AmphigoryApp

        assert isinstance(self.app, AmphigoryApp)
        return self.app

    async def discover(self) -> Hits:
        """Everything, when nothing is typed yet."""
        for title, help_text, callback in _commands(self._app()):
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """Commands whose title matches what is typed."""
        matcher = self.matcher(query)
        for title, help_text, callback in _commands(self._app()):
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
