"""What the UI needs from the worker pool and the scanner, as protocols (the UI is written against these)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from amphigory_tui.domain.events import ScanProgress

if TYPE_CHECKING:
    # Only for annotations: importing the pool at start-up would delay the first paint (anyio, the pipeline).
    from amphigory_tui.pool.pool import WorkerSnapshot


class PoolPort(Protocol):
    """The in-process worker pool, as the UI drives it."""

    @property
    def size(self) -> int:
        """How many claim loops the pool runs."""
        ...

    async def run(self) -> None:
        """Run until shut down."""
        ...

    def set_size(self, n: int) -> None:
        """Grow or shrink the pool now."""
        ...

    def pause_all(self) -> None:
        """Pause running jobs and stop claiming new ones."""
        ...

    def resume_all(self) -> None:
        """Claim jobs again."""
        ...

    def snapshot(self) -> Sequence[WorkerSnapshot]:
        """This process's workers as they are now."""
        ...

    async def shutdown(self, *, pause_running: bool = True, grace: bool = True) -> None:
        """Stop claiming, pause running jobs, return once ``run()`` ended."""
        ...


ScanRunner = Callable[[Callable[[ScanProgress], None], threading.Event], Any]
"""Runs one library scan in the calling (worker) thread, reporting progress, until done or the event is set."""
