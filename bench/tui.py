"""TUI benchmark: startup, keypress cost, idle and busy CPU, peak RSS, with 100,000 jobs in the database.

    .venv/bin/python bench/tui.py [--jobs 100000] [--dir /tmp/amphigory-bench] [--fresh] [--seconds 10]

Each measurement runs in a fresh child process so seeding and other measurements do not colour it:

* process launch → first paint: the real ``amphigory`` in a pseudo-terminal (120×40); the clock stops when the
  tab bar appears on the terminal; "first data" when the stats line shows real counts;
* app start → first paint: ``AmphigoryApp`` constructed and run (headless) until Textual's Ready event, which is
  posted right after the first screen refresh (median of three processes); "first page" when the rows show;
* CPU per keypress: ``time.process_time()`` (all threads, minus the idle rate) over 300 arrow keys and 60 page keys
  on the Queue table sent 30 a second as a terminal's key repeat would, including the row loads they trigger;
* idle CPU: the app with polling on, nothing changing, for ``--seconds``;
* busy CPU: another process writes progress for 4 running jobs 4×/s (as workers elsewhere would) and this process's
  bridge receives 4 progress events/s per job (as its own pool would);
* peak RSS: ``ru_maxrss`` of the child that ran the busy measurement (the largest).

Goals (issue 6): launch < 1 s, app start < 150 ms, < 16 ms per key, idle < 2 %, busy < 5 %, RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import resource
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SEED_VERSION = 1
RUNNING = 4


# --------------------------------------------------------------------------------------------------- seeding
def settings_for(base: Path) -> Any:
    """Settings of the benchmark: its own database, no local workers (nothing must claim the 100k jobs)."""
    from amphigory_tui.config import settings_from_mapping

    return settings_from_mapping(
        {
            "database": {"url": f"sqlite:///{base / 'amphigory.db'}"},
            "library": {"roots": ["/library/movies", "/library/tv"]},
            "paths": {"work_dir": str(base / "work")},
            "workers": {"count": 0},
        }
    )


def write_config(base: Path) -> Path:
    """The same settings as a TOML file for the real ``amphigory`` command."""
    path = base / "config.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{base / "amphigory.db"}"\n'
        '[library]\nroots = ["/library/movies", "/library/tv"]\n'
        f'[paths]\nwork_dir = "{base / "work"}"\n'
        "[workers]\ncount = 0\n",
        encoding="utf-8",
    )
    return path


def seed(base: Path, jobs: int) -> None:
    """100,000 scanned files and their jobs: mostly queued, a third completed, some failed, 4 running elsewhere."""
    from sqlalchemy import text

    from amphigory_tui.domain.media import Decision, ProbeResult
    from amphigory_tui.store import MediaRecord, open_store

    marker = base / "seeded.json"
    if marker.exists() and json.loads(marker.read_text()) == {"version": SEED_VERSION, "jobs": jobs}:
        return
    base.mkdir(parents=True, exist_ok=True)
    for name in ("amphigory.db", "amphigory.db-wal", "amphigory.db-shm"):
        (base / name).unlink(missing_ok=True)
    store = open_store(settings_for(base))
    probe = ProbeResult(container="matroska", duration_s=2700.0, video_codec="h264", width=1920, height=1080)
    started = time.perf_counter()
    for start in range(0, jobs, 5000):
        store.media.upsert(
            [
                MediaRecord(
                    path=f"/library/{'movies' if i % 2 else 'tv/Show ' + str(i % 97)}/file{i:06d}.mkv",
                    root="/library",
                    size_bytes=1_000_000_000 + i,
                    mtime_ns=1,
                    probe=probe,
                    decision=Decision(True, "h264 1080p → hevc", priority=i % 100, est_savings_pct=40),
                )
                for i in range(start, min(jobs, start + 5000))
            ]
        )
    store.jobs.queue_for_transcoding()
    now = time.time()
    with store.engines.write() as conn:
        conn.execute(
            text(
                "UPDATE transcode_jobs SET status='completed', output_size=source_size/2, completed_at=:now "
                "WHERE id % 3 = 0"
            ),
            {"now": now},
        )
        conn.execute(
            text("UPDATE transcode_jobs SET status='failed', error_message='boom' WHERE id % 7 = 0 AND status='queued'")
        )
        conn.execute(
            text(
                "UPDATE transcode_jobs SET status='running', stage='transcode', worker_id='benchhost:1:' || id, "
                "progress_percent=10, last_heartbeat=:now, attempts=1 WHERE id <= :n"
            ),
            {"now": now, "n": RUNNING},
        )
    store.close()
    marker.write_text(json.dumps({"version": SEED_VERSION, "jobs": jobs}))
    print(f"seeded {jobs} jobs in {time.perf_counter() - started:.1f} s", flush=True)


# --------------------------------------------------------------------------------------------------- children
def child(kind: str, base: Path, seconds: float) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    if kind == "start":
        return asyncio.run(_app_start(base))
    if kind == "keys":
        return asyncio.run(_keys(base))
    if kind in ("idle", "busy"):
        return asyncio.run(_cpu(base, seconds, busy=kind == "busy"))
    raise SystemExit(f"unknown measurement {kind}")


def _app(base: Path, **kwargs: Any) -> Any:
    from amphigory_tui.services.runtime import open_services
    from amphigory_tui.ui.app import AmphigoryApp

    class BenchApp(AmphigoryApp):
        ready_at: float | None = None

        def on_ready(self) -> None:
            self.ready_at = time.perf_counter()

    services = open_services(settings_for(base), migrate=False)
    return BenchApp(services, **kwargs)


async def _wait_loaded(app: Any, pilot: Any) -> None:
    while not app.queue_pane.loaded or app.queue_pane.table.cursor_job is None:
        await pilot.pause(0.01)


async def _app_start(base: Path) -> dict[str, float]:
    import amphigory_tui.ui.app  # noqa: F401 - imports are part of process launch, not of app start

    started = time.perf_counter()
    app = _app(base, poll=False)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.ready_at is None:
            await pilot.pause(0.001)
        painted = app.ready_at - started
        await _wait_loaded(app, pilot)
        loaded = time.perf_counter() - started
    return {"app_start_to_first_paint_ms": painted * 1000, "app_start_to_first_page_ms": loaded * 1000}


async def _keys(base: Path) -> dict[str, float]:
    """Keys sent the way a terminal delivers them (30 a second, like a held-down key), not through Pilot.press,
    whose wait-for-idle loops would be counted as the app's CPU."""
    from textual import events

    app = _app(base, poll=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait_loaded(app, pilot)
        await pilot.pause(0.5)
        driver = app._driver
        assert driver is not None
        idle_cpu = time.process_time()
        idle_wall = time.perf_counter()
        await asyncio.sleep(2.0)
        idle_rate = (time.process_time() - idle_cpu) / (time.perf_counter() - idle_wall)
        results: dict[str, float] = {"cpu_idle_without_poll_percent": idle_rate * 100}
        for name, keys in (
            ("arrow", ["down"] * 300),
            ("page", ["pagedown"] * 40 + ["pageup"] * 10 + ["end", "home"] * 5),
        ):
            cpu = time.process_time()
            wall = time.perf_counter()
            for key in keys:
                driver.send_message(events.Key(key, None))
                await asyncio.sleep(1 / 30)
            await app.workers.wait_for_complete()
            await pilot.pause(0.2)
            elapsed = time.perf_counter() - wall
            used = time.process_time() - cpu - idle_rate * elapsed
            results[f"cpu_per_{name}_key_ms"] = used / len(keys) * 1000
            results[f"cursor_after_{name}_keys"] = float(app.queue_pane.table.cursor)
    return results


async def _cpu(base: Path, seconds: float, *, busy: bool) -> dict[str, float]:
    from amphigory_tui.domain.events import JobProgress
    from amphigory_tui.domain.jobs import Stage

    app = _app(base, poll=True)
    writer: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait_loaded(app, pilot)
        await pilot.pause(1.0)  # the first polls and loads settle
        if busy:
            writer = subprocess.Popen([sys.executable, __file__, "--writer", "--dir", str(base)])

            def events() -> None:
                pct = 10.0
                while not stop.wait(0.25):
                    pct = (pct + 0.5) % 100
                    for job_id in range(1, RUNNING + 1):
                        app.sink.emit(
                            JobProgress(job_id, f"benchhost:1:{job_id}", Stage.TRANSCODE, pct, 24.0, 24.0, 600)
                        )

            threading.Thread(target=events, daemon=True).start()
            await pilot.pause(0.5)
        cpu = time.process_time()
        wall = time.perf_counter()
        await asyncio.sleep(seconds)
        used = time.process_time() - cpu
        elapsed = time.perf_counter() - wall
        stop.set()
    if writer is not None:
        writer.terminate()
        writer.wait()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    key = "busy" if busy else "idle"
    return {f"cpu_{key}_percent": used / elapsed * 100, f"peak_rss_{key}_mb": rss_mb}


def writer(base: Path) -> None:
    """Another process's workers: progress of the 4 running jobs, 4 times a second each."""
    from amphigory_tui.domain.jobs import Progress, Stage
    from amphigory_tui.store import open_store

    store = open_store(settings_for(base), migrate=False)
    pct = 10.0
    while True:
        pct = (pct + 0.5) % 100
        for job_id in range(1, RUNNING + 1):
            store.jobs.heartbeat(job_id, f"benchhost:1:{job_id}", Progress(pct, 24.0, 24.0, 600), stage=Stage.TRANSCODE)
        time.sleep(0.25)


# --------------------------------------------------------------------------------------------------- launch
def launch(base: Path) -> dict[str, float]:
    """The real ``amphigory`` in a 120×40 pseudo-terminal: until the tab bar, then until the stats line."""
    config = write_config(base)
    exe = str(Path(sys.executable).with_name("amphigory"))
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "AMPHIGORY_CONFIG": str(config), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    started = time.perf_counter()
    proc = subprocess.Popen([exe], stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = b""
    painted = loaded = None
    deadline = started + 30
    while time.perf_counter() < deadline and loaded is None:
        ready, _, _ = select.select([master], [], [], 0.05)
        if not ready:
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        seen += chunk
        if painted is None and b"Workers" in seen:
            painted = time.perf_counter() - started
        if b"need transcoding" in seen and b"queued" in seen:
            loaded = time.perf_counter() - started
    os.write(master, b"q")
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    os.close(master)
    if painted is None:
        raise SystemExit("amphigory never painted; output: " + seen[-2000:].decode(errors="replace"))
    return {"launch_to_first_paint_ms": painted * 1000, "launch_to_first_data_ms": (loaded or float("nan")) * 1000}


# --------------------------------------------------------------------------------------------------- main
def run_child(kind: str, base: Path, seconds: float) -> dict[str, float]:
    """Run one measurement in a fresh interpreter; its figures."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--dir", str(base), "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stdout}\n{out.stderr}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Parse the options, seed, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/amphigory-bench"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fresh", action="store_true", help="seed again even if the database exists")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    base: Path = args.dir
    if args.writer:
        writer(base)
        return
    if args.child:
        print(json.dumps(child(args.child, base, args.seconds)))
        return
    if args.fresh:
        (base / "seeded.json").unlink(missing_ok=True)
    seed(base, args.jobs)
    results: dict[str, float] = {}
    results.update(launch(base))
    # App start is short and noisy: the median of three fresh processes.
    starts = [run_child("start", base, args.seconds) for _ in range(3)]
    for key in starts[0]:
        results[key] = sorted(s[key] for s in starts)[1]
    for kind in ("keys", "idle", "busy"):
        results.update(run_child(kind, base, args.seconds))
    goals = {
        "launch_to_first_paint_ms": ("<", 1000),
        "app_start_to_first_paint_ms": ("<", 150),
        "cpu_per_arrow_key_ms": ("<", 16),
        "cpu_per_page_key_ms": ("<", 16),
        "cpu_idle_percent": ("<", 2),
        "cpu_busy_percent": ("<", 5),
        "peak_rss_busy_mb": ("<", 150),
    }
    print(f"\nTUI benchmark with {args.jobs} jobs ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    for name, value in results.items():
        goal = goals.get(name)
        verdict = ""
        if goal is not None:
            verdict = f"   goal {goal[0]} {goal[1]}: {'ok' if value < goal[1] else 'MISSED'}"
        print(f"  {name:<32} {value:10.1f}{verdict}")


if __name__ == "__main__":
    main()
