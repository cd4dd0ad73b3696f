"""Pictures of every tab and screen at 80×24 and 120×40 on the seeded database and a fixed clock.

Each docstring says what the picture must show; review the SVGs against it before ``--snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.ui.conftest import World, settle, snapshot_run

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture
def snap_world(world_factory: Callable[..., World], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> World:
    """The seeded world with paths that are the same on every run (they show on the settings screen)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/home/user/.config")
    # The database URL must be absolute and the same on every run: a fixed symlink to this test's directory.
    fixed = Path("/tmp/amphigory-snapshots")
    if fixed.is_symlink() or fixed.exists():
        fixed.unlink()
    fixed.symlink_to(tmp_path, target_is_directory=True)
    return world_factory(database={"url": f"sqlite:///{fixed}/amphigory.db"}, paths={"work_dir": "/srv/amphigory/work"})


def wait_for_poll(*keys: str) -> Callable[[Pilot[Any]], Any]:
    """Press ``keys``, then wait until the first poll filled the Workers and Log tabs."""
    before = snapshot_run(*keys)

    async def run(pilot: Pilot[Any]) -> None:
        await before(pilot)
        app = pilot.app
        for _ in range(100):
            if len(app.workers_pane.list.rows) == 3 and len(app.log_pane.view.lines) == 7:
                break
            await pilot.pause(0.05)
        await settle(pilot)

    return run


@pytest.mark.parametrize("size", SIZES)
def test_queue_tab(snap_world: World, snap_compare: Any, size: tuple[int, int]) -> None:
    """Queue tab: stats line "2 files need transcoding · 2 queued · 1 running · 1 failed · saved 0.7 GB"
    (on one line at both sizes), sections "All 8 │ Active 2 │ Queued 2 │ Failed 2 │ Done 2", then 8 jobs: #6 Alien
    running (cyan, transcode, a bar at 42.5 %, 23.5 fps, ETA 12m34s at 120 columns), #5 Blade Runner paused
    (orange), two queued TV episodes shown as "Doctor Who/S01E02.mkv" and "The Expanse/S02E03.mkv" (blue),
    Casablanca failed (bold red), S01E01 completed "done" (green), S01E03 canceled (grey), Jaws skipped (yellow).
    The cursor row (#6) is highlighted; the footer shows the Queue keys."""
    assert snap_compare(snap_world.app(), terminal_size=size, run_before=snapshot_run())


@pytest.mark.parametrize("size", SIZES)
def test_scan_tab(snap_world: World, snap_compare: Any, size: tuple[int, int]) -> None:
    """Scan tab: "Library /library/movies, /library/tv", "Last scan never", the counts (11 files · 8 need
    transcoding · 1 already hevc · 1 excluded · 1 probe errors in red · total · est. saving), "All files"
    selected, and 11 files by priority, each relative to its root ("Doctor Who/S01E01.mkv", "Firefly/S01E01.mkv"):
    transcode rows in blue, Fargo "keep" in green, sample-Gattaca "excluded" in grey, Heat "error" in red with its
    probe error as the reason (the Reason column shows at 120 columns only)."""
    assert snap_compare(snap_world.app(), terminal_size=size, run_before=snapshot_run("1"))


@pytest.mark.parametrize("size", SIZES)
def test_workers_tab(snap_world: World, snap_compare: Any, size: tuple[int, int]) -> None:
    """Workers tab: "This process runs no workers · other processes: 3 workers in 2 processes on 2 hosts";
    rows box2 777 "stalled" in red with beat 6m41s (past the 300 s stall timeout), nas 4242 idle with beat
    1m06s in amber (older than two 30 s heartbeats), nas 4242 busy on job 6 (transcode in cyan, a bar and
    42.5%, 23.5 fps and ETA 12m34s at 120 columns, beat 5s)."""
    app = snap_world.app(poll=True)
    assert snap_compare(app, terminal_size=size, run_before=wait_for_poll("3"))


@pytest.mark.parametrize("size", SIZES)
def test_log_tab(snap_world: World, snap_compare: Any, size: tuple[int, int]) -> None:
    """Log tab: "Showing all levels · 7 of 7 lines kept (last 5000)" and seven lines at 00:06:36: INFO in
    green, ERROR bold red (#1 HandBrakeCLI exited with code 3), WARNING orange (#2), DEBUG grey; job ids dim."""
    app = snap_world.app(poll=True)
    assert snap_compare(app, terminal_size=size, run_before=wait_for_poll("4"))


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_world: World, snap_compare: Any, size: tuple[int, int]) -> None:
    """Help: a bordered box titled "Keys · Esc closes · remap in the config file: [ui] keymap = { id = "keys" }"
    (cut at 80), the "Everywhere" group first (1–4, ?, S, ^t, ^r, q, ^p, then Textual's ^q and ^c as "Quit, as q
    (Textual's; no id)", each on one line also at 80) with each binding's description and id (tab-scan, help,
    quit…), then a blank line and "Tables" (↑ k, ↓ j, pgup ^b…); each group title is a line of its own."""
    assert snap_compare(snap_world.app(), terminal_size=size, run_before=snapshot_run("question_mark"))


@pytest.mark.parametrize("size", SIZES)
def test_job_detail_screen(snap_world: World, snap_compare: Any, size: tuple[int, int]) -> None:
    """Detail of failed job #1 Casablanca: Status failed (red), Input /library/movies/Casablanca (1942).mp4,
    Attempts 1 of 3, Created/Started/Finished 2026-01-01 00:06:35, Size 3.2 GB → —, Last error "HandBrakeCLI
    exited with code 3: Encode failed (error 3)" in red, Source h264 1920×1080; under Attempts "#1 failed ·
    2026-01-01 00:06:35 · took 0s · nas:4242:aaaaaaaaaaaa" with the error on the next line; then (scroll
    down at 80×24) the job's two log lines, INFO attempt 1/3 and ERROR HandBrakeCLI exited…"""

    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        table = pilot.app.queue_pane.table
        index = pilot.app.queue_pane.rows.index_of(snap_world.ids.failed)
        table.move_cursor(index)
        await snapshot_run("i")(pilot)

    assert snap_compare(snap_world.app(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_settings_screen(snap_world: World, snap_compare: Any, size: tuple[int, int]) -> None:
    """Settings: title "Settings · no config file; save writes /home/user/.config/amphigory/config.toml"
    (wrapped at 80), rows database.url "sqlite:////tmp/amphigory-snapshots/amphigory.db" (cursor),
    library.roots, paths, workers.count 2 … each with its source "default" (dim) in the last column, also at
    80 columns; at the bottom the help of database.url, and at 120 columns also "Allowed: '' (the default SQLite
    file), sqlite:////absolute/path.db or postgresql+psycopg://user@host/db · applies at" (cut at the edge)."""
    assert snap_compare(snap_world.app(), terminal_size=size, run_before=snapshot_run("S"))
