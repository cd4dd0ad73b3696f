"""What amphigory adds to an encode: a 30 s clip through the pool end to end vs HandBrakeCLI run directly.

Each amphigory run is a fresh library file (scanned and queued as in real use, untimed) and a fresh pool (one
database for all runs), one worker in drain mode (download copy, HandBrakeCLI with the preset picked from the
scan's probe, ffprobe + structure check of the output, atomic placement, database writes), timed from
``pool.run()`` to its return. Each direct run is ``HandBrakeCLI`` with the very same
argument list (same preset, ``--all-audio``, extra args) on the same clip. Runs alternate (amphigory, direct, …).

Printed: median wall times and their ratio (goal ≤ 1.03), and amphigory's own CPU time (this process: event loop,
threads, parsing; children excluded) as a share of the encoder's CPU time (goal ≤ 1 %).
Usage: ``python bench/transcode_overhead.py [--runs 3] [--seconds 30] [--size 640x360]``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amphigory_tui.config import Settings, settings_from_mapping  # noqa: E402
from amphigory_tui.domain.jobs import JobStatus  # noqa: E402
from amphigory_tui.pool import NullSink, WorkerPool  # noqa: E402
from amphigory_tui.services.handbrake import build_argv, pick_preset  # noqa: E402
from amphigory_tui.services.probe import probe_file  # noqa: E402
from amphigory_tui.services.proc import resolve_tool  # noqa: E402
from amphigory_tui.services.rules import decide  # noqa: E402
from amphigory_tui.store import JobFilter, MediaRecord, Store, open_store  # noqa: E402
from tests.media import make_clip  # noqa: E402


def _cpu() -> tuple[float, float]:
    """(own CPU seconds, finished children's CPU seconds)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _settings(tmp: Path) -> Settings:
    return settings_from_mapping(
        {
            "database": {"url": f"sqlite:///{tmp / 'amphigory.db'}"},
            "paths": {"work_dir": str(tmp / "work")},
            "workers": {"count": 1, "poll_interval_s": 0.1},
            "transcode": {"original_policy": "delete", "require_smaller": False},
        }
    )


def run_amphigory(store: Store, settings: Settings, tmp: Path, clip: Path, run: int) -> tuple[float, float, float]:
    """(wall s, own CPU s, children CPU s) of one end-to-end job: a fresh pool draining a one-job queue."""
    lib = tmp / f"lib{run}"
    lib.mkdir()
    source = lib / "Clip.mp4"
    shutil.copyfile(clip, source)
    # As in real use: the scan recorded the file (probe + decision), then `a` queued it.
    st = source.stat()
    probe = probe_file(str(source))
    decision = decide(str(source), st.st_size, probe, settings.rules)
    store.media.upsert([MediaRecord(str(source), str(lib), st.st_size, st.st_mtime_ns, probe, decision)])
    if store.jobs.queue_for_transcoding() != 1:
        raise SystemExit(f"the clip was not queued: {decision.reason}")
    (job,) = store.jobs.list_jobs(JobFilter(statuses=frozenset({JobStatus.QUEUED})))
    pool = WorkerPool(store, settings, NullSink(), drain=True)
    own0, kids0 = _cpu()
    started = time.perf_counter()
    anyio.run(pool.run)
    wall = time.perf_counter() - started
    own1, kids1 = _cpu()
    done = store.jobs.get(job.id)
    if done.status is not JobStatus.COMPLETED:
        raise SystemExit(f"amphigory run {run} ended {done.status.value}: {done.error_message}")
    return wall, own1 - own0, kids1 - kids0


def direct_argv(tmp: Path, clip: Path, out: Path) -> list[str]:
    """The argv amphigory's pipeline builds for this clip (same preset and arguments)."""
    settings = _settings(tmp)
    probe = probe_file(str(clip))
    preset = pick_preset(probe.width, probe.height, settings.transcode)
    return build_argv(
        resolve_tool(settings.tools.handbrake),
        clip,
        out,
        preset=preset,
        preset_import_file=settings.transcode.preset_import_file,
        extra_args=["--all-audio", *settings.transcode.extra_args],
        container=settings.transcode.output_container,
    )


def run_direct(tmp: Path, clip: Path, run: int) -> tuple[float, float]:
    """(wall s, HandBrakeCLI CPU s) of one direct encode."""
    out = tmp / f"direct{run}.mkv"
    argv = direct_argv(tmp, clip, out)
    _own0, kids0 = _cpu()
    started = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - started
    _own1, kids1 = _cpu()
    out.unlink()
    return wall, kids1 - kids0


def main() -> None:
    """Alternate the two, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--size", default="640x360")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="amph-overhead-") as name:
        tmp = Path(name)
        os.environ.setdefault("XDG_DATA_HOME", str(tmp / "data"))  # the pool's lock files stay in here
        clip = make_clip(tmp / "clip.mp4", seconds=args.seconds, width=width, height=height, bitrate="2M")
        print(f"clip: {args.seconds:g} s {args.size} H.264+AAC, {clip.stat().st_size:,} bytes")
        print("argv:", " ".join(direct_argv(tmp, clip, tmp / "out.mkv")[1:]))
        amph: list[tuple[float, float, float]] = []
        direct: list[tuple[float, float]] = []
        # One database for all runs, as in a long-running worker (the first run also pays SQLAlchemy's
        # statement compilation; medians keep that out of the figure).
        settings = _settings(tmp)
        store = open_store(settings)
        try:
            for run in range(1, args.runs + 1):
                amph.append(run_amphigory(store, settings, tmp, clip, run))
                direct.append(run_direct(tmp, clip, run))
                print(
                    f"  run {run}: amphigory {amph[-1][0]:.2f} s (own CPU {amph[-1][1]:.3f} s), "
                    f"direct {direct[-1][0]:.2f} s (encoder CPU {direct[-1][1]:.2f} s)"
                )
        finally:
            store.close()
    a_wall = statistics.median(r[0] for r in amph)
    d_wall = statistics.median(r[0] for r in direct)
    own = statistics.median(r[1] for r in amph)
    encoder = statistics.median(r[1] for r in direct)
    kids = statistics.median(r[2] for r in amph)
    print(f"median wall: amphigory {a_wall:.2f} s, HandBrakeCLI direct {d_wall:.2f} s → ratio {a_wall / d_wall:.3f}")
    print(
        f"amphigory's own CPU {own:.3f} s = {100 * own / encoder:.2f} % of the encoder's {encoder:.2f} s "
        f"(its children — HandBrakeCLI and ffprobe — used {kids:.2f} s)"
    )


if __name__ == "__main__":
    main()
