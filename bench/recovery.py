"""Startup recovery time with 10,000 jobs of which 1,000 are orphaned (goal: < 1 s).

Run: ``.venv/bin/python bench/recovery.py [--jobs 10000] [--orphans 1000] [--runs 3]``. Prints figures, asserts
nothing. Each run builds a fresh SQLite database (WAL, synchronous=FULL, as amphigory runs it) holding:

- ``--orphans`` running jobs owned by 8 claim loops of 2 processes that were really killed (their lock files are
  left behind, unlocked), each with a recorded child pid + start ticks of a long-gone process (so the leftover-kill
  step reads /proc for every one and kills nothing); ``--leftovers`` of them (default 8, what a crashed 8-loop
  worker leaves) have a lease dir in work_dir with a 64 KiB partial file (``--leftovers 1000``: the worst case);
- 100 running jobs of a live process (this one: its lock is held) whose files must survive;
- 500 jobs paused by a shutdown, 3,000 queued, the rest completed or failed;

then times ``services.recovery.recover`` end to end, and each step alone on a second fresh database.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amphigory_tui.config import DatabaseSettings, PathsSettings, Settings
from amphigory_tui.services.locks import ProcessLock, cleanup_stale_locks
from amphigory_tui.services.recovery import build_liveness, clean_work_dir, kill_leftovers, recover, summarize
from amphigory_tui.services.runtime import Services, open_services
from amphigory_tui.store.jobs import A, J

HOST = socket.gethostname()


def dead_process_keys(lock_dir: Path, count: int) -> list[str]:
    """Process keys of ``count`` processes that took their lock and were killed -9."""
    keys = []
    code = (
        "import sys, time; from pathlib import Path; from amphigory_tui.services.locks import ProcessLock; "
        f"lock = ProcessLock.acquire(Path({str(lock_dir)!r})); print(lock.key, flush=True); time.sleep(60)"
    )
    root = Path(__file__).resolve().parent.parent
    for _ in range(count):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=root)
        assert proc.stdout is not None
        keys.append(proc.stdout.readline().strip())
        proc.kill()
        proc.wait()
    return keys


def seed(services: Services, jobs: int, orphans: int, dead_keys: list[str], live: ProcessLock, leftovers: int) -> None:
    """Bulk-insert the jobs, their attempt rows and the orphans' lease dirs."""
    now = services.clock.now()
    dead_workers = [f"{key}.{n}" for key in dead_keys for n in range(1, 5)]
    gone = subprocess.Popen(["true"])
    gone.wait()
    rows, attempts = [], []
    live_worker = live.new_worker_id()
    work = services.settings.work_dir
    blob = os.urandom(64 * 1024)
    for i in range(jobs):
        job_id = i + 1
        row: dict[str, object] = {
            "id": job_id,
            "kind": "transcode",
            "priority": 50,
            "input_path": f"/library/movie {job_id:05d}.mkv",
            "attempts": 0,
            "max_retries": 3,
            "progress_percent": 0.0,
            "resume_attempt": False,
            "dismissed": False,
            "created_at": now - jobs + i,
            "updated_at": now,
        }
        if i < orphans:
            worker = dead_workers[i % len(dead_workers)]
            lease = work / f"job-{job_id}" / "a1-x"
            if i < leftovers:
                lease.mkdir(parents=True)
                (lease / "input.mkv").write_bytes(blob)
            row.update(
                status="running",
                stage="transcode",
                worker_id=worker,
                attempts=1 + (i % 3),
                last_heartbeat=now - 5,
                child_pid=gone.pid,
                child_start_ticks=1,
                temp_path=str(lease),
            )
            attempts.append({"job_id": job_id, "attempt": row["attempts"], "worker_id": worker, "started_at": now})
        elif i < orphans + 100:
            lease = work / f"job-{job_id}" / "a1-live"
            lease.mkdir(parents=True)
            (lease / "input.mkv").write_bytes(b"live")
            row.update(status="running", stage="transcode", worker_id=live_worker, attempts=1, last_heartbeat=now)
            row["temp_path"] = str(lease)
            attempts.append({"job_id": job_id, "attempt": 1, "worker_id": live_worker, "started_at": now})
        elif i < orphans + 600:
            row.update(status="paused", pause_reason="shutdown", resume_attempt=True, attempts=1)
        elif i < orphans + 3600:
            row.update(status="queued")
        else:
            row.update(status="completed" if i % 5 else "failed", attempts=1, completed_at=now)
        rows.append(row)
    # executemany needs the same keys in every row.
    keys = {key for row in rows for key in row}
    rows = [{key: row.get(key) for key in keys} for row in rows]
    engines = services.store.engines
    with engines.write() as conn:
        conn.execute(J.insert(), rows)
        conn.execute(A.insert(), attempts)


def fresh(tmp: Path, name: str) -> Services:
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite:///{tmp / name / 'amphigory.db'}"),
        paths=PathsSettings(work_dir=str(tmp / name / "work")),
    )
    settings.work_dir.mkdir(parents=True)
    return open_services(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--orphans", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--leftovers", type=int, default=8, help="orphans that left a lease dir with a file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amph-bench-recovery-") as raw:
        tmp = Path(raw)
        lock_dir = tmp / "locks"
        os.environ["XDG_DATA_HOME"] = str(tmp / "xdg")  # paths.lock_dir() and friends stay inside the temp dir
        live = ProcessLock.acquire(lock_dir)
        totals = []
        report = None
        db_only: list[float] = []
        for run in range(args.runs):
            # Twin databases with identical contents: one recovered without the temp-file step, one fully.
            twins = []
            for name in ("db", "full"):
                services = fresh(tmp, f"run{run}-{name}")
                seed(services, args.jobs, args.orphans, dead_process_keys(lock_dir, 2), live, args.leftovers)
                twins.append(services)
            # A restart finds its leftovers long written back to disk; don't time the page-cache flush of the seed.
            os.sync()
            started = time.perf_counter()
            recover(twins[0], lock=live, lock_dir=lock_dir, clean_temp=False)
            db_only.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = recover(twins[1], lock=live, lock_dir=lock_dir)
            totals.append(time.perf_counter() - started)
            again = time.perf_counter()
            second = recover(twins[1], lock=live, lock_dir=lock_dir)
            idempotent = time.perf_counter() - again
            assert not second.changed
            for services in twins:
                services.close()
            print(
                f"run {run + 1}: recover() {totals[-1] * 1000:7.1f} ms; without the temp-file step "
                f"{db_only[-1] * 1000:6.1f} ms; second pass (nothing to do) {idempotent * 1000:.1f} ms"
            )
        assert report is not None
        print(f"  -> {summarize(report)}")

        # Each step alone, on one more fresh database.
        services = fresh(tmp, "steps")
        seed(services, args.jobs, args.orphans, dead_process_keys(lock_dir, 2), live, args.leftovers)
        os.sync()
        store = services.store
        steps: list[tuple[str, float]] = []

        def step(name: str, fn: object) -> object:
            t = time.perf_counter()
            out = fn()  # type: ignore[operator]
            steps.append((name, time.perf_counter() - t))
            return out

        liveness = step(
            "liveness snapshot (workers + running jobs)", lambda: build_liveness(services, lock=live, lock_dir=lock_dir)
        )
        orphans = step("find_orphaned (locks checked per process)", lambda: store.jobs.find_orphaned(liveness))
        step("kill leftovers (recorded pids checked)", lambda: kill_leftovers(orphans, liveness))  # type: ignore[arg-type]
        step("recover_orphaned", lambda: store.jobs.recover_orphaned(liveness))
        step("recover_paused", store.jobs.recover_paused)
        step(
            f"clean work_dir ({args.leftovers:,} leftover lease dirs)",
            lambda: clean_work_dir(services, lambda: store.jobs.running()),
        )
        step("cleanup_stale_locks", lambda: cleanup_stale_locks(lock_dir, keep=live))
        services.close()
        live.release()

    median = statistics.median(totals)
    without = statistics.median(db_only) * 1000
    print(
        f"\nwithout the temp-file step (jobs, locks, leftover processes): median {without:.0f} ms,"
        f" max {max(db_only) * 1000:.0f} ms (deleting files is disk-bound: it swings with other processes' fsyncs)"
    )
    print(
        f"recovery at startup, {args.jobs:,} jobs / {args.orphans:,} orphaned / {args.leftovers:,} leftover lease dirs:"
        f" median {median * 1000:.0f} ms "
        f"over {len(totals)} runs (goal < 1000 ms: {'met' if median < 1.0 else 'NOT met'})"
    )
    print("steps (one run):")
    for name, seconds in steps:
        print(f"  {name:<48} {seconds * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
