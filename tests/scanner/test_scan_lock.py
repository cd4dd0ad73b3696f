"""One scan at a time per database: across Scanner instances, stores and processes; watch mode waits its turn.

A scan is held inside itself (its prober's ``after_each`` blocks on an event) while the second one is tried, so
nothing here depends on timing: the first scan is provably still running when the second is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from amphigory_tui.config import Settings
from amphigory_tui.domain.errors import ScanBusy
from amphigory_tui.domain.events import LogRecord, ScanProgress
from amphigory_tui.services.locks import NamedLock
from amphigory_tui.services.probe import ProbePool
from amphigory_tui.services.scanner import CHECKPOINT_KEY, FileOutcome, Scanner, _advisory_key, scan_lock_name
from amphigory_tui.services.watch import watch_library
from amphigory_tui.store import Store, open_store
from amphigory_tui.store.engine import make_engines
from tests.scanner.conftest import BIG, HOSTILE, CountingProber, make_config, run_amphigory, settings_with
from tests.scanner.test_watch import wait_until


@contextmanager
def scan_held(store: Store, pool: ProbePool, library: Path) -> Iterator[Scanner]:
    """A real scan of ``library`` in a thread, held inside itself after its second probe until the block ends.

    Batch size 1, so by then the first file's batch and its checkpoint are committed (what a second scan would
    otherwise mistake for an interrupted scan to resume).
    """
    inside, release = threading.Event(), threading.Event()

    def hold(n: int) -> None:
        if n == 2:
            inside.set()
            release.wait(60)

    scanner = Scanner(store, settings_with(scanner__batch_size=1), prober=CountingProber(pool, after_each=hold))
    failures: list[BaseException] = []

    def run() -> None:
        try:
            scanner.scan([str(library)])
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=run, name="held-scan", daemon=True)
    thread.start()
    try:
        assert inside.wait(60), "the held scan never reached its second probe"
        yield scanner
    finally:
        release.set()
        thread.join(60)
    assert not thread.is_alive() and failures == []


class NoticedWait(threading.Event):
    """A cancel event that records being waited on: ``NamedLock.wait`` polls it while the lock is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        """Note the wait, then wait."""
        self.waiting.set()
        return super().wait(timeout)


def test_a_second_scanner_is_refused_while_the_first_scans(library: Path, store: Store, pool: ProbePool) -> None:
    """Another Scanner, on another store of the same file (spelled through a symlink): scan and reevaluate are
    refused naming the running scan; once it ends, the lock is gone and the same Scanner scans."""
    (library.parent / "link").symlink_to(library.parent)
    twin = open_store(Settings(), url=f"sqlite:///{library.parent / 'link' / 'db.sqlite'}")
    try:
        assert scan_lock_name(twin) == scan_lock_name(store)
        counting = CountingProber(pool)
        other = Scanner(twin, settings_with(), prober=counting)
        with scan_held(store, pool, library):
            running = f"a scan is already running (this process: scanning {library})"
            with pytest.raises(ScanBusy, match=f"^{re.escape(running)}$"):
                other.scan([str(library)])
            with pytest.raises(ScanBusy, match=f"^{re.escape(running)}$"):
                other.reevaluate()
            assert counting.count == 0
        assert not NamedLock.path_for(scan_lock_name(store)).exists()
        summary = other.scan([str(library)])
        assert not summary.canceled and summary.probed == 0  # the first scan finished and recorded everything
    finally:
        twin.close()


def test_the_lock_is_released_when_a_scan_fails(library: Path, store: Store, counting: CountingProber) -> None:
    """An exception out of the scan (here its progress callback's) leaves the lock free for the next scan."""

    def broken(progress: ScanProgress) -> None:
        raise RuntimeError("progress sink broke")

    with pytest.raises(RuntimeError, match="progress sink broke"):
        Scanner(store, settings_with(), prober=counting).scan([str(library)], on_progress=broken)
    assert not NamedLock.path_for(scan_lock_name(store)).exists()
    assert not Scanner(store, settings_with(), prober=counting).scan([str(library)]).canceled


def test_amphigory_scan_in_another_process_is_refused_in_one_line(
    library: Path, store: Store, pool: ProbePool, tmp_path: Path
) -> None:
    """`amphigory scan` (and `--reevaluate`) on the same database while this process scans: exit 1, one line on
    stderr naming this pid, and no "resuming interrupted scan" for the running scan's checkpoint."""
    config = make_config(tmp_path)
    with scan_held(store, pool, library):
        assert store.state.get(CHECKPOINT_KEY) is not None
        for args in (("scan", str(library)), ("scan", "--reevaluate", str(library))):
            result = run_amphigory(config, *args)
            assert (result.returncode, result.stdout) == (1, ""), result.stderr
            assert result.stderr.splitlines() == [
                f"amphigory: a scan is already running (pid {os.getpid()}: scanning {library})"
            ]


def test_scan_paths_waits_for_a_running_scan_then_runs(library: Path, store: Store, pool: ProbePool) -> None:
    """Watch mode's batch waits for the lock instead of failing, and runs after the scan: the file the scan
    recorded meanwhile is unchanged for it (nothing probed twice)."""
    counting = CountingProber(pool)
    watcher = Scanner(store, settings_with(), prober=counting)
    cancel = NoticedWait()
    results: list[list[FileOutcome]] = []
    path = str(library / BIG)
    thread = threading.Thread(
        target=lambda: results.append(watcher.scan_paths([path], roots=[str(library)], cancel=cancel))
    )
    with scan_held(store, pool, library):
        thread.start()
        assert cancel.waiting.wait(30), "scan_paths did not wait for the lock"
        assert results == []
    thread.join(30)
    assert [(o.path, o.outcome) for o in results[0]] == [(path, "unchanged")]
    assert counting.count == 0


def test_scan_paths_waiting_for_the_lock_gives_up_when_canceled(library: Path, store: Store, pool: ProbePool) -> None:
    """Its cancel set while it waits: it returns ``[]`` and its file is never probed or recorded."""
    elsewhere = library.parent / "elsewhere"  # a root the held scan does not walk
    elsewhere.mkdir()
    shutil.copy(library / HOSTILE, elsewhere / "new.mkv")
    cancel = NoticedWait()
    results: list[list[FileOutcome]] = []
    counting = CountingProber(pool)
    watcher = Scanner(store, settings_with(), prober=counting)
    thread = threading.Thread(
        target=lambda: results.append(
            watcher.scan_paths([str(elsewhere / "new.mkv")], roots=[str(elsewhere)], cancel=cancel)
        )
    )
    with scan_held(store, pool, library):
        thread.start()
        assert cancel.waiting.wait(30)
        cancel.set()
        thread.join(30)
        assert results == [[]]
    assert counting.count == 0 and store.media.get_by_path(str(elsewhere / "new.mkv")) is None


def note_lock_waits(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set when anything starts waiting for a ``NamedLock`` (watch mode's ``scan_paths``)."""
    entered = threading.Event()
    real_wait = NamedLock.wait

    def noting(cls: type[NamedLock], *args: Any, **kwargs: Any) -> NamedLock | None:
        entered.set()
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(NamedLock, "wait", classmethod(noting))
    return entered


@pytest.mark.anyio
async def test_watch_skips_its_catch_up_while_a_scan_runs_and_its_files_wait_for_it(
    tmp_path: Path, store: Store, pool: ProbePool, library_src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watch_library started during another scan: one warning instead of the catch-up scan, watching starts, and
    a file copied in is recorded once that scan lets go of the lock."""
    root = tmp_path / "root"
    root.mkdir()
    settings = settings_with(library__roots=[str(root)], scanner__watch=True, scanner__watch_hold_s=0.3)
    lines: list[LogRecord] = []
    outcomes: list[FileOutcome] = []
    waiting = note_lock_waits(monkeypatch)
    scanner = Scanner(store, settings, prober=CountingProber(pool))
    held = NamedLock.try_acquire(scan_lock_name(store), doing="scanning the test library")
    assert held is not None
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(
                partial(
                    watch_library, store, settings, scanner=scanner, on_event=lines.append, on_outcome=outcomes.append
                )
            )
            assert [(r.level, r.message) for r in lines] == [
                (
                    "warning",
                    "watch: catch-up scan skipped: a scan is already running (this process: scanning the test library)",
                ),
                ("info", f"watch: watching {root} for new or changed files"),
            ]
            shutil.copy(library_src / HOSTILE, root / "after.mkv")
            await wait_until(waiting.is_set)
            assert outcomes == [] and store.media.count() == 0
            held.release()
            await wait_until(lambda: bool(outcomes))
            tg.cancel_scope.cancel()
    finally:
        held.release()
    assert [(o.outcome, o.path) for o in outcomes] == [("added", str(root / "after.mkv"))]


@pytest.mark.anyio
async def test_a_watcher_waiting_for_the_scan_lock_still_stops(
    tmp_path: Path, store: Store, pool: ProbePool, library_src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling the task group (how the TUI and the worker shut down) ends a watcher whose batch waits for the
    lock: the wait is given up, not sat out (a safety timer frees the lock after 30 s; the batch never runs)."""
    root = tmp_path / "root"
    root.mkdir()
    settings = settings_with(library__roots=[str(root)], scanner__watch=True, scanner__watch_hold_s=0.3)
    waiting = note_lock_waits(monkeypatch)
    scanner = Scanner(store, settings, prober=CountingProber(pool))
    held = NamedLock.try_acquire(scan_lock_name(store), doing="scanning the test library")
    assert held is not None
    safety = threading.Timer(30, held.release)
    safety.start()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(partial(watch_library, store, settings, scanner=scanner))
            shutil.copy(library_src / HOSTILE, root / "after.mkv")
            await wait_until(waiting.is_set)
            tg.cancel_scope.cancel()
        assert held.held, "the watcher only stopped once the safety timer freed the lock"
        assert store.media.get_by_path(str(root / "after.mkv")) is None
    finally:
        safety.cancel()
        held.release()


@pytest.mark.postgres
def test_on_postgresql_a_scan_on_another_machine_keeps_this_one_out(
    library: Path, fresh_postgres_url: str, pool: ProbePool
) -> None:
    """Machines sharing a PostgreSQL database share no lock directory: the database's own advisory lock keeps
    their scans apart. While another session ("another machine") holds it, scan and --reevaluate refuse in one
    line and leave no local lock behind, and watch mode's batch waits; once it is let go, both run, and while
    this process scans the other machine cannot take it."""
    store = open_store(settings_with(), url=fresh_postgres_url)
    other_machine = make_engines(fresh_postgres_url)
    key = _advisory_key(scan_lock_name(store))
    try:
        held = other_machine.try_advisory_lock(key)
        assert held is not None
        scanner = Scanner(store, settings_with(), prober=CountingProber(pool))
        refused = "^a scan of this database is already running on another machine$"
        with pytest.raises(ScanBusy, match=refused):
            scanner.scan([str(library)])
        with pytest.raises(ScanBusy, match=refused):
            scanner.reevaluate([str(library)])
        assert NamedLock.holder(scan_lock_name(store)) is None  # the local lock was let go again

        cancel = NoticedWait()
        results: list[list[FileOutcome]] = []
        path = str(library / BIG)
        thread = threading.Thread(
            target=lambda: results.append(scanner.scan_paths([path], roots=[str(library)], cancel=cancel))
        )
        thread.start()
        assert cancel.waiting.wait(30), "scan_paths did not wait for the other machine's scan"
        assert results == []
        held.release()
        thread.join(30)
        assert [(o.path, o.outcome) for o in results[0]] == [(path, "added")]

        assert scanner.scan([str(library)]).seen > 0
        with scanner.scan_lock():
            assert other_machine.try_advisory_lock(key) is None
        again = other_machine.try_advisory_lock(key)
        assert again is not None
        again.release()
    finally:
        other_machine.dispose()
        store.close()
