"""Which recorded rows a scan covers: every row whose path lies inside the scanned folder, whatever root it was filed
under; the root column follows the configured library roots and never flips; the summary shows library totals."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.services.scanner import MISSING_REASON, Scanner
from amphigory_tui.store import Store
from tests.scanner.conftest import (
    ALL_AS_ROOT,
    BIG,
    EMPTY,
    HOSTILE,
    SAMPLE,
    TEXT,
    TRUNCATED,
    CountingProber,
    rows,
    settings_with,
)


def test_a_subfolder_scan_probes_nothing_a_library_scan_recorded(
    library: Path, store: Store, counting: CountingProber
) -> None:
    """`scan /lib/Movies` after `scan /lib`: nothing probed, nothing "added", the rows keep their library root."""
    scanner = Scanner(store, settings_with(library__roots=[str(library)]), prober=counting)
    scanner.scan([str(library)])
    movies = str(library / "Movies")
    before = counting.count

    sub = scanner.scan([movies])
    assert counting.count == before
    assert (sub.seen, sub.unchanged, sub.added, sub.updated, sub.missing) == (2, 2, 0, 0, 0)
    assert {m.root for m in rows(store).values()} == {str(library)}

    with open(library / BIG, "ab") as fh:
        fh.write(b"\0" * 512)
    changed = scanner.scan([movies])
    assert (changed.updated, changed.added) == (1, 0)
    assert counting.paths[before:] == [str(library / BIG)]
    assert rows(store)[str(library / BIG)].root == str(library)  # the configured root holding it, not /lib/Movies

    after = counting.count
    full = scanner.scan([str(library)])
    assert counting.count == after  # the subfolder scan's rows are unchanged for the library scan too
    assert (full.unchanged, full.added, full.updated) == (len(ALL_AS_ROOT), 0, 0)


def test_a_library_scan_covers_rows_filed_under_a_subfolder(
    library: Path, store: Store, counting: CountingProber
) -> None:
    """Rows first recorded by a scan of /lib/Movies: a /lib scan does not re-probe them, marks the deleted one
    missing (its queued job canceled) and files the others under the configured library root."""
    movies = str(library / "Movies")
    Scanner(store, settings_with(), prober=counting).scan([movies])
    assert {m.root for m in rows(store).values()} == {movies}  # no configured root holds them: the scanned folder
    store.jobs.queue_for_transcoding()
    (job,) = [j for j in store.jobs.list_jobs() if j.input_path == str(library / BIG)]
    os.unlink(library / BIG)

    before = counting.count
    summary = Scanner(store, settings_with(library__roots=[str(library)]), prober=counting).scan([str(library)])
    assert str(library / SAMPLE) not in counting.paths[before:]
    assert (summary.missing, summary.added) == (1, len(ALL_AS_ROOT) - 2)
    after = rows(store)
    assert after[str(library / BIG)].missing
    canceled = store.jobs.get(job.id)
    assert (canceled.status, canceled.error_message) == (JobStatus.CANCELED, MISSING_REASON)
    assert after[str(library / SAMPLE)].root == str(library)  # corrected without a probe
    assert {m.root for m in after.values()} == {str(library)} | {movies}  # the missing row was not rewritten


def test_without_configured_roots_the_recorded_root_does_not_flip(
    library: Path, store: Store, counting: CountingProber
) -> None:
    """Alternating scans of /lib/Movies and /lib (no [library] roots): a file keeps the root it was filed under,
    even when it changes and is probed again; files first seen by the /lib scan are filed under /lib."""
    movies = str(library / "Movies")
    scanner = Scanner(store, settings_with(), prober=counting)
    scanner.scan([movies])
    scanner.scan([str(library)])
    assert rows(store)[str(library / SAMPLE)].root == movies
    with open(library / SAMPLE, "ab") as fh:
        fh.write(b"\0" * 512)
    assert scanner.scan([str(library)]).updated == 1
    assert rows(store)[str(library / SAMPLE)].root == movies
    assert scanner.scan([movies]).unchanged == 2
    after = rows(store)
    assert after[str(library / SAMPLE)].root == after[str(library / BIG)].root == movies
    assert after[str(library / HOSTILE)].root == str(library)


def test_a_folder_takes_in_only_paths_inside_it(library: Path, store: Store, counting: CountingProber) -> None:
    """LIKE wildcards in names are literal, case counts, and /lib/A_b does not take in /lib/A_b2."""
    for name in ("A_b", "AXb", "a_b", "A_b2", "100%", "1000"):
        (library / name).mkdir()
        shutil.copy(library / HOSTILE, library / name / "x.mkv")
    scanner = Scanner(store, settings_with(), prober=counting)
    scanner.scan([str(library)])
    for name in ("AXb", "a_b", "A_b2", "1000"):
        os.unlink(library / name / "x.mkv")
    assert set(store.media.known(str(library / "A_b"))) == {str(library / "A_b/x.mkv")}
    assert set(store.media.known(str(library / "100%"))) == {str(library / "100%/x.mkv")}

    for name in ("A_b", "100%"):
        summary = scanner.scan([str(library / name)])
        assert (summary.seen, summary.unchanged, summary.missing) == (1, 1, 0)
    assert not any(m.missing for m in rows(store).values())
    assert scanner.scan([str(library)]).missing == 4


def test_the_summary_shows_the_library_probe_errors_in_path_order(
    library: Path, store: Store, counting: CountingProber
) -> None:
    """A rescan finds no new probe errors, but the summary still counts and lists the library's, by path."""
    scanner = Scanner(store, settings_with(), prober=counting)
    first = scanner.scan([str(library)])
    assert first.probe_errors == first.library_probe_errors == 3  # empty, text, truncated (root reads the rest)

    again = scanner.scan([str(library)])
    assert (again.probe_errors, again.library_probe_errors) == (0, 3)
    assert again.library_files == len(ALL_AS_ROOT)
    recorded = rows(store)
    broken = sorted(str(library / p) for p in (EMPTY, TEXT, TRUNCATED))
    assert again.errors == tuple(f"{p}: {recorded[p].probe_error}" for p in broken)
