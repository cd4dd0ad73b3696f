"""Watch mode with real inotify events: a slow copy is probed once, after it stops growing; deletions and folders
moved in are picked up; `amphigory scan --watch` end to end."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.from_thread
import pytest

from amphigory_tui.config import ScannerSettings
from amphigory_tui.domain.errors import StoreError
from amphigory_tui.domain.events import LogRecord
from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.services.probe import ProbePool
from amphigory_tui.services.scanner import FileOutcome, Scanner, ScanSummary
from amphigory_tui.services.watch import LibraryWatcher, watch_library
from amphigory_tui.store import Store
from tests.scanner.conftest import BIG, HOSTILE, MEDIA, CountingProber, amphigory_argv, make_config, settings_with


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` (the watcher reports from the event loop) until it holds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_file_copied_in_slowly_is_probed_once_after_it_stops_growing(
    tmp_path: Path, store: Store, pool: ProbePool, library_src: Path
) -> None:
    """Written in chunks over ~2 s with a 1.5 s hold: not probed while growing, probed once (whole), auto-queued."""
    root = tmp_path / "root"
    root.mkdir()
    counting = CountingProber(pool)
    outcomes: list[FileOutcome] = []
    lines: list[LogRecord] = []
    watcher = LibraryWatcher(
        Scanner(store, settings_with(), prober=counting),
        [str(root)],
        hold_s=1.5,
        tick_s=0.2,
        auto_queue=True,
        on_outcome=outcomes.append,
        on_event=lines.append,
    )
    data = (library_src / BIG).read_bytes()
    dest = root / "Incoming" / "New Movie (2024).mkv"
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run, stop)
        dest.parent.mkdir()
        chunks = 7
        with open(dest, "wb") as fh:
            for i in range(chunks):
                fh.write(data[i * len(data) // chunks : (i + 1) * len(data) // chunks])
                fh.flush()
                await anyio.sleep(0.3)
                assert counting.count == 0, "probed while the file was still growing"
        assert str(dest) in watcher.pending
        await wait_until(lambda: bool(outcomes))
        stop.set()
    assert counting.paths == [str(dest)]
    (outcome,) = outcomes
    assert (outcome.outcome, outcome.should_transcode, outcome.queued) == ("added", True, True)
    assert outcome.reason.startswith("h264 1080p → hevc")
    row = store.media.get_by_path(str(dest))
    assert row is not None and row.size_bytes == len(data) and row.probe_error is None
    assert [j.input_path for j in store.jobs.list_jobs()] == [str(dest)]
    assert lines[0].message == f"watch: added {dest}: {outcome.reason} (queued)"


@pytest.mark.anyio
async def test_deleted_files_and_folders_moved_in(
    tmp_path: Path, store: Store, pool: ProbePool, library_src: Path
) -> None:
    """A deletion marks the file missing (its job canceled) at once; a folder renamed into the root is walked."""
    root = tmp_path / "root"
    (root / "Show").mkdir(parents=True)
    old = root / "Show/old.mkv"
    shutil.copy(library_src / BIG, old)
    outside = tmp_path / "outside/Season 2"
    outside.mkdir(parents=True)
    for n in (1, 2):
        shutil.copy(library_src / HOSTILE, outside / f"e0{n}.mkv")
    scanner = Scanner(store, settings_with(), prober=CountingProber(pool))
    scanner.scan([str(root)])
    store.jobs.queue_for_transcoding()
    (job,) = store.jobs.list_jobs()
    outcomes: list[FileOutcome] = []
    watcher = LibraryWatcher(scanner, [str(root)], hold_s=0.3, tick_s=0.1, on_outcome=outcomes.append)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run, stop)
        os.unlink(old)
        await wait_until(lambda: any(o.outcome == "missing" for o in outcomes))
        os.rename(outside, root / "Show/Season 2")
        await wait_until(lambda: sum(o.outcome == "added" for o in outcomes) == 2)
        stop.set()
    missing_row = store.media.get_by_path(str(old))
    assert missing_row is not None and missing_row.missing
    assert store.jobs.get(job.id).status is JobStatus.CANCELED
    added = sorted(o.path for o in outcomes if o.outcome == "added")
    assert added == [str(root / "Show/Season 2/e01.mkv"), str(root / "Show/Season 2/e02.mkv")]


def test_scan_watch_cli_picks_up_a_new_file_and_stops_on_ctrl_c(tmp_path: Path, library_src: Path) -> None:
    """`amphigory scan --watch`: scan, "watching …", a new file reported, Ctrl+C → exit 130."""
    root = tmp_path / "root"
    root.mkdir()
    config = make_config(tmp_path, watch_hold_s=0.3, probe_workers=1)
    proc = subprocess.Popen(
        amphigory_argv(config, "scan", "--watch", str(root)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()

    def next_line_with(text: str) -> str:
        while True:
            line = lines.get(timeout=30)
            if text in line:
                return line

    try:
        next_line_with("watching ")
        new = root / "new.mkv"
        shutil.copy(library_src / HOSTILE, new)
        line = next_line_with("watch: added")
        assert line.strip().startswith(f"watch: added {new}: h264 180p → hevc")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


@pytest.mark.anyio
async def test_watch_library_is_off_unless_configured(tmp_path: Path, store: Store, library_src: Path) -> None:
    """[scanner] watch = false (the default): the service reports started and returns without scanning."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(library_src / HOSTILE, root / "a.mkv")
    lines: list[LogRecord] = []
    async with anyio.create_task_group() as tg:
        await tg.start(partial(watch_library, store, settings_with(library__roots=[str(root)]), on_event=lines.append))
    assert lines == [] and store.media.count() == 0


@pytest.mark.anyio
async def test_watch_library_catches_up_then_watches_until_cancelled(
    tmp_path: Path, store: Store, library_src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configured on: a catch-up scan records what is there, a file copied in later is added, and cancelling the
    task group (how a worker or the TUI shuts down) ends it and closes the probe pool it started."""
    started: list[ProbePool] = []
    make_pool = ProbePool.from_settings

    def recording(cls: type[ProbePool], sc: ScannerSettings) -> ProbePool:
        started.append(make_pool(sc))
        return started[-1]

    monkeypatch.setattr(ProbePool, "from_settings", classmethod(recording))
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(library_src / HOSTILE, root / "before.mkv")
    settings = settings_with(
        library__roots=[str(root)], scanner__watch=True, scanner__watch_hold_s=0.3, scanner__probe_workers=1
    )
    lines: list[LogRecord] = []
    outcomes: list[FileOutcome] = []
    async with anyio.create_task_group() as tg:
        await tg.start(partial(watch_library, store, settings, on_event=lines.append, on_outcome=outcomes.append))
        assert store.media.get_by_path(str(root / "before.mkv")) is not None  # the catch-up scan ran first
        assert [r.message for r in lines] == [
            "watch: catch-up scan: 1 added, 0 updated, 0 missing",
            f"watch: watching {root} for new or changed files",
        ]
        shutil.copy(library_src / HOSTILE, root / "after.mkv")
        await wait_until(lambda: any(o.path == str(root / "after.mkv") for o in outcomes))
        tg.cancel_scope.cancel()
    assert [(o.outcome, o.path) for o in outcomes] == [("added", str(root / "after.mkv"))]
    assert not [r for r in lines if r.level == "error"]
    assert len(started) == 1 and started[0].closed


@pytest.mark.anyio
async def test_watch_library_reports_a_missing_root_and_returns(tmp_path: Path, store: Store) -> None:
    """A root that is gone (an unmounted share) is one error line, not an exception in the caller's task group."""
    settings = settings_with(library__roots=[str(tmp_path / "gone")], scanner__watch=True)
    lines: list[LogRecord] = []
    async with anyio.create_task_group() as tg:
        await tg.start(partial(watch_library, store, settings, on_event=lines.append))
    assert [(r.level, r.message) for r in lines] == [
        ("error", f"watch: stopped: library root {tmp_path / 'gone'} does not exist")
    ]


@pytest.mark.anyio
async def test_cancelling_during_the_catch_up_scan_stops_it_with_a_checkpoint(
    library: Path, store: Store, pool: ProbePool
) -> None:
    """The catch-up scan runs in a thread; cancelling the task group cancels the scan too (it does not run on
    against a store the caller is about to close) and leaves a checkpoint for the next one."""
    settings = settings_with(library__roots=[str(library)], scanner__watch=True, scanner__batch_size=1)
    async with anyio.create_task_group() as tg:

        def cancel_once(n: int) -> None:
            if n == 1:
                anyio.from_thread.run_sync(tg.cancel_scope.cancel)

        scanner = Scanner(store, settings, prober=CountingProber(pool, after_each=cancel_once))
        tg.start_soon(partial(watch_library, store, settings, scanner=scanner))
    assert Scanner(store, settings).resumable([str(library)]) is not None
    assert 0 < store.media.count() < len(MEDIA)


@pytest.mark.anyio
async def test_a_catch_up_scan_that_fails_is_one_error_line(tmp_path: Path, store: Store) -> None:
    """An error out of the catch-up scan's thread reaches watch_library as itself (not wrapped in an exception
    group by the task group around the thread) and becomes its one "stopped" line."""
    root = tmp_path / "root"
    root.mkdir()
    settings = settings_with(library__roots=[str(root)], scanner__watch=True)

    class Failing(Scanner):
        def scan(self, *args: object, **kwargs: object) -> ScanSummary:  # type: ignore[override]
            raise StoreError("database error: disk I/O error")

    lines: list[LogRecord] = []
    async with anyio.create_task_group() as tg:
        await tg.start(partial(watch_library, store, settings, scanner=Failing(store, settings), on_event=lines.append))
    assert [(r.level, r.message) for r in lines] == [("error", "watch: stopped: database error: disk I/O error")]
