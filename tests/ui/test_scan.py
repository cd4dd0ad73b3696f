"""The Scan tab: a real scan of generated clips, cancel, the filter and the "needs transcoding" toggle, `a`."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amphigory_tui.cli.tui import prepare_child_processes
from amphigory_tui.domain.events import ScanProgress
from amphigory_tui.services.locks import NamedLock
from amphigory_tui.services.scanner import Scanner, scan_lock_name
from tests.media import make_clip
from tests.ui.conftest import World, press, settle
from tests.ui.helpers import notes, static_text

pytestmark = pytest.mark.anyio

SIZE = (120, 40)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 1-second H.264 clip, copied into each library."""
    return make_clip(tmp_path_factory.mktemp("scan-clip") / "clip.mp4", seconds=1, bitrate="1M")


def scanner_runner(world: World) -> Callable[[Callable[[ScanProgress], None], threading.Event], Any]:
    """The runner the real app uses: a Scanner over the world's store and settings."""

    def run(on_progress: Callable[[ScanProgress], None], cancel: threading.Event) -> Any:
        with Scanner(world.services.store, world.settings) as scanner:
            return scanner.scan(cancel=cancel, on_progress=on_progress)

    return run


async def test_s_scans_the_library_then_a_queues_it(world_factory: Callable[..., World], clip: Path) -> None:
    """`s` scans the configured roots into the database (table and counts follow); `a` queues the candidates."""
    prepare_child_processes()
    world = world_factory(seeded=False, library={"roots": []}, rules={"min_expected_savings_pct": 0})
    lib = world.tmp / "lib"
    for name in ("movies/One (2001).mp4", "movies/Two.mp4", "tv/Show/S01E01.mp4"):
        (lib / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, lib / name)
    world.services.settings = world.settings.with_value("library.roots", [str(lib)])
    queries = world.services.queries
    app = world.app(scan_runner=scanner_runner(world))
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "1")
        pane = app.scan_pane
        assert len(pane.rows) == 0
        await press(pilot, "s")
        for _ in range(300):
            if not pane.scanning:
                break
            await pilot.pause(0.05)
        await settle(pilot)
        assert not pane.scanning
        assert queries.count_media() == 3
        assert len(pane.rows) == 3
        assert pane.stats is not None and pane.stats.files == 3 and pane.stats.last_scan_at is not None
        assert any(n.startswith("Scan complete") for n in notes(app))
        info = static_text(pane.query_one("#scan-info"))
        assert "3 files" in info and "3 need transcoding" in info
        await press(pilot, "a")
        assert queries.count_jobs() == 3
        assert "Queued 3 jobs" in notes(app)
        await press(pilot, "2")
        assert len(app.queue_pane.rows) == 3


async def test_s_again_cancels_the_running_scan(world: World) -> None:
    """A second `s` sets the scan's cancel event; the tab says it was canceled and stops showing progress."""
    started = threading.Event()
    seen_cancel: list[bool] = []

    def slow_scan(on_progress: Callable[[ScanProgress], None], cancel: threading.Event) -> Any:
        on_progress(ScanProgress(5, 100, 5, 5, 0, 0, 0, 0, 50.0, 2.0, "/library/movies", None))
        started.set()
        seen_cancel.append(cancel.wait(10))
        on_progress(
            ScanProgress(5, 100, 5, 5, 0, 0, 0, 0, 50.0, None, "/library/movies", None, done=True, canceled=True)
        )

    app = world.app(scan_runner=slow_scan)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "1")
        await pilot.press("s")
        assert started.wait(5)
        await pilot.pause(0.1)
        pane = app.scan_pane
        assert pane.scanning and pane.has_class("-scanning")
        assert "5/100 files" in static_text(pane.query_one("#scan-status"))
        await press(pilot, "s")
        assert seen_cancel == [True]
        assert not pane.scanning and not pane.has_class("-scanning")
        assert "Scan canceled after 5 files" in notes(app)


async def test_s_while_another_scan_runs_says_so_and_does_not_scan(world: World) -> None:
    """`s` while another scan holds the database's scan lock (watch mode's catch-up, another process): a warning
    names that scan, and the tab neither shows progress nor reports a scan of its own."""
    held = NamedLock.try_acquire(scan_lock_name(world.services.store), doing="scanning /library")
    assert held is not None
    try:
        app = world.app(scan_runner=scanner_runner(world))
        async with app.run_test(size=SIZE) as pilot:
            await press(pilot, "1", "s")
            pane = app.scan_pane
            for _ in range(100):
                if not pane.scanning:
                    break
                await pilot.pause(0.05)
            await settle(pilot)
            assert not pane.scanning and not pane.has_class("-scanning")
            assert "Not scanning: a scan is already running (this process: scanning /library)" in notes(app)
            assert not [n for n in notes(app) if n.startswith(("Scan complete", "Scan failed", "Scan canceled"))]
    finally:
        held.release()


async def test_filter_and_needs_transcoding_toggle(world: World) -> None:
    """`/` filters the files by path, `t` shows only those that need transcoding, Esc clears the filter."""
    queries = world.services.queries
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "1")
        pane = app.scan_pane
        assert len(pane.rows) == queries.count_media() == 11
        await press(pilot, "t")
        assert list(pane.rows.ids) == queries.media_ids(needs_transcoding_only=True)
        assert len(pane.rows) == 8
        await press(pilot, "t", "slash", *"doctor", "enter")
        assert len(pane.rows) == 2
        assert {m.name for m in queries.media_by_ids(list(pane.rows.ids))} == {"S01E01.mkv", "S01E02.mkv"}
        assert app.focused is pane.table
        await press(pilot, "escape")
        assert len(pane.rows) == 11


async def test_a_on_the_scan_tab_queues(world: World) -> None:
    """`a` works on the Scan tab too."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "1", "a")
        assert world.services.queries.count_jobs() == 10
        assert "Queued 2 jobs" in notes(app)


async def test_s_without_roots_says_what_to_set(world_factory: Callable[..., World]) -> None:
    """With no library roots, `s` explains where to set them instead of failing."""
    world = world_factory(seeded=False, library={"roots": []})
    calls: list[int] = []
    app = world.app(scan_runner=lambda on_progress, cancel: calls.append(1))
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "1", "s")
        assert calls == []
        assert any("No library roots" in n for n in notes(app))


@pytest.mark.parametrize("interrupted", [True, False])
async def test_an_interrupted_scan_is_resumed_after_startup(world: World, interrupted: bool) -> None:
    """Startup found a scan checkpoint (and watch mode is off): the app restarts that scan by itself, once."""
    calls: list[int] = []

    def runner(on_progress: Callable[[ScanProgress], None], cancel: threading.Event) -> None:
        calls.append(1)

    app = world.app(scan_runner=runner, startup=lambda: None, resume_scan=lambda: interrupted)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.pause(0.1)
        await settle(pilot)
        assert calls == ([1] if interrupted else [])
        assert any("Resuming the interrupted scan" in n for n in notes(app)) is interrupted
