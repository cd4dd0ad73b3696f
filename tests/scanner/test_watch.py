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
from pathlib import Path

import anyio
import pytest

from amphigory_tui.domain.events import LogRecord
from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.services.probe import ProbePool
from amphigory_tui.services.scanner import FileOutcome, Scanner
from amphigory_tui.services.watch import LibraryWatcher
from amphigory_tui.store import Store
from tests.scanner.conftest import BIG, HOSTILE, CountingProber, amphigory_argv, make_config, settings_with


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
