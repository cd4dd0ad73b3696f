"""``amphigory worker``: run the worker pool without the UI."""

from __future__ import annotations

import sys

import click

from amphigory_tui.cli.context import CliContext, pass_cli


@click.command()
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=0, max=64),
    default=None,
    help="Worker loops (default: [workers] count).",
)
@click.option("--drain", is_flag=True, help="Exit 0 once nothing claimable is left and nothing runs.")
@pass_cli
def worker(cli: CliContext, workers: int | None, drain: bool) -> None:
    """Run the worker pool headless (SIGINT/SIGTERM/SIGHUP pause running jobs and exit)."""
    from amphigory_tui.pool.headless import configure_logging, run_worker

    settings = cli.settings
    configure_logging(settings)
    sys.exit(run_worker(settings, workers=workers, drain=drain))


COMMANDS = [worker]
