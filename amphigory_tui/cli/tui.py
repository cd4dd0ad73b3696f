"""Starting the TUI: the only place the CLI imports Textual."""

from __future__ import annotations

from amphigory_tui.cli.context import CliContext


def run_tui(cli: CliContext) -> None:
    """Open the services and run the Textual app until the user quits."""
    settings = cli.settings
    services = cli.services()
    from amphigory_tui.ui.app import AmphigoryApp

    AmphigoryApp(services).run()
    del settings
