"""How fast is the job store? JobStore beside a raw driver loop doing the same claims, on SQLite (and PostgreSQL).

(a) claim + complete round trips per second with 1, 2 and 4 worker processes, each with its own store on one
    database, draining the same queue, side by side in one run with:
    - ``JobStore.claim`` then ``JobStore.complete`` (two transactions per job, plus the attempt history rows);
    - ``JobStore.complete_and_claim`` (the pool's hot path: one transaction per job);
    - raw ``sqlite3``: ``BEGIN IMMEDIATE; UPDATE … RETURNING`` (the same pick as the store) ``; COMMIT`` then
      ``BEGIN IMMEDIATE; UPDATE … complete; COMMIT``, at the same pragmas (WAL, synchronous=FULL, busy_timeout).
      The raw loop writes no attempt history: the ratio is the whole price of the store, features included.
(b) claim latency p50/p99 (each ``claim()`` call, as the worker sees it) with 4 processes.
(c) ``queue_for_transcoding`` over 100,000 candidate media rows (seeded with one INSERT … SELECT from a recursive
    CTE): the time of that one statement.
(d) optional, when a PostgreSQL server can be started (tests/pg.py): (a) and (c) on PostgreSQL, raw = psycopg with
    ``FOR UPDATE SKIP LOCKED``. That server runs with fsync=off (a throw-away test server): figures not durable.

Every figure is the median of 3 runs. Goals: JobStore ≥ 50 % of raw; 100k queued < 1 s; claim p99 < 20 ms with 4
processes. Other work on the machine makes the figures noisy: read them as orders of magnitude.
Usage: ``.venv/bin/python bench/store.py [--jobs 1000] [--rounds 3] [--media 100000]
[--engine sqlite|postgresql|both]``. Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from amphigory_tui.config import Settings  # noqa: E402
from amphigory_tui.store import open_store  # noqa: E402

# The store's pick, written out (SQLite: highest claimable priority first, then its oldest job, both walking the
# claim index; PostgreSQL: one ORDER BY with SKIP LOCKED), so the raw loop does exactly the database work the
# store asks for.
_CLAIMABLE = """j.status = 'queued'
  AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= {now})
  AND (j.depends_on IS NULL OR EXISTS (
        SELECT 1 FROM transcode_jobs d WHERE d.id = j.depends_on AND d.status = 'completed'))"""
RAW_SQLITE_CLAIM = f"""
UPDATE transcode_jobs SET status = 'running', worker_id = :worker, attempts = attempts + 1,
    started_at = :now, last_heartbeat = :now, updated_at = :now
WHERE id = (SELECT j.id FROM transcode_jobs j WHERE {_CLAIMABLE.format(now=":now")}
            AND j.priority = (SELECT j.priority FROM transcode_jobs j WHERE {_CLAIMABLE.format(now=":now")}
                              ORDER BY j.priority DESC LIMIT 1)
            ORDER BY j.created_at, j.id LIMIT 1)
  AND status = 'queued'
RETURNING id
"""
RAW_SQLITE_COMPLETE = """
UPDATE transcode_jobs SET status = 'completed', worker_id = NULL, completed_at = :now, updated_at = :now,
    progress_percent = 100
WHERE id = :id AND status = 'running' AND worker_id = :worker
"""
RAW_PG_CLAIM = f"""
UPDATE transcode_jobs SET status = 'running', worker_id = %(worker)s, attempts = attempts + 1,
    started_at = %(now)s, last_heartbeat = %(now)s, updated_at = %(now)s
WHERE id = (SELECT j.id FROM transcode_jobs j WHERE {_CLAIMABLE.format(now="%(now)s")}
            ORDER BY j.priority DESC, j.created_at, j.id LIMIT 1 FOR UPDATE OF j SKIP LOCKED)
  AND status = 'queued'
RETURNING id
"""
RAW_PG_COMPLETE = """
UPDATE transcode_jobs SET status = 'completed', worker_id = NULL, completed_at = %(now)s, updated_at = %(now)s,
    progress_percent = 100
WHERE id = %(id)s AND status = 'running' AND worker_id = %(worker)s
"""

# Jobs straight into the table: a recursive CTE, one statement (the ORM would be the thing measured otherwise).
SEED_JOBS = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})
INSERT INTO transcode_jobs (kind, status, priority, input_path, attempts, max_retries, progress_percent,
    resume_attempt, dismissed, created_at, updated_at)
SELECT 'transcode', 'queued', i % 7, '/library/bench/' || i || '.mkv', 0, 3, 0, FALSE, FALSE, {now} + i, {now} + i
FROM n
"""
SEED_MEDIA = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})
INSERT INTO media_files (path, root, size_bytes, mtime_ns, audio_json, subtitles_json, video_codec, width, height,
    should_transcode, reason, priority, missing, discovered_at, updated_at)
SELECT '/library/bench/movie' || i || '.mkv', '/library', 1000000 + i * 37 % 100000, 1700000000000000000 + i,
    '[]', '[]', 'h264', 1920, 1080, TRUE, 'h264 1080p → hevc', i % 100, FALSE, {now}, {now}
FROM n
"""


@dataclass(frozen=True)
class Run:
    """One drain of the queue by N processes: wall time from the common start to the last finish."""

    jobs: int
    seconds: float
    claim_latencies: list[float]

    @property
    def rate(self) -> float:
        """Round trips (claim + complete) per second."""
        return self.jobs / self.seconds


# ---------------------------------------------------------------------------------------------------- workers
def _store_loop(url: str, worker: str, batched: bool, latencies: list[float]) -> int:
    store = open_store(Settings(), url=url, migrate=False)
    done = 0
    try:
        clock = time.perf_counter
        t = clock()
        job = store.jobs.claim(worker)
        latencies.append(clock() - t)
        while job is not None:
            done += 1
            if batched:
                job = store.jobs.complete_and_claim(job.id, worker, output_size=1)
            else:
                store.jobs.complete(job.id, worker, output_size=1)
                t = clock()
                job = store.jobs.claim(worker)
                latencies.append(clock() - t)
    finally:
        store.close()
    return done


def _raw_sqlite_loop(path: str, worker: str, latencies: list[float]) -> int:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON"):
        conn.execute(f"PRAGMA {pragma}")
    done = 0
    clock = time.perf_counter
    try:
        while True:
            t = clock()
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(RAW_SQLITE_CLAIM, {"worker": worker, "now": time.time()}).fetchone()
            conn.execute("COMMIT")
            latencies.append(clock() - t)
            if row is None:
                return done
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(RAW_SQLITE_COMPLETE, {"id": row[0], "worker": worker, "now": time.time()})
            conn.execute("COMMIT")
            done += 1
    finally:
        conn.close()


def _raw_pg_loop(url: str, worker: str, latencies: list[float]) -> int:
    import psycopg

    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))
    done = 0
    clock = time.perf_counter
    try:
        while True:
            t = clock()
            with conn.transaction():
                row = conn.execute(RAW_PG_CLAIM, {"worker": worker, "now": time.time()}).fetchone()
            latencies.append(clock() - t)
            if row is None:
                return done
            with conn.transaction():
                conn.execute(RAW_PG_COMPLETE, {"id": row[0], "worker": worker, "now": time.time()})
            done += 1
    finally:
        conn.close()


def worker_main(kind: str, target: str, worker: str, start: Any, out: Any) -> None:
    """One worker process: wait for the others, drain, report (done, start, end, claim latencies)."""
    latencies: list[float] = []
    start.wait(timeout=120)
    began = time.monotonic()
    if kind == "raw-sqlite":
        done = _raw_sqlite_loop(target, worker, latencies)
    elif kind == "raw-pg":
        done = _raw_pg_loop(target, worker, latencies)
    else:
        done = _store_loop(target, worker, kind == "store-batched", latencies)
    out.put((done, began, time.monotonic(), latencies))


# ---------------------------------------------------------------------------------------------------- databases
class Database:
    """A fresh, migrated database per run (SQLite file or PostgreSQL database)."""

    def __init__(self, tmp: Path, pg: Any | None = None) -> None:
        self.tmp = tmp
        self.pg = pg
        self.counter = 0

    @contextmanager
    def fresh(self) -> Iterator[tuple[str, str]]:
        """(SQLAlchemy URL, raw target: file path or URL) of a new database at the head migration."""
        self.counter += 1
        if self.pg is None:
            path = self.tmp / f"bench{self.counter}.db"
            url = f"sqlite:///{path}"
            open_store(Settings(), url=url).close()
            try:
                yield url, str(path)
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            name = self.pg.create_database(f"bench_{self.counter}")
            url = self.pg.url(name)
            open_store(Settings(), url=url).close()
            try:
                yield url, url
            finally:
                self.pg.drop_database(name)

    def execute(self, url: str, sql: str) -> float:
        """Run one statement in its own transaction through the store's engine; its seconds."""
        from sqlalchemy import text

        store = open_store(Settings(), url=url, migrate=False)
        try:
            t = time.perf_counter()
            with store.engines.write() as conn:
                conn.execute(text(sql))
            return time.perf_counter() - t
        finally:
            store.close()


def drain(db: Database, kind: str, processes: int, jobs: int) -> Run:
    """Seed ``jobs`` queued jobs, then let ``processes`` workers of ``kind`` drain them together."""
    with db.fresh() as (url, target):
        db.execute(url, SEED_JOBS.format(count=jobs, now=time.time()))
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Barrier(processes)
        out = ctx.Queue()
        workers = [
            ctx.Process(
                target=worker_main, args=(kind, url if kind.startswith("store") else target, f"w{n}", start, out)
            )
            for n in range(processes)
        ]
        for proc in workers:
            proc.start()
        reports = [out.get(timeout=600) for _ in workers]
        for proc in workers:
            proc.join()
    done = sum(r[0] for r in reports)
    if done != jobs:
        raise SystemExit(f"{kind} × {processes}: {done} jobs completed, expected {jobs}")
    seconds = max(r[2] for r in reports) - min(r[1] for r in reports)
    return Run(jobs=done, seconds=seconds, claim_latencies=[x for r in reports for x in r[3]])


def queue_100k(db: Database, media: int) -> float:
    """Seconds of one ``queue_for_transcoding`` over ``media`` candidate rows (verified to queue them all)."""
    with db.fresh() as (url, _target):
        db.execute(url, SEED_MEDIA.format(count=media, now=time.time()))
        store = open_store(Settings(), url=url, migrate=False)
        try:
            t = time.perf_counter()
            queued = store.jobs.queue_for_transcoding()
            seconds = time.perf_counter() - t
        finally:
            store.close()
    if queued != media:
        raise SystemExit(f"queue_for_transcoding queued {queued} of {media}")
    return seconds


# ---------------------------------------------------------------------------------------------------- report
def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def bench_engine(label: str, db: Database, raw_kind: str, args: argparse.Namespace) -> None:
    """(a), (b) and (c) on one engine."""
    kinds = [("JobStore claim+complete", "store"), ("JobStore complete_and_claim", "store-batched"), ("raw", raw_kind)]
    print(f"\n== {label}: claim + complete round trips/s, {args.jobs} jobs per run, median of {args.rounds} runs")
    latency_runs: dict[str, list[Run]] = {}
    for processes in (1, 2, 4):
        runs: dict[str, list[Run]] = {kind: [] for _, kind in kinds}
        for _ in range(args.rounds):
            # Interleaved, so a burst of load elsewhere on the machine hits every contender alike.
            for _, kind in kinds:
                runs[kind].append(drain(db, kind, processes, args.jobs))
        raw = statistics.median(r.rate for r in runs[raw_kind])
        line = [f"  {processes} proc:"]
        for name, kind in kinds:
            rate = statistics.median(r.rate for r in runs[kind])
            ratio = f" ({rate / raw:4.0%} of raw)" if kind != raw_kind else ""
            line.append(f"{name} {rate:7,.0f}/s{ratio}")
        print("   ".join(line))
        if processes == 4:
            latency_runs = runs
    print("  claim latency with 4 processes (median over runs of each run's percentile; goal p99 < 20 ms):")
    for name, kind in kinds:
        if kind == "store-batched":
            continue  # its claims ride inside the completion's transaction: no separate claim to time
        p50 = statistics.median(_pct(r.claim_latencies, 0.50) for r in latency_runs[kind]) * 1000
        p99 = statistics.median(_pct(r.claim_latencies, 0.99) for r in latency_runs[kind]) * 1000
        print(f"    {name:<26} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    times = [queue_100k(db, args.media) for _ in range(args.rounds)]
    print(
        f"  queue_for_transcoding over {args.media:,} candidates: {statistics.median(times):.3f} s "
        f"(runs: {', '.join(f'{t:.3f}' for t in times)}; goal < 1 s)"
    )


def main() -> None:
    """Run every figure on SQLite, then on PostgreSQL when a server can be started."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs drained per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (the median is printed)")
    parser.add_argument("--media", type=int, default=100_000, help="candidate media rows for (c)")
    parser.add_argument("--engine", choices=["sqlite", "postgresql", "both"], default="both", help="which database")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.engine != "postgresql":
        with tempfile.TemporaryDirectory(prefix="amphigory-bench-") as tmp:
            print(f"SQLite files in {tmp} (WAL, synchronous=FULL); sqlite {sqlite3.sqlite_version}")
            bench_engine("SQLite", Database(Path(tmp)), "raw-sqlite", args)
    if args.engine != "sqlite":
        _with_postgres(
            lambda pg: bench_engine("PostgreSQL (fsync=off test server)", Database(Path(), pg), "raw-pg", args)
        )
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _with_postgres(body: Callable[[Any], None]) -> None:
    try:
        from tests.pg import find_bindir, start_server, stop_server
    except ImportError as exc:
        print(f"\nPostgreSQL skipped: tests/pg.py is not importable ({exc})")
        return
    bindir = find_bindir()
    if bindir is None:
        print("\nPostgreSQL skipped: no server binaries found")
        return
    server = start_server(bindir)
    try:
        body(server)
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()
