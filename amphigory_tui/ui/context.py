"""What every tab and screen works with: the read/write facades, the clock, the pool and the scanner."""

from __future__ import annotations

from dataclasses import dataclass

from amphigory_tui.config import Settings
from amphigory_tui.domain.clock import Clock
from amphigory_tui.services.actions import Actions
from amphigory_tui.services.queries import Queries
from amphigory_tui.ui.ports import PoolPort, ScanRunner


@dataclass
class UiContext:
    """Shared by the panes; ``settings`` is the live copy (the settings screen replaces it)."""

    queries: Queries
    actions: Actions
    clock: Clock
    settings: Settings
    pool: PoolPort | None = None
    scan_runner: ScanRunner | None = None
