"""DeferredPane: a tab's content mounted just after the first frame, which an app closing first simply drops."""

from __future__ import annotations

from textual.lazy import Lazy
from textual.widget import Widget


class DeferredPane(Lazy):
    """Textual's ``Lazy``, except that the deferred mount gives up when the tab is gone by the time it runs.

    ``Lazy`` mounts after the next refresh; an app that quits in that gap (a stop signal during startup recovery)
    has already detached the tab, and ``Lazy`` then raises ``MountError`` out of the closing app.
    """

    def __init__(self, widget: Widget) -> None:
        super().__init__(widget)
        self._pane = widget

    async def mount_composed_widgets(self, widgets: list[Widget]) -> None:
        """Mount the wrapped widget after the next refresh, if the tab is still on screen then."""
        parent = self.parent
        if not isinstance(parent, Widget):
            return

        async def mount() -> None:
            if not (parent.is_attached and self.is_attached):
                return  # the app is closing: nothing left to show it in
            await parent.mount(self._pane, after=self)
            await self.remove()

        self.call_after_refresh(mount)
