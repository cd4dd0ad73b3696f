"""Shutdown latency of `amphigory worker` with 4 running encodes (goal: p95 < 10 s).

Run: ``.venv/bin/python bench/shutdown.py [--runs 10] [--signal TERM]``. Prints figures, asserts nothing.

Setup: 4 clips of 30 s at 640×360 and a worker with 4 loops encoding them with the real HandBrakeCLI and the default
preset for their size ("H.265 MKV 480p30": x265 is slow enough that every encode is mid-way when the signal comes),
default ``kill_grace_s`` (8 s). Each run starts the worker, waits until all 4 jobs are in the transcode stage with
progress > 0, sends the signal, and measures until the process has exited. Every run's jobs end paused with no
attempt used; the next run's startup recovery resumes them (so each run also exercises resume).
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amphigory_tui.config import load_settings
from amphigory_tui.domain.jobs import JobStatus, Stage
from amphigory_tui.store import open_store
from tests.media import make_clip

ROOT = Path(__file__).resolve().parent.parent


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--signal", default="TERM", choices=("TERM", "INT", "HUP"))
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip")
    args = parser.parse_args()
    sig = getattr(signal, f"SIG{args.signal}")
    with tempfile.TemporaryDirectory(prefix="amph-bench-shutdown-") as raw:
        tmp = Path(raw)
        library = tmp / "library"
        config = tmp / "config.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{tmp / "amphigory.db"}"\n[paths]\nwork_dir = "{tmp / "work"}"\n'
            "[workers]\ncount = 4\nheartbeat_interval_s = 1\npoll_interval_s = 0.2\n"
            '[logging]\nlevel = "warning"\n',
            encoding="utf-8",
        )
        settings = load_settings(config)
        store = open_store(settings)
        for i in range(4):
            clip = make_clip(library / f"film {i}.mkv", seconds=args.seconds, width=640, height=360, bitrate="2M")
            st = clip.stat()
            store.jobs.create(str(clip), source_size=st.st_size, source_mtime_ns=st.st_mtime_ns)
        env = {"XDG_DATA_HOME": str(tmp / "xdg"), "PATH": "/usr/local/bin:/usr/bin:/bin"}
        latencies: list[float] = []
        for run in range(args.runs):
            worker = subprocess.Popen(
                [sys.executable, "-m", "amphigory_tui", "--config", str(config), "worker"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=(tmp / f"worker{run}.log").open("wb"),
                start_new_session=True,
            )
            deadline = time.monotonic() + 120
            while True:
                running = store.jobs.running()
                if len(running) == 4 and all(j.stage is Stage.TRANSCODE and j.progress_percent > 0 for j in running):
                    break
                if time.monotonic() > deadline or worker.poll() is not None:
                    worker.kill()
                    raise SystemExit(f"run {run + 1}: the 4 encodes never all got going; see {tmp}/worker{run}.log")
                time.sleep(0.1)
            progress = sorted(round(j.progress_percent, 1) for j in running)
            sent = time.monotonic()
            worker.send_signal(sig)
            code = worker.wait(60)
            latency = time.monotonic() - sent
            latencies.append(latency)
            jobs = store.jobs.list_jobs()
            paused = sum(1 for j in jobs if j.status is JobStatus.PAUSED)
            attempts = sorted(j.attempts for j in jobs)
            print(
                f"run {run + 1:2d}: SIG{args.signal} at {progress} % -> exit {code} after {latency:5.2f} s; "
                f"{paused}/4 paused, attempts {attempts}"
            )
        store.close()
    median = statistics.median(latencies)
    print(
        f"\nshutdown latency with 4 running encodes over {len(latencies)} runs: median {median:.2f}"
        f" s, p95 {p95(latencies):.2f} s, max {max(latencies):.2f} s (goal p95 < 10 s: "
        f"{'met' if p95(latencies) < 10 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
