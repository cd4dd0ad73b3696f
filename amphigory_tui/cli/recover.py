"""``amphigory recover``: run the startup recovery on demand and print what it did."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from amphigory_tui.cli.context import CliContext, pass_cli
from amphigory_tui.services.locks import hold_process_lock
from amphigory_tui.services.recovery import recover as run_recovery
from amphigory_tui.services.recovery import summarize

_LABELS = (
    ("orphaned_requeued", "orphaned jobs requeued"),
    ("orphaned_failed", "orphaned jobs failed (max retries)"),
    ("orphaned_canceled", "orphaned jobs canceled"),
    ("killed_processes", "leftover tool processes ended"),
    ("replaces_finished", "interrupted replaces finished"),
    ("replaces_rolled_back", "interrupted replaces rolled back"),
    ("paused_resumed", "paused jobs resumed"),
    ("temp_files_removed", "temp files removed"),
    ("temp_bytes_removed", "temp bytes removed"),
    ("stale_locks_removed", "stale lock files removed"),
    ("workers_pruned", "dead workers pruned"),
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@click.option("--keep-temp", is_flag=True, help="Do not remove leftover temp files from work_dir.")
@pass_cli
def recover(cli: CliContext, as_json: bool, keep_temp: bool) -> None:
    """Recover orphaned jobs, resume paused ones, remove leftover temp files (what every start does)."""
    services = cli.services()
    # Holding our own lock first: this process is alive for anyone who looks while we recover.
    lock = hold_process_lock()
    report = run_recovery(services, lock=lock, clean_temp=not keep_temp)
    if as_json:
        data = asdict(report)
        data["notes"] = list(report.notes)
        data["summary"] = summarize(report)
        click.echo(json.dumps(data))
        return
    click.echo(summarize(report))
    for key, label in _LABELS:
        click.echo(f"  {label}: {getattr(report, key)}")


COMMANDS = [recover]
