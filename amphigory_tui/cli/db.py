"""``amphigory db upgrade``: apply pending migrations."""

from __future__ import annotations

import click

from amphigory_tui.cli.context import CliContext, pass_cli


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@pass_cli
def upgrade(cli: CliContext) -> None:
    """Migrate the database to the latest schema (amphigory also does this at every start)."""
    services = cli.services(migrate=True)
    current, _head = services.schema_revisions()
    click.echo(f"database at revision {current}: {services.settings.database_url}")


COMMANDS = [db]
