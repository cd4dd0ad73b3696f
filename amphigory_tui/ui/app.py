"""The Textual app (placeholder until the TUI issue lands)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static

from amphigory_tui.services.runtime import Services


class AmphigoryApp(App[None]):
    """amphigory's terminal UI."""

    TITLE = "amphigory"
    BINDINGS: ClassVar = [("q", "quit", "Quit")]

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    def compose(self) -> ComposeResult:
        """Header, a placeholder body, the footer."""
        yield Header()
        yield Static("amphigory")
        yield Footer()
