"""No-op jobs per second through amphigory's pool (1 and 4 workers) beside Huey's SqliteHuey consumer.

Both sides drain the same number of jobs that do nothing, from a SQLite file on the same disk, in one run:

- amphigory: ``WorkerPool(runner=NoopRunner(), drain=True)`` over jobs made with ``JobStore.create`` (each job is
  claimed, run, completed and the next one claimed in the same commit; SQLite WAL, synchronous=FULL).
- Huey: a ``SqliteHuey`` with a no-op task, N tasks enqueued, then ``Consumer(huey)`` at its defaults (1 worker
  thread) in a fresh process, timed from ``start()`` to the N-th task having run.

Goal: amphigory ≥ 0.5 × Huey. The script also prints where amphigory's time per job goes.
Usage: ``python bench/pool_noop.py [--jobs 2000] [--rounds 2]``. Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amphigory_tui.config import settings_from_mapping  # noqa: E402
from amphigory_tui.domain.events import Event  # noqa: E402
from amphigory_tui.pool import WorkerPool  # noqa: E402
from amphigory_tui.services.pipeline import NoopRunner  # noqa: E402
from amphigory_tui.store import open_store  # noqa: E402

HUEY_CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    from huey import SqliteHuey
    from huey.consumer import Consumer

    path, count = sys.argv[1], int(sys.argv[2])
    huey = SqliteHuey(filename=path)
    done = threading.Event()
    seen = [0]

    @huey.task()
    def noop():
        seen[0] += 1
        if seen[0] == count:
            done.set()

    if sys.argv[3] == "enqueue":
        for _ in range(count):
            noop()
        print(json.dumps({"pending": huey.pending_count()}))
        sys.exit(0)
    consumer = Consumer(huey)  # the defaults: 1 thread worker, 0.1 s initial poll delay
    started = time.perf_counter()
    consumer.start()
    done.wait()
    elapsed = time.perf_counter() - started
    consumer.stop(graceful=True)
    print(json.dumps({"seconds": elapsed, "ran": seen[0]}))
    """
)


class CountingSink:
    """Counts events and the time spent handing them over."""

    def __init__(self) -> None:
        self.count = 0

    def emit(self, event: Event) -> None:
        """Count one event."""
        self.count += 1


def run_huey(tmp: Path, count: int) -> float:
    """Seconds Huey's consumer takes to run ``count`` no-op tasks."""
    db = tmp / f"huey-{time.monotonic_ns()}.db"
    script = tmp / "huey_child.py"
    script.write_text(HUEY_CHILD)
    subprocess.run([sys.executable, str(script), str(db), str(count), "enqueue"], check=True, capture_output=True)
    out = subprocess.run(
        [sys.executable, str(script), str(db), str(count), "consume"], check=True, capture_output=True, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ran"] == count
    return float(result["seconds"])


def run_amphigory(tmp: Path, count: int, workers: int) -> tuple[float, WorkerPool, int]:
    """Seconds amphigory's pool takes to drain ``count`` no-op jobs with ``workers`` loops."""
    db = tmp / f"amph-{workers}-{time.monotonic_ns()}.db"
    settings = settings_from_mapping(
        {
            "database": {"url": f"sqlite:///{db}"},
            "paths": {"work_dir": str(tmp / "work")},
            "workers": {"count": workers, "poll_interval_s": 0.1},
        }
    )
    store = open_store(settings)
    try:
        for i in range(count):
            store.jobs.create(f"/bench/noop{i:05d}.mkv")
        sink = CountingSink()
        pool = WorkerPool(store, settings, sink, runner=NoopRunner(), drain=True)
        started = time.perf_counter()
        anyio.run(pool.run)
        elapsed = time.perf_counter() - started
        done = store.jobs.stats().completed
        assert done == count, f"only {done} of {count} completed"
        return elapsed, pool, sink.count
    finally:
        store.close()


def main() -> None:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    count = args.jobs
    results: dict[str, list[float]] = {"huey": [], "amphigory 1 worker": [], "amphigory 4 workers": []}
    last_pool: dict[int, tuple[WorkerPool, int]] = {}
    with tempfile.TemporaryDirectory(prefix="amph-bench-") as name:
        tmp = Path(name)
        os.environ.setdefault("XDG_DATA_HOME", str(tmp / "data"))  # the pool's lock files stay in here
        for _ in range(args.rounds):
            results["huey"].append(count / run_huey(tmp, count))
            for workers in (1, 4):
                seconds, pool, events = run_amphigory(tmp, count, workers)
                results[f"amphigory {workers} worker{'s' if workers > 1 else ''}"].append(count / seconds)
                last_pool[workers] = (pool, events)
    huey = statistics.median(results["huey"])
    print(f"no-op jobs, {count} per run, {args.rounds} rounds (median jobs/s; SQLite on {tmp.parent})")
    for label, rates in results.items():
        ratio = statistics.median(rates) / huey
        shown = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"  {label:<22} {statistics.median(rates):>8,.0f} jobs/s  ({shown})  {ratio:.2f}× Huey")
    print("where amphigory's time per job goes (last round; thread time of each store call, summed over workers):")
    for workers, (pool, events) in sorted(last_pool.items()):
        parts = ", ".join(
            f"{what} {pool.timings[what] / count * 1e6:.0f} µs ({pool.counts.get(what, 0)} calls)"
            for what in ("claim", "complete", "run", "finish", "logs", "heartbeat", "controls")
            if what in pool.timings
        )
        batches = pool.counts.get("complete", 0)
        per_commit = count / batches if batches else 0.0
        print(f"  {workers} worker(s): {parts}; {per_commit:.2f} jobs per commit; {events / count:.1f} events/job")
    print(
        "  claim = a claim that found the queue empty or started a loop; complete = the workers' completions and"
        " next claims, grouped in one commit"
    )


if __name__ == "__main__":
    main()
