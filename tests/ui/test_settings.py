"""The settings screen (S) and the TOML writer behind its save."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from textual.pilot import Pilot

from amphigory_tui.config import load_settings
from amphigory_tui.services.runtime import open_services
from amphigory_tui.ui.app import AmphigoryApp
from amphigory_tui.ui.screens.prompt import PromptModal
from amphigory_tui.ui.screens.settings import SaveDiscardModal, SettingsScreen, parse_input
from amphigory_tui.ui.settings_file import update_toml
from tests.ui.conftest import World, press, settle
from tests.ui.helpers import notes, static_text
from tests.ui.test_app import FakePool

pytestmark = pytest.mark.anyio

SIZE = (120, 40)

CONFIG = """\
# my amphigory config
[database]
url = "{url}"  # the test database

[library]
roots = ["/library/movies", "/library/tv"]

[workers]
# how many encodes at once
count = 2   # two is plenty
heartbeat_interval_s = 30

[ui]
poll_interval_s = 0.1
"""


@pytest.fixture
def config_file(world: World) -> Path:
    """The world's settings as a commented TOML file."""
    path = world.tmp / "config.toml"
    path.write_text(CONFIG.format(url=world.settings.database_url), encoding="utf-8")
    return path


def app_on_file(world: World, path: Path, pool: FakePool | None = None) -> AmphigoryApp:
    """An app whose settings were loaded from ``path`` (so save writes there)."""
    settings = load_settings(path)
    services = open_services(settings, clock=world.clock)
    world.services.close()
    world.services = services
    return world.app(pool=pool)


async def edit(pilot: Pilot[AmphigoryApp], dotted: str, text: str) -> PromptModal:
    """Put the cursor on ``dotted``, press Enter, replace the value with ``text``, press Enter."""
    screen = pilot.app.screen
    assert isinstance(screen, SettingsScreen)
    index = [row.dotted for row in screen.list.rows].index(dotted)
    screen.table.move_cursor(index)
    await press(pilot, "enter")
    prompt = pilot.app.screen
    assert isinstance(prompt, PromptModal)
    # Typing is Input's business (Textual tests it); what matters here is what Enter does with the text.
    prompt.query_one("#prompt-input").value = text  # type: ignore[attr-defined]
    await press(pilot, "enter")
    return prompt


async def test_every_setting_is_listed_with_its_source(world: World, config_file: Path) -> None:
    """S lists every key; keys from the file say so, the others say default."""
    from amphigory_tui.config import iter_keys

    app = app_on_file(world, config_file)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "S")
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        assert [r.dotted for r in screen.list.rows] == [f"{s}.{k}" for s, k, _, _ in iter_keys()]
        rows = {r.dotted: r for r in screen.list.rows}
        assert screen._cells(rows["workers.count"], True)[2] == "file"
        assert screen._cells(rows["jobs.max_retries"], True)[2][0] == "default"  # type: ignore[index]
        assert str(config_file) in static_text(screen.query_one("#settings-title"))


async def test_edit_applies_live_save_keeps_comments(world: World, config_file: Path) -> None:
    """Editing workers.count resizes the pool at once; ctrl+s writes only that line, comments kept."""
    pool = FakePool(world.ids.running)
    app = app_on_file(world, config_file, pool)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "S")
        prompt = await edit(pilot, "workers.count", "99")
        assert app.screen is prompt
        assert "out of range" in static_text(prompt.query_one("#prompt-error"))
        await press(pilot, "escape")
        await edit(pilot, "workers.count", "5")
        assert isinstance(app.screen, SettingsScreen)
        assert pool.size == 5 and app.settings.workers.count == 5
        assert app.screen.has_class("-modified")
        await press(pilot, "ctrl+s")
        text = config_file.read_text(encoding="utf-8")
        assert text == CONFIG.format(url=world.settings.database_url).replace(
            "count = 2   # two is plenty", "count = 5  # two is plenty"
        )
        assert load_settings(config_file).workers.count == 5
        assert not app.screen.has_class("-modified")
        await edit(pilot, "rules.exclude_patterns", "*sample*, *extras*")
        await edit(pilot, "transcode.original_policy", "delete")
        await press(pilot, "ctrl+s")
        saved = tomllib.loads(config_file.read_text(encoding="utf-8"))
        assert saved["rules"]["exclude_patterns"] == ["*sample*", "*extras*"]
        assert saved["transcode"]["original_policy"] == "delete"
        assert "# how many encodes at once" in config_file.read_text(encoding="utf-8")


async def test_discard_really_discards(world: World, config_file: Path) -> None:
    """D puts back the saved values, live ones too (the Go tool kept the changed values in memory)."""
    pool = FakePool(world.ids.running)
    app = app_on_file(world, config_file, pool)
    before = config_file.read_text(encoding="utf-8")
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "S")
        await edit(pilot, "workers.count", "7")
        await edit(pilot, "ui.dark", "false")
        assert pool.size == 7 and app.theme == "amphigory-light"
        await press(pilot, "D")
        assert pool.size == 2 and app.settings.workers.count == 2
        assert app.settings.ui.dark and app.theme == "amphigory-dark"
        assert "Changes discarded" in notes(app)
        screen = app.screen
        assert isinstance(screen, SettingsScreen) and screen.changed == []
    assert config_file.read_text(encoding="utf-8") == before


async def test_leaving_with_unsaved_changes_asks(world: World, config_file: Path) -> None:
    """Esc with unsaved changes asks save/discard/stay: Esc stays, `d` discards and leaves, `s` saves."""
    pool = FakePool(world.ids.running)
    app = app_on_file(world, config_file, pool)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "S")
        await edit(pilot, "workers.count", "3")
        await press(pilot, "escape")
        assert isinstance(app.screen, SaveDiscardModal)
        await press(pilot, "escape")
        assert isinstance(app.screen, SettingsScreen)
        await press(pilot, "escape", "d")
        assert not isinstance(app.screen, (SettingsScreen, SaveDiscardModal))
        assert pool.size == 2
        await press(pilot, "S")
        await edit(pilot, "workers.count", "4")
        await press(pilot, "plus")
        assert pool.size == 5
        await press(pilot, "minus", "escape", "s")
        assert not isinstance(app.screen, SettingsScreen)
        await settle(pilot)
    assert load_settings(config_file).workers.count == 4


async def test_workers_tab_resize_survives_other_settings(world: World, config_file: Path) -> None:
    """`+` twice on the Workers tab: the settings screen shows workers.count 4, and editing, discarding and saving
    other keys leaves the pool at 4 (the file keeps its 2)."""
    pool = FakePool(world.ids.running)
    pool.size = 2  # as the file says
    app = app_on_file(world, config_file, pool)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "3", "plus", "plus")
        assert pool.size == 4 and app.settings.workers.count == 4
        await press(pilot, "S")
        screen = app.screen
        assert isinstance(screen, SettingsScreen)
        rows = {r.dotted: r for r in screen.list.rows}
        assert screen._cells(rows["workers.count"], True)[1] == "4"
        assert screen._cells(rows["workers.count"], True)[2][0] == "live"  # type: ignore[index]  # not the file's 2
        await edit(pilot, "ui.dark", "false")
        assert pool.size == 4
        await press(pilot, "D")
        assert pool.size == 4 and app.settings.workers.count == 4
        await edit(pilot, "ui.poll_interval_s", "0.5")
        await press(pilot, "ctrl+s")
        assert load_settings(config_file).ui.poll_interval_s == 0.5
        assert load_settings(config_file).workers.count == 2
        assert pool.size == 4 and app.settings.workers.count == 4
        assert screen._cells(rows["workers.count"], True)[1] == "4"
        assert screen._cells(rows["workers.count"], True)[2][0] == "live"  # type: ignore[index]
        assert screen._cells(rows["ui.poll_interval_s"], True)[2] == "file"  # saved: from the file now
        await press(pilot, "escape")
        assert not isinstance(app.screen, (SettingsScreen, SaveDiscardModal))
        assert pool.size == 4


def test_parse_input_follows_the_key_type() -> None:
    """Typed text becomes the value the loader would read from TOML, guided by the current value's type."""
    assert parse_input("5", 2) == 5
    assert parse_input("2.5", 1.0) == 2.5
    assert parse_input("yes", False) is True
    assert parse_input("H.265 MKV 720p30", "x") == "H.265 MKV 720p30"
    assert parse_input('"quoted"', "x") == "quoted"
    assert parse_input("/a, /b", ()) == ["/a", "/b"]
    assert parse_input('["/a", "/b"]', ()) == ["/a", "/b"]
    assert parse_input("", ()) == []
    assert parse_input('{ queue-all = "ctrl+a" }', {}) == {"queue-all": "ctrl+a"}
    assert parse_input("abc", 3) == "abc"


@pytest.mark.parametrize(
    ("before", "changes", "after"),
    [
        ("[workers]\ncount = 2 # c\n", {"workers.count": 4}, "[workers]\ncount = 4  # c\n"),
        (
            "[workers]\ncount = 2\n\n[ui]\ndark = true\n",
            {"workers.kill_grace_s": 3.0},
            "[workers]\ncount = 2\nkill_grace_s = 3.0\n\n[ui]\ndark = true\n",
        ),
        ("# top\n", {"ui.dark": False}, "# top\n\n[ui]\ndark = false\n"),
        (
            '[rules]\nextensions = [\n  "mkv", # video\n  "mp4",\n]  # end\nx = 1\n',
            {"rules.extensions": ("avi",)},
            '[rules]\nextensions = ["avi"]  # end\nx = 1\n',
        ),
        (
            '[tools]\nhandbrake = "a # not a comment" # real\n',
            {"tools.handbrake": '/opt/hb "x"'},
            '[tools]\nhandbrake = "/opt/hb \\"x\\""  # real\n',
        ),
        ("[ui]\nkeymap = {}\n", {"ui.keymap": {"queue-all": "ctrl+a"}}, '[ui]\nkeymap = { "queue-all" = "ctrl+a" }\n'),
        (
            "[paths]\nwork_dir = ''\n[paths.extra]\nwork_dir = 'x'\n",
            {"paths.work_dir": "/w"},
            "[paths]\nwork_dir = \"/w\"\n[paths.extra]\nwork_dir = 'x'\n",
        ),
    ],
)
def test_update_toml_edits_in_place(before: str, changes: dict[str, object], after: str) -> None:
    """A key's line is rewritten in place (its comment kept), a new key goes under its section, a new section last."""
    assert update_toml(before, changes) == after


async def test_settings_from_the_palette(world: World) -> None:
    """The palette's "Settings" entry opens the screen."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "ctrl+p")
        await pilot.press(*"settings")
        await pilot.pause(0.3)
        await press(pilot, "enter")
        assert isinstance(app.screen, SettingsScreen)
