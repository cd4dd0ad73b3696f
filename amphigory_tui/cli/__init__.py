"""The ``amphigory`` command. Bare ``amphigory`` opens the TUI; every action is also a subcommand.

Textual (and rich) are imported only inside the commands that need them, so scripts and headless workers stay
light; ``tests/test_import_hygiene.py`` checks it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from amphigory_tui import __version__
from amphigory_tui.cli.context import CliContext, pass_cli
from amphigory_tui.domain.errors import AmphigoryError


class AmphigoryGroup(click.Group):
    """A click group that turns expected errors into one line on stderr and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report ``AmphigoryError`` without a traceback."""
        try:
            return super().invoke(ctx)
        except AmphigoryError as exc:
            _die(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _die("interrupted", 130)


def _die(message: str, code: int) -> NoReturn:
    click.echo(f"amphigory: {message}", err=True)
    sys.exit(code)


@click.group(cls=AmphigoryGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Config file (default: $AMPHIGORY_CONFIG, else the user config dir).",
)
@click.version_option(__version__, "--version", "-V", prog_name="amphigory")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """amphigory: scan a media library, queue transcodes, run them safely. Without a command: the TUI."""
    ctx.obj = CliContext(config_path)
    if ctx.invoked_subcommand is None:
        ctx.invoke(tui)


@main.command()
@pass_cli
def tui(cli: CliContext) -> None:
    """Open the terminal UI (the default)."""
    from amphigory_tui.cli.tui import run_tui

    run_tui(cli)


def _register() -> None:
    # Subcommands live in their own modules; importing them here keeps ``main`` the single entry point.
    from amphigory_tui.cli import db, doctor, jobs, recover, scan, worker

    for module in (db, doctor, jobs, recover, scan, worker):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
