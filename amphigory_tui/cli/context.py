"""What every subcommand shares: the config path, the loaded settings and the opened services."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from amphigory_tui.config import Settings, load_settings
from amphigory_tui.services.runtime import Services, open_services

F = TypeVar("F", bound=Callable[..., Any])


class CliContext:
    """Lazily loaded settings and services: a bad config fails before the database is opened."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._services: Services | None = None

    @property
    def settings(self) -> Settings:
        """The validated settings (raises ``ConfigError``)."""
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def services(self, *, migrate: bool = True) -> Services:
        """Open the database and the facades once per command."""
        if self._services is None:
            self._services = open_services(self.settings, migrate=migrate)
            click.get_current_context().call_on_close(self._services.close)
        return self._services


pass_cli = click.make_pass_decorator(CliContext)
