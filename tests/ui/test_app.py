"""The app frame: tab keys, help, theme, quit (with and without running jobs), palette, keymap, table keys."""

from __future__ import annotations

import ast
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import pytest
from textual.command import CommandPalette
from textual.widgets import TabbedContent

import amphigory_tui.ui
from amphigory_tui.pool.pool import WorkerSnapshot
from amphigory_tui.ui.screens.help import HelpScreen, binding_groups
from amphigory_tui.ui.theme import DARK, LIGHT
from amphigory_tui.ui.widgets.confirm import ConfirmModal
from tests.ui.conftest import World, press, settle
from tests.ui.helpers import notes, shown_ids, static_text

pytestmark = pytest.mark.anyio

SIZE = (120, 40)


class FakePool:
    """A pool running one job: what the quit confirmation needs to see (snapshot, shutdown, run)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.stopped = anyio.Event()
        self.shutdowns: list[tuple[bool, bool]] = []
        self.size = 1

    async def run(self) -> None:
        """Run until shut down."""
        await self.stopped.wait()

    def set_size(self, n: int) -> None:
        """Resize."""
        self.size = n

    def pause_all(self) -> None:
        """Not used here."""

    def resume_all(self) -> None:
        """Not used here."""

    def snapshot(self) -> Sequence[WorkerSnapshot]:
        """One busy worker."""
        return [WorkerSnapshot("here:1:abc", "busy", self.job_id)]

    async def shutdown(self, *, pause_running: bool = True, grace: bool = True) -> None:
        """Record the call and let run() end."""
        self.shutdowns.append((pause_running, grace))
        self.stopped.set()


async def test_number_keys_switch_tabs_and_focus_their_table(world: World) -> None:
    """1–4 show Scan, Queue, Workers, Log; the shown tab's table has the focus (its keys are in the footer)."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tabs = app.query_one(TabbedContent)
        assert tabs.active == "queue" and app.focused is app.queue_pane.table
        for key, tab, widget in (
            ("1", "scan", app.scan_pane.table),
            ("3", "workers", app.workers_pane.table),
            ("4", "log", app.log_pane.view),
            ("2", "queue", app.queue_pane.table),
        ):
            await press(pilot, key)
            assert tabs.active == tab
            assert app.focused is widget


async def test_table_movement_keys(world: World) -> None:
    """Arrows, j/k, Page Up/Down, Home/End and g/G move the cursor within the rows shown."""
    app = world.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.queue_pane.table
        for key, expected in (
            ("down", 1),
            ("j", 2),
            ("k", 1),
            ("up", 0),
            ("up", 0),
            ("end", 7),
            ("home", 0),
            ("G", 7),
            ("g", 0),
            ("pagedown", 7),
            ("pageup", 0),
        ):
            await press(pilot, key)
            assert table.cursor == expected, key
        assert table.cursor_job is not None and table.cursor_job.id == shown_ids(app)[0]


async def test_help_lists_every_binding(world: World) -> None:
    """`?` opens the help with every binding id of every tab; Esc closes it."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = static_text(app.screen.query_one("#help-text"), width=120)
        ids = [b.id for _, group in binding_groups() for b in group if b.id]
        assert len(ids) > 40
        for binding_id in ids:
            assert binding_id in text, binding_id
        await press(pilot, "escape")
        assert not isinstance(app.screen, HelpScreen)


def declared_binding_ids() -> set[str]:
    """Every ``Binding(..., id="…")`` written anywhere in amphigory_tui/ui (read from the source, not the help)."""
    root = Path(amphigory_tui.ui.__file__).parent
    found: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Binding":
                for keyword in node.keywords:
                    if keyword.arg == "id" and isinstance(keyword.value, ast.Constant):
                        found.add(str(keyword.value.value))
    return found


async def test_help_lists_every_declared_binding_and_textuals_quit_keys(world: World) -> None:
    """Every binding id declared in the UI code (dialogs and prompts included) is on the help screen, in a group
    saying where it applies, and so are Textual's own ctrl+q and ctrl+c."""
    declared = declared_binding_ids()
    assert {"confirm-yes", "confirm-no", "prompt-cancel", "unsaved-save", "detail-close", "help-close"} <= declared
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        lines = static_text(app.screen.query_one("#help-text"), width=120).splitlines()
        shown = {line.split()[-1] for line in lines if line.strip()}
        assert declared <= shown, sorted(declared - shown)
        assert "Yes/no questions (quit, P/C on matches)" in [line.strip() for line in lines]
        quits = [line for line in lines if "Quit, as q" in line]
        assert [line.split()[0] for line in quits] == ["^q", "^c"]


async def test_remapping_a_dialog_key_is_not_reported_unknown(world_factory: Callable[..., World]) -> None:
    """`confirm-yes = "Y"` is a known id (no warning), and the quit question then answers to Y, not y."""
    world = world_factory(ui={"keymap": {"confirm-yes": "Y"}})
    pool = FakePool(world.ids.running)
    app = world.app(pool=pool)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert not any("no binding has the id" in n for n in notes(app))
        await press(pilot, "q", "y")
        assert isinstance(app.screen, ConfirmModal) and pool.shutdowns == []
        await pilot.press("Y")
        for _ in range(40):
            if app._exit:
                break
            await pilot.pause(0.05)
        assert pool.shutdowns == [(True, True)]


async def test_ctrl_t_switches_light_and_dark(world: World) -> None:
    """ctrl+t toggles the theme and the live setting."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.theme == DARK
        await press(pilot, "ctrl+t")
        assert app.theme == LIGHT and not app.settings.ui.dark
        await press(pilot, "ctrl+t")
        assert app.theme == DARK and app.settings.ui.dark


async def test_q_quits_at_once_when_nothing_runs_here(world: World) -> None:
    """No pool in this process: `q` quits without asking."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause(0.2)
        assert app._exit
        assert not isinstance(app.screen, ConfirmModal)


async def test_q_asks_while_jobs_run_and_pauses_them(world: World) -> None:
    """With a job running here, `q` asks; `n` stays; `y` shuts the pool down (pausing the job) and quits."""
    pool = FakePool(world.ids.running)
    app = world.app(pool=pool)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "q")
        assert isinstance(app.screen, ConfirmModal)
        assert "1 job is running in this process" in static_text(app.screen.query_one("#confirm-text"))
        await press(pilot, "n")
        assert not isinstance(app.screen, ConfirmModal) and not app._exit
        await pilot.press("q", "y")
        for _ in range(40):
            if app._exit:
                break
            await pilot.pause(0.05)
        assert pool.shutdowns == [(True, True)]
        assert app._exit


@pytest.mark.parametrize("key", ["ctrl+q", "ctrl+c"])
async def test_ctrl_q_and_ctrl_c_quit_as_carefully_as_q(world: World, key: str) -> None:
    """ctrl+q and ctrl+c take the same path as `q`: with a job running here they ask first."""
    pool = FakePool(world.ids.running)
    app = world.app(pool=pool)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, key)
        assert isinstance(app.screen, ConfirmModal)
        await press(pilot, "n")
        assert not app._exit and pool.shutdowns == []


async def test_command_palette_runs_queue_all(world: World) -> None:
    """ctrl+p, "queue all", Enter: the same as `a`."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"queue all files")
        await pilot.pause(0.3)
        await press(pilot, "enter")
        await settle(pilot)
        assert world.services.queries.count_jobs() == 10


async def test_keymap_from_config_remaps_keys(world_factory: Callable[..., World]) -> None:
    """`[ui] keymap` moves queue-all to ctrl+a: `a` does nothing, ctrl+a queues; help shows the new key."""
    world = world_factory(ui={"keymap": {"queue-all": "ctrl+a", "no-such-binding": "x"}})
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        assert any("no binding has the id no-such-binding" in n for n in notes(app))
        await press(pilot, "a")
        assert world.services.queries.count_jobs() == 8
        await press(pilot, "ctrl+a")
        assert world.services.queries.count_jobs() == 10
        await press(pilot, "question_mark")
        text = static_text(app.screen.query_one("#help-text"), width=120)
        assert any("^a" in line and "queue-all" in line for line in text.splitlines())


async def test_ctrl_r_reloads_what_another_process_changed(world: World) -> None:
    """ctrl+r reloads the tables and counts without waiting for the poll."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        world.services.actions.queue_all()
        await press(pilot, "ctrl+r")
        assert len(shown_ids(app)) == 10


async def test_a_stop_signal_during_startup_recovery_quits_once_it_is_done(world: World) -> None:
    """SIGTERM while recovery still runs (in its thread): the app neither dies half-way nor starts the pool; it
    quits as soon as recovery is done, having claimed nothing."""
    release = threading.Event()
    built: list[FakePool] = []

    def startup() -> str | None:
        release.wait(30)
        return None

    def factory(_sink: object) -> FakePool:
        built.append(FakePool(world.ids.running))
        return built[-1]

    app = world.app(pool_factory=factory, startup=startup, stop_signals=True)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):  # the receiver replaces the default action (death) once it is in place
            if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
                break
            await pilot.pause(0.01)
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if "Stopping once startup recovery is done…" in notes(app):
                break
            await pilot.pause(0.02)
        assert "Stopping once startup recovery is done…" in notes(app) and not app._exit
        release.set()
        for _ in range(100):
            if app._exit:
                break
            await pilot.pause(0.02)
        assert app._exit
    assert built == [] and not app.started
