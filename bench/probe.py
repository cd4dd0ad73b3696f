"""Probe throughput: ProbePool (1 and 2 workers) against one ffprobe process per file, on 200 real tiny clips.

Run: ``.venv/bin/python bench/probe.py [--files 200]``.  Prints figures, asserts nothing.  Goals: the pool probes
at least 20× as many files per second as ffprobe, and 2 workers at least 1.8× as many as 1 (on 2 cores).

"Cold" means every measured pass starts a new pool (start-up is included and also shown alone) and evicts the
clips from the page cache first (posix_fadvise DONTNEED after a sync), so every probe reads from disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amphigory_tui.services.probe import ProbePool, probe_file
from tests.media import make_clip

FFPROBE = shutil.which("ffprobe") or "ffprobe"

# (file name, make_clip keyword arguments): the codecs and containers a library holds, each a little different.
BASES: list[tuple[str, dict[str, object]]] = [
    ("h264.mkv", {"seconds": 1.0, "audio_languages": ("eng", "fra")}),
    ("h264.mp4", {"seconds": 1.5, "width": 426, "height": 240}),
    ("hevc.mkv", {"seconds": 1.0, "vcodec": "libx265"}),
    ("mpeg2.mpg", {"seconds": 1.0, "width": 352, "height": 240, "vcodec": "mpeg2video", "acodec": "mp2"}),
    ("xvid.avi", {"seconds": 1.2, "vcodec": "mpeg4", "acodec": "libmp3lame"}),
    ("h264.ts", {"seconds": 0.8, "width": 256, "height": 144}),
    ("wide.mkv", {"seconds": 0.5, "width": 480, "height": 200, "fps": 25}),
    ("h264_60.mkv", {"seconds": 0.6, "fps": 60, "acodec": None}),
]


def make_library(root: Path, count: int) -> list[str]:
    """``count`` files: the base clips in several lengths, hard-linked under distinct names in subfolders."""
    variants: list[Path] = []
    for length in (1.0, 0.7):
        for name, kwargs in BASES:
            opts = dict(kwargs)
            opts["seconds"] = round(float(opts["seconds"]) * length, 2)  # type: ignore[arg-type]
            variants.append(make_clip(root / "base" / f"{length}_{name}", **opts))  # type: ignore[arg-type]
    paths: list[str] = []
    for i in range(count):
        src = variants[i % len(variants)]
        dst = root / "lib" / f"folder {i % 10}" / f"Movie {i:03d} ({2000 + i % 24}){src.suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
        paths.append(str(dst))
    os.sync()
    return paths


def evict(paths: list[str]) -> None:
    """Drop the files' pages from the page cache so the next read comes from disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    """Seconds taken and the count ``fn`` returned."""
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def run_ffprobe(paths: list[str]) -> int:
    """One ffprobe process per file, as the Go tool did."""
    for path in paths:
        argv = [FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", f"file:{path}"]
        subprocess.run(argv, capture_output=True, check=True)
    return len(paths)


def run_pool(paths: list[str], workers: int, startup: list[float]) -> int:
    """A fresh pool probing every path; its start-up time is appended to ``startup``."""
    start = time.perf_counter()
    with ProbePool(workers, timeout_s=30) as pool:
        startup.append(time.perf_counter() - start)
        bad = [p for p, r in pool.probe_many(paths) if r.error]
    if bad:
        raise SystemExit(f"unexpected probe errors: {bad[:3]}")
    return len(paths)


def run_inline(paths: list[str]) -> int:
    """probe_file in this process, no isolation (the floor the pool's overhead is measured against)."""
    for path in paths:
        probe_file(path)
    return len(paths)


def main() -> None:
    """Generate the clips, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="passes per pool size (the best is kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amphigory-bench-") as tmp:
        t0 = time.perf_counter()
        paths = make_library(Path(tmp), args.files)
        size = sum(os.path.getsize(p) for p in paths[: len(BASES) * 2]) / (len(BASES) * 2)
        print(
            f"library: {len(paths)} files (16 distinct clips, mean {size / 1024:.0f} KiB) "
            f"made in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs"
        )

        # Start the fork server once, as a long-running app would; every pass below still starts a new pool.
        with ProbePool(1) as warm:
            warm.probe(paths[0])

        rows: list[tuple[str, float]] = []
        evict(paths)
        secs, n = timed(lambda: run_ffprobe(paths))
        rows.append(("ffprobe, 1 process per file", n / secs))

        # Interleaved rounds, so that noise from other processes on the machine hits both pool sizes alike.
        rates: dict[int, list[float]] = {1: [], 2: []}
        startups: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for workers in (1, 2):
                evict(paths)
                start = time.perf_counter()
                run_pool(paths, workers, startups[workers])
                rates[workers].append(len(paths) / (time.perf_counter() - start))
        for workers in (1, 2):
            label = f"ProbePool, {workers} worker{'s' if workers > 1 else ''}"
            rows.append((f"{label} (start-up {min(startups[workers]) * 1000:.0f} ms incl.)", max(rates[workers])))

        evict(paths)
        secs, n = timed(lambda: run_inline(paths))
        rows.append(("probe_file in-process (no isolation)", n / secs))

        ffprobe_rate = rows[0][1]
        print(f"\n{'method':<52} {'files/s':>9} {'× ffprobe':>10}")
        for name, rate in rows:
            print(f"{name:<52} {rate:9.1f} {rate / ffprobe_rate:9.1f}×")
        one, two = rows[1][1], rows[2][1]
        print(f"\n2 workers / 1 worker: {two / one:.2f}×   (goal ≥ 1.8×)")
        print(f"best pool / ffprobe:  {max(one, two) / ffprobe_rate:.1f}×   (goal ≥ 20×)")


if __name__ == "__main__":
    main()
