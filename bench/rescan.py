"""Benchmark: incremental rescan of 50,000 unchanged files vs a bare os.scandir + stat walk; peak RSS of the rescan.

    .venv/bin/python bench/rescan.py [--files 50000] [--runs 3]

(a) builds a tree of empty ``.mkv`` files (100 per folder, two levels), records every one of them in a fresh SQLite
database with its real size and mtime (one ``MediaStore.upsert`` per 5,000 rows, no probing), then times, each the
median of ``--runs`` warm runs: a bare recursive ``os.scandir`` + ``DirEntry.stat()`` walk of the tree, and
``Scanner.scan()`` of it (which must probe nothing). Goal: the rescan reaches ≥ 30 % of the bare walk's files/s.
(c) runs the rescan in a fresh subprocess and reads its peak RSS with ``resource.getrusage``; goal < 200 MB.
It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amphigory_tui.config import Settings
from amphigory_tui.domain.media import Decision, ProbeResult
from amphigory_tui.services.scanner import Scanner
from amphigory_tui.store import MediaRecord, open_store

PER_DIR = 100


def build_tree(root: Path, files: int) -> None:
    """``files`` empty .mkv files, 100 per folder, folders grouped 10 to a parent."""
    for i in range(files):
        folder = root / f"group{i // (PER_DIR * 10):03d}" / f"folder{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"Movie {i:06d} (2020).mkv").touch()


def record_tree(url: str, root: Path) -> int:
    """Insert a row for every file with its real size and mtime, as if scanned before."""
    store = open_store(Settings(), url=url)
    probe = ProbeResult(container="matroska", video_codec="hevc", width=1920, height=1080, duration_s=1.0)
    decision = Decision(False, "already hevc")
    batch: list[MediaRecord] = []
    count = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            batch.append(MediaRecord(path, str(root), st.st_size, st.st_mtime_ns, probe, decision))
            if len(batch) >= 5000:
                store.media.upsert(batch)
                count += len(batch)
                batch = []
    store.media.upsert(batch)
    count += len(batch)
    store.close()
    return count


def bare_walk(root: str) -> int:
    """The floor: a recursive os.scandir with one stat per file, nothing else."""
    count = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat(follow_symlinks=False)
                    count += 1
    return count


def rescan(url: str, root: str) -> tuple[float, int, int]:
    """One incremental scan: (seconds, files seen, files probed)."""
    store = open_store(Settings(), url=url, migrate=False)
    started = time.perf_counter()
    with Scanner(store, Settings()) as scanner:
        summary = scanner.scan([root])
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed, summary.seen, summary.probed


def child_rss(url: str, root: str) -> None:
    """Subprocess entry: one rescan, then print 'seconds seen probed peak_rss_kib'."""
    elapsed, seen, probed = rescan(url, root)
    print(elapsed, seen, probed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _fresh(argv: list[str]) -> str:
    """Run ``argv`` as a grandchild through a small launcher and return its stdout.

    Linux keeps ``ru_maxrss`` across fork + exec: a child of this (large) process would report our own peak.
    A child of a fresh small interpreter starts from that interpreter's size instead.
    """
    launcher = (
        "import subprocess, sys; "
        "sys.stdout.write(subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True).stdout)"
    )
    return subprocess.run(
        [sys.executable, "-c", launcher, *argv],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout


def main() -> None:
    """Build, record, time, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("URL", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_rss(*args.child)
        return

    with tempfile.TemporaryDirectory(prefix="amphigory-bench-") as tmp:
        root = Path(tmp) / "library"
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        t0 = time.perf_counter()
        build_tree(root, args.files)
        t1 = time.perf_counter()
        recorded = record_tree(url, root)
        t2 = time.perf_counter()
        print(f"tree: {args.files:,} empty files in {t1 - t0:.1f} s; recorded {recorded:,} rows in {t2 - t1:.1f} s")

        bare_walk(str(root))  # warm the dentry and inode caches
        bare_times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            n = bare_walk(str(root))
            bare_times.append(time.perf_counter() - started)
        bare = statistics.median(bare_times)

        scan_times = []
        seen = probed = 0
        for _ in range(args.runs):
            elapsed, seen, probed = rescan(url, str(root))
            scan_times.append(elapsed)
        scan = statistics.median(scan_times)

        # Where the rescan's time goes: the sorted, filtered walk alone, and the one query of recorded rows.
        from amphigory_tui.services.walk import extension_set, walk_media

        exts = extension_set(Settings().rules.extensions)
        walk_times, query_times = [], []
        store = open_store(Settings(), url=url, migrate=False)
        for _ in range(args.runs):
            started = time.perf_counter()
            for _item in walk_media(str(root), exts):
                pass
            walk_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.media.known(str(root))
            query_times.append(time.perf_counter() - started)
        store.close()

        bare_rate, scan_rate = n / bare, seen / scan
        print(f"(a) bare os.scandir + stat walk : {bare:6.3f} s  {bare_rate:>10,.0f} files/s  (median of {args.runs})")
        print(
            f"    incremental rescan          : {scan:6.3f} s  {scan_rate:>10,.0f} files/s  "
            f"({seen:,} files, {probed} probed; median of {args.runs})"
        )
        print(f"    ratio: {scan_rate / bare_rate:.0%} of the bare walk (goal ≥ 30 %)")
        print(
            f"    parts: sorted+filtered walk_media {statistics.median(walk_times):.3f} s, "
            f"MediaStore.known() {statistics.median(query_times):.3f} s"
        )

        rss = []
        for _ in range(args.runs):
            out = _fresh([sys.executable, __file__, "--child", url, str(root)]).split()
            rss.append(int(out[3]) / 1024)
        baseline = _fresh(
            [
                sys.executable,
                "-c",
                "import resource, amphigory_tui.services.scanner, amphigory_tui.store; "
                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
            ]
        )
        print(
            f"(c) peak RSS of the {seen:,}-file rescan: {statistics.median(rss):.0f} MB (median of {args.runs}; "
            f"goal < 200 MB; the interpreter with the scanner imported: {int(baseline) / 1024:.0f} MB)"
        )


if __name__ == "__main__":
    main()
