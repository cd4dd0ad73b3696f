"""The Scanner service in-process on the real test library: incremental, changed/missing, re-evaluation, cancel and
resume, symlinks, walk order, progress events."""

from __future__ import annotations

import os
import random
import re
import shutil
import threading
from pathlib import Path

import pytest

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.events import ScanProgress
from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.services.probe import FAULTS_ENV, HANG_MARKER, ProbePool
from amphigory_tui.services.queries import LAST_SCAN_KEY
from amphigory_tui.services.scanner import (
    CHANGED_REASON,
    CHECKPOINT_KEY,
    MISSING_REASON,
    RULES_CHANGED_PREFIX,
    Scanner,
    ScanSummary,
)
from amphigory_tui.services.walk import extension_set, sort_key, walk_media
from amphigory_tui.store import MediaFilter, Store
from tests.scanner.conftest import (
    ALL_AS_ROOT,
    BIG,
    DEEP,
    HOSTILE,
    MPEG2,
    SAMPLE,
    SCOPE,
    CountingProber,
    rows,
    settings_with,
)


def test_first_scan_then_incremental_rescan_probes_nothing(library: Path, store: Store, pool: ProbePool) -> None:
    """Every media file is recorded once; a second scan of the unchanged tree probes 0 files."""
    settings = settings_with(scanner__batch_size=3)
    first = CountingProber(pool)
    summary = Scanner(store, settings, prober=first).scan([str(library)])
    expected = {str(library / p) for p in ALL_AS_ROOT}
    assert set(first.paths) == expected
    assert set(rows(store)) == expected
    n = len(expected)
    assert (summary.seen, summary.probed, summary.added, summary.unchanged) == (n, n, n, 0)
    assert summary.probe_errors == 3  # empty, text, truncated (root can read the "unreadable" ones)
    assert not summary.canceled and summary.resumed_from is None
    assert store.state.get(CHECKPOINT_KEY) is None
    assert store.state.get(LAST_SCAN_KEY) is not None

    second = CountingProber(pool)
    again = Scanner(store, settings, prober=second).scan([str(library)])
    assert second.count == 0
    assert (again.seen, again.probed, again.unchanged, again.added, again.updated, again.missing) == (
        len(expected),
        0,
        len(expected),
        0,
        0,
        0,
    )
    assert again.need_transcoding == summary.need_transcoding == sum(m.should_transcode for m in rows(store).values())


def test_changed_file_is_reprobed_and_its_jobs_canceled(library: Path, store: Store, counting: CountingProber) -> None:
    """A changed file: re-probed, its queued job canceled with a reason; a running one is asked to stop."""
    settings = settings_with()
    scanner = Scanner(store, settings, prober=counting)
    scanner.scan([str(library)])
    assert store.jobs.queue_for_transcoding() >= 3
    by_path = {j.input_path: j for j in store.jobs.list_jobs()}
    running = store.jobs.claim("host:1:test")
    assert running is not None
    queued_path = next(p for p, j in by_path.items() if j.id != running.id)

    for path in (queued_path, running.input_path):
        with open(path, "ab") as fh:
            fh.write(b"\0" * 1024)
    before = counting.count
    summary = scanner.scan([str(library)])
    assert sorted(counting.paths[before:]) == sorted([queued_path, running.input_path])
    assert (summary.updated, summary.added, summary.probed) == (2, 0, 2)

    queued_job = store.jobs.get(by_path[queued_path].id)
    assert queued_job.status is JobStatus.CANCELED
    assert queued_job.error_message == CHANGED_REASON
    running_job = store.jobs.get(running.id)
    assert running_job.control_request == "cancel"
    assert rows(store)[queued_path].size_bytes == os.path.getsize(queued_path)


def test_missing_file_is_marked_and_its_job_canceled_then_reappears(
    library: Path, store: Store, counting: CountingProber
) -> None:
    """A deleted file is marked missing (its queued job canceled); when it comes back it is probed again."""
    scanner = Scanner(store, settings_with(), prober=counting)
    scanner.scan([str(library)])
    store.jobs.queue_for_transcoding()
    target = str(library / MPEG2)
    job = next(j for j in store.jobs.list_jobs() if j.input_path == target)
    saved = Path(target).read_bytes()
    os.unlink(target)

    summary = scanner.scan([str(library)])
    assert summary.missing == 1
    row = rows(store)[target]
    assert row.missing and not row.should_transcode
    canceled = store.jobs.get(job.id)
    assert (canceled.status, canceled.error_message) == (JobStatus.CANCELED, MISSING_REASON)
    assert scanner.scan([str(library)]).missing == 0  # already marked: not counted again

    Path(target).write_bytes(saved)
    before = counting.count
    back = scanner.scan([str(library)])
    assert counting.paths[before:] == [target]
    assert back.updated == 1
    assert not rows(store)[target].missing


def test_unmounted_root_marks_nothing_missing(library: Path, store: Store, counting: CountingProber) -> None:
    """A root that suddenly lists no media at all (an unmounted share) is reported, not emptied."""
    scanner = Scanner(store, settings_with(), prober=counting)
    scanner.scan([str(library)])
    for child in library.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
    summary = scanner.scan([str(library)])
    assert summary.missing == 0
    assert summary.walk_errors == 1
    assert "is it mounted?" in (summary.last_error or "")
    assert not any(m.missing for m in rows(store).values())


def test_root_unmounted_while_a_scan_was_interrupted_marks_nothing_missing(
    library: Path, store: Store, pool: ProbePool
) -> None:
    """The resumed scan lstat-checks the files before its checkpoint, but not when the root is now empty."""
    settings = settings_with(scanner__batch_size=1)
    Scanner(store, settings, prober=CountingProber(pool)).scan([str(library)])
    for i in range(6):
        shutil.copy(library / HOSTILE, library / f"Collection/new{i}.mkv")
    cancel = threading.Event()
    stopper = CountingProber(pool, after_each=lambda n: cancel.set())
    assert Scanner(store, settings, prober=stopper).scan([str(library)], cancel=cancel).canceled
    for child in library.iterdir():
        shutil.rmtree(child)
    summary = Scanner(store, settings, prober=CountingProber(pool)).scan([str(library)])
    assert summary.resumed_from is not None
    assert summary.missing == 0 and summary.walk_errors == 1
    assert not any(m.missing for m in rows(store).values())


def test_reevaluate_applies_new_rules_without_probing(library: Path, store: Store, counting: CountingProber) -> None:
    """--reevaluate re-runs the rules over stored probes: new reasons, no probe."""
    Scanner(store, settings_with(), prober=counting).scan([str(library)])
    before = counting.count
    strict = settings_with(rules__min_size_mb=10_000.0, rules__exclude_patterns=["*trailer*"])
    summary = Scanner(store, strict, prober=counting).reevaluate()
    assert counting.count == before
    assert summary.files == len(ALL_AS_ROOT)
    assert summary.need_transcoding == 0
    after = rows(store)
    assert after[str(library / BIG)].reason == "below min size 10000 MB"
    assert after[str(library / SAMPLE)].reason == "below min size 10000 MB"  # no longer excluded by *sample*

    Scanner(store, settings_with(), prober=counting).reevaluate([str(library)])
    assert rows(store)[str(library / BIG)].reason.startswith("h264 1080p → hevc, est. −")
    assert counting.count == before


def test_cancel_leaves_a_checkpoint_and_the_next_scan_resumes(library: Path, store: Store, pool: ProbePool) -> None:
    """Cancel mid-scan: committed rows + checkpoint; the next scan says where it resumes and probes only the rest."""
    cancel = threading.Event()
    settings = settings_with(scanner__batch_size=2)
    stopper = CountingProber(pool, after_each=lambda n: cancel.set() if n == 4 else None)
    first = Scanner(store, settings, prober=stopper).scan([str(library)], cancel=cancel)
    assert first.canceled
    assert store.state.get(LAST_SCAN_KEY) is None
    scanner = Scanner(store, settings, prober=CountingProber(pool))
    cp = scanner.resumable([str(library)])
    assert cp is not None and cp.last is not None
    recorded = rows(store)
    assert 4 <= len(recorded) < len(ALL_AS_ROOT)
    # Every file up to the checkpoint is recorded.
    assert all(str(library / p) in recorded for p in ALL_AS_ROOT if sort_key(str(library / p)) <= sort_key(cp.last))

    second_prober = CountingProber(pool)
    events: list[ScanProgress] = []
    second = Scanner(store, settings, prober=second_prober).scan([str(library)], on_progress=events.append)
    assert second.resumed_from == cp.last
    assert events[0].resumed and events[-1].done
    assert not set(second_prober.paths) & set(recorded)  # nothing recorded before is probed again
    assert set(second_prober.paths) | set(recorded) == {str(library / p) for p in ALL_AS_ROOT}
    assert second.seen == len(ALL_AS_ROOT)  # counts span both runs, each file once
    assert second.added == len(ALL_AS_ROOT)
    assert store.state.get(CHECKPOINT_KEY) is None


def test_cancel_does_not_wait_for_a_hanging_probe(
    library: Path, store: Store, pool: ProbePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that hangs libav: cancel ends the scan long before probe_timeout_s; the file is not recorded and the
    checkpoint stays before it, so the resumed scan (faults off) probes it and completes the library."""
    hang = str(library / f"Broken/zz {HANG_MARKER}.mkv")
    shutil.copy(library / HOSTILE, hang)
    monkeypatch.setenv(FAULTS_ENV, "1")
    cancel = threading.Event()
    summaries: list[ScanSummary] = []
    with ProbePool(2, timeout_s=30) as hanging_pool:
        pids = hanging_pool.pids
        stopper = CountingProber(hanging_pool, after_each=lambda n: cancel.set() if n == 3 else None)
        scanner = Scanner(store, settings_with(scanner__batch_size=2), prober=stopper)
        thread = threading.Thread(
            target=lambda: summaries.append(scanner.scan([str(library)], cancel=cancel)), daemon=True
        )
        thread.start()
        thread.join(timeout=15)  # half of probe_timeout_s: only the cancel can end the scan in time
        cancel.set()
        assert not thread.is_alive()
        pids += hanging_pool.pids
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)  # every worker reaped, the stuck one too
    (summary,) = summaries
    assert summary.canceled
    assert hang not in stopper.paths and hang not in rows(store)
    cp = Scanner(store, settings_with()).resumable([str(library)])
    # Files the stuck worker had finished but not yet reported are dropped too: the frontier may not have moved.
    assert cp is not None and (cp.last is None or sort_key(cp.last) < sort_key(hang))
    recorded = rows(store)
    assert all(
        str(library / p) in recorded for p in ALL_AS_ROOT if cp.last and sort_key(str(library / p)) <= sort_key(cp.last)
    )

    resumed = CountingProber(pool)  # the session pool was started without the faults armed
    second = Scanner(store, settings_with(), prober=resumed).scan([str(library)])
    assert not second.canceled and hang in resumed.paths
    assert set(rows(store)) == {str(library / p) for p in ALL_AS_ROOT} | {hang}


def test_missing_files_are_found_across_an_interrupted_and_resumed_scan(
    library: Path, store: Store, pool: ProbePool
) -> None:
    """Files deleted before an interrupted rescan — before and after its checkpoint — are all marked missing."""
    settings = settings_with(scanner__batch_size=1)
    Scanner(store, settings, prober=CountingProber(pool)).scan([str(library)])
    early, late, between = str(library / "Broken/empty.mkv"), str(library / SCOPE), str(library / MPEG2)
    os.unlink(early)
    os.unlink(late)
    # New files right after "Broken/": probing them fills the pool's 4 slots, so the walk waits there and the
    # cancel after the first result lands between `early` and `late`.
    for i in range(6):
        shutil.copy(library / HOSTILE, library / f"Collection/new{i}.mkv")
    cancel = threading.Event()
    stopper = CountingProber(pool, after_each=lambda n: cancel.set())
    first = Scanner(store, settings, prober=stopper).scan([str(library)], cancel=cancel)
    assert first.canceled
    cp = Scanner(store, settings).resumable([str(library)])
    assert cp is not None and cp.last is not None
    assert sort_key(early) < sort_key(cp.last) < sort_key(late)
    os.unlink(between)  # deleted while the scan was interrupted, after its checkpoint

    second = Scanner(store, settings, prober=CountingProber(pool)).scan([str(library)])
    assert not second.canceled
    after = rows(store)
    assert after[early].missing and after[late].missing and after[between].missing
    assert second.missing == 3
    assert not any(after[str(library / f"Collection/new{i}.mkv")].missing for i in range(6))


def test_progress_events_describe_the_scan(library: Path, store: Store, counting: CountingProber) -> None:
    """Events: seen never goes back, the last one says done and matches the summary."""
    events: list[ScanProgress] = []
    summary = Scanner(store, settings_with(), prober=counting, progress_interval_s=0).scan(
        [str(library)], on_progress=events.append
    )
    assert len(events) >= 3
    assert [e.seen for e in events] == sorted(e.seen for e in events)
    last = events[-1]
    assert last.done and not last.canceled and not last.resumed
    assert (last.seen, last.probed, last.added, last.errors) == (
        summary.seen,
        summary.probed,
        summary.added,
        summary.probe_errors + summary.walk_errors,
    )
    assert last.total_estimate >= last.seen
    assert any(e.current_dir.startswith(str(library)) for e in events)


def test_symlinks_skipped_by_default_and_never_followed_into_loops(
    tmp_path: Path, store: Store, counting: CountingProber, library_src: Path
) -> None:
    """Default: links ignored. follow_symlinks: linked files and folders are scanned, a loop is walked once."""
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    shutil.copy(library_src / HOSTILE, root / "real/a.mkv")
    os.symlink(root / "real/a.mkv", root / "link.mkv")
    os.symlink(root, root / "real/loop")  # real/loop -> root: a cycle
    os.symlink(tmp_path / "nowhere.mkv", root / "dangling.mkv")

    plain = Scanner(store, settings_with(), prober=counting).scan([str(root)])
    assert set(rows(store)) == {str(root / "real/a.mkv")}
    assert plain.walk_errors == 0

    followed = Scanner(store, settings_with(scanner__follow_symlinks=True), prober=counting).scan([str(root)])
    assert set(rows(store)) == {str(root / "real/a.mkv"), str(root / "link.mkv")}
    assert followed.seen == 2


def test_walk_order_matches_sort_key_and_resumes_after_a_path(tmp_path: Path) -> None:
    """Names that sort differently as strings and as components ("a b" < "a/…" < "a-b") come out in key order."""
    names = ["a/x.mkv", "a b/x.mkv", "a-b/x.mkv", "a/b/c.mkv", "a.mkv", "A.MKV", "ab.mkv", "é.mkv", "z.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    exts = extension_set(["MKV"])
    walked = [p for p, _, _ in walk_media(str(tmp_path), exts)]
    assert walked == sorted(walked, key=sort_key)
    assert {os.path.relpath(p, tmp_path) for p in walked} == {n for n in names if not n.endswith(".txt")}
    middle = walked[3]
    rest = [p for p, _, _ in walk_media(str(tmp_path), exts, after=middle)]
    assert rest == walked[4:]


def test_scan_paths_handles_new_changed_and_deleted(library: Path, store: Store, counting: CountingProber) -> None:
    """Watch mode's entry point: one file probed, a deleted folder's files marked missing, others ignored."""
    scanner = Scanner(store, settings_with(), prober=counting)
    scanner.scan([str(library)])
    new = library / "TV/new episode.mkv"
    shutil.copy(library / BIG, new)
    shutil.rmtree(library / "Collection")
    before = counting.count
    outcomes = scanner.scan_paths(
        [str(new), str(library / "Collection"), str(library / "Extras/readme.txt"), "/elsewhere/x.mkv"],
        roots=[str(library)],
        auto_queue=True,
    )
    by_path = {o.path: o for o in outcomes}
    assert counting.paths[before:] == [str(new)]
    assert by_path[str(new)].outcome == "added" and by_path[str(new)].queued
    assert by_path[str(library / DEEP)].outcome == "missing"
    assert by_path[str(library / "Extras/readme.txt")].outcome == "ignored"
    assert by_path["/elsewhere/x.mkv"].outcome == "ignored"
    assert rows(store)[str(library / DEEP)].missing
    assert [j.input_path for j in store.jobs.list_jobs()] == [str(new)]


def test_reevaluate_cancels_queued_jobs_of_files_that_no_longer_qualify(
    library: Path, store: Store, counting: CountingProber
) -> None:
    """Stricter rules: queued jobs are canceled with the new reason; a running or paused job is left alone."""
    Scanner(store, settings_with(), prober=counting).scan([str(library)])
    queued = store.jobs.queue_for_transcoding()
    assert queued >= 3
    running = store.jobs.claim("host:1:test")
    assert running is not None
    paused = store.jobs.pause(next(j.id for j in store.jobs.list_jobs() if j.status is JobStatus.QUEUED))
    strict = settings_with(rules__min_expected_savings_pct=99.0)
    summary = Scanner(store, strict, prober=counting).reevaluate()
    assert summary.need_transcoding == 0 and summary.canceled_jobs == queued - 2
    by_path = rows(store)
    for job in store.jobs.list_jobs():
        if job.id == running.id:
            assert (job.status, job.control_request) == (JobStatus.RUNNING, None)
            continue
        if job.id == paused.id:
            assert (job.status, job.error_message) == (JobStatus.PAUSED, None)
            continue
        assert job.status is JobStatus.CANCELED
        reason = by_path[job.input_path].reason
        assert re.fullmatch(r"expected saving \d+ % < min 99 %", reason)
        assert job.error_message == RULES_CHANGED_PREFIX + reason
    assert Scanner(store, strict, prober=counting).reevaluate().canceled_jobs == 0


def test_a_random_bytes_mkv_gets_a_probe_error_and_is_never_queued(
    library: Path, store: Store, counting: CountingProber
) -> None:
    """Noise named .mkv: recorded with a probe error, counted, not a candidate."""
    noise = library / "Broken/noise.mkv"
    noise.write_bytes(random.Random(7).randbytes(256 * 1024))
    summary = Scanner(store, settings_with(), prober=counting).scan([str(library)])
    row = rows(store)[str(noise)]
    assert row.probe_error is not None and not row.should_transcode
    assert row.reason == f"probe error: {row.probe_error}"
    assert summary.probe_errors == 4
    store.jobs.queue_for_transcoding()
    assert str(noise) not in {j.input_path for j in store.jobs.list_jobs()}


@pytest.mark.parametrize("moving", [True, False])
def test_batches_are_committed_by_time_alone(library: Path, store: Store, pool: ProbePool, moving: bool) -> None:
    """With a batch size no scan reaches, the clock alone commits: batch_interval_s after the last commit the
    results so far and a checkpoint are written mid-scan; a clock that does not move commits only at the end."""
    clock = FixedClock()
    seen: list[tuple[int, str | None]] = []

    def after_each(n: int) -> None:
        # Runs before the scanner has the n-th result: rows and checkpoint reflect the first n - 1.
        seen.append((store.media.count(MediaFilter(include_missing=True)), store.state.get(CHECKPOINT_KEY)))
        if moving:
            clock.advance(0.5)

    settings = settings_with(scanner__batch_size=100_000, scanner__batch_interval_s=0.5)
    prober = CountingProber(pool, after_each=after_each)
    Scanner(store, settings, prober=prober, clock=clock).scan([str(library)])
    if moving:
        assert seen[0] == (0, None)
        assert all(recorded == n for n, (recorded, _) in enumerate(seen[1:], start=1))
        assert all(cp is not None for _, cp in seen[1:])
    else:
        assert seen == [(0, None)] * len(ALL_AS_ROOT)
    assert len(rows(store)) == len(ALL_AS_ROOT)
    assert store.state.get(CHECKPOINT_KEY) is None
