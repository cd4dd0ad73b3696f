"""TUI test fixtures: a seeded SQLite database in tmp_path, a FixedClock, and an app factory.

Times are shown in UTC (TZ is set for every test) so the snapshots do not depend on the machine's zone.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from textual.lazy import Lazy
from textual.pilot import Pilot

from amphigory_tui.config import Settings, settings_from_mapping
from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.services.runtime import Services, open_services
from amphigory_tui.ui.app import AmphigoryApp
from tests.ui.seed import Seeded, seed

# Workers that never end on their own: the pool, its periodic checks.
LONG_RUNNING = frozenset({"pool", "checks"})


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC in every UI test."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@dataclass
class World:
    """One test's database, clock, services and seeded ids."""

    tmp: Path
    clock: FixedClock
    services: Services
    ids: Seeded

    @property
    def settings(self) -> Settings:
        """The settings the services were opened with."""
        return self.services.settings

    def app(self, **kwargs: Any) -> AmphigoryApp:
        """An app on this world: no polling unless asked, no global log handler, the fixed clock."""
        kwargs.setdefault("poll", False)
        kwargs.setdefault("install_log_handler", False)
        return AmphigoryApp(self.services, clock=self.clock, **kwargs)


def ui_settings(tmp: Path, **sections: dict[str, Any]) -> Settings:
    """Settings on a database in ``tmp`` with the seeded library's roots."""
    data: dict[str, dict[str, Any]] = {
        "database": {"url": f"sqlite:///{tmp / 'amphigory.db'}"},
        "library": {"roots": ["/library/movies", "/library/tv"]},
        "paths": {"work_dir": str(tmp / "work")},
        "ui": {"poll_interval_s": 0.1},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return settings_from_mapping(data)


@dataclass(frozen=True)
class Template:
    """A seeded database made once per session; each test gets a copy."""

    path: Path
    ids: Seeded
    now: float


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """Seed once (the store's writes are fsynced: 0.2 s a time), copy per test."""
    base = tmp_path_factory.mktemp("ui-template")
    clock = FixedClock()
    services = open_services(ui_settings(base), clock=clock)
    try:
        ids = seed(services.store, clock)
    finally:
        services.close()
    return Template(base / "amphigory.db", ids, clock.now())


@pytest.fixture
def world_factory(tmp_path: Path, template: Template) -> Iterator[Callable[..., World]]:
    """Build a seeded world (``seeded=False``: an empty database), closed at teardown."""
    opened: list[Services] = []

    def make(*, seeded: bool = True, **sections: dict[str, Any]) -> World:
        if seeded:
            shutil.copyfile(template.path, tmp_path / "amphigory.db")
            clock = FixedClock(template.now)
            ids = template.ids
        else:
            clock = FixedClock()
            ids = Seeded(0, 0, 0, 0, 0, 0, 0, 0)
        services = open_services(ui_settings(tmp_path, **sections), clock=clock)
        opened.append(services)
        return World(tmp_path, clock, services, ids)

    yield make
    for services in opened:
        services.close()


@pytest.fixture
def world(world_factory: Callable[..., World]) -> World:
    """The seeded world."""
    return world_factory()


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until every short worker (database reads and writes) finished and the messages it posted were handled.

    A worker's result message can start another worker (an action's ActionDone starts a reload), hence the loop.
    """
    app = pilot.app
    for _ in range(500):
        # The first load starts once the first frame is painted (Ready); the hidden tabs mount just after it.
        if getattr(app, "started_loading", True) and not app.screen_stack[0].query(Lazy):
            break
        await pilot.pause(0.01)
    for _ in range(200):
        busy = [w for w in app.workers if w.group not in LONG_RUNNING and not w.is_finished]
        if not busy:
            # Messages posted from other threads (the bridge, the poller) are handled by this pause.
            await pilot.pause()
            if not [w for w in app.workers if w.group not in LONG_RUNNING and not w.is_finished]:
                return
            continue
        for worker in busy:
            await worker.wait()
        await pilot.pause()
    raise AssertionError("the app's workers never settled")


async def press(pilot: Pilot[Any], *keys: str) -> None:
    """Press keys, letting the app finish the work each one started."""
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


def snapshot_run(*keys: str) -> Callable[[Pilot[Any]], Any]:
    """A ``run_before`` for snap_compare: settle, press ``keys`` one by one, settle."""

    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for key in keys:
            await press(pilot, key)
        await settle(pilot)

    return run


@pytest.fixture(autouse=True)
def no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's own theme or colour settings out of the pictures."""
    for name in ("TEXTUAL_THEME", "NO_COLOR", "TEXTUAL_ANIMATIONS"):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("TERM", "xterm-256color")
