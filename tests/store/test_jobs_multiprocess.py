"""Four processes, each with its own store on one database, drain 2,000 jobs: every job is completed exactly once."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from collections import Counter

import pytest
from sqlalchemy import text

from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.store import Store, open_store
from tests.store.helpers import media_record, seed_media, store_settings

JOBS = 2_000
PROCESSES = 4

pytestmark = pytest.mark.slow

# What a worker process reports: its id, and the ids it completed (or its error, as text).
Report = tuple[str, list[int] | str]


def drain(
    url: str, worker: str, batched: bool, start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue[Report]
) -> None:
    """A worker process: claim and complete until nothing is left; report the ids it completed.

    ``batched`` workers use the pool's hot path (``complete_and_claim``: one transaction per job), the others
    ``claim`` then ``complete`` (two): both kinds race on the same queue.
    """
    store = open_store(store_settings(), url=url, migrate=False)
    done: list[int] = []
    try:
        start.wait(timeout=60)
        job = store.jobs.claim(worker)
        while job is not None:
            done.append(job.id)
            if batched:
                job = store.jobs.complete_and_claim(job.id, worker, output_size=1)
            else:
                store.jobs.complete(job.id, worker, output_size=1)
                job = store.jobs.claim(worker)
        out.put((worker, done))
    except BaseException as exc:  # the parent reports it: a child's traceback would be lost
        out.put((worker, repr(exc)))
        raise
    finally:
        store.close()


def test_four_processes_complete_every_job_exactly_once(db_url: str) -> None:
    """No job is lost, none runs twice: one attempt and one completion per job, each by the process that said so."""
    store = open_store(store_settings(), url=db_url)
    try:
        _seed(store)
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Barrier(PROCESSES)
        out: multiprocessing.Queue[Report] = ctx.Queue()
        workers = [f"host:{n}:proc" for n in range(PROCESSES)]
        procs = [
            ctx.Process(target=drain, args=(db_url, w, n % 2 == 1, start, out), daemon=True)
            for n, w in enumerate(workers)
        ]
        for proc in procs:
            proc.start()
        received = dict(out.get(timeout=300) for _ in procs)
        for proc in procs:
            proc.join(timeout=60)
        assert {w: r for w, r in received.items() if isinstance(r, str)} == {}
        assert [proc.exitcode for proc in procs] == [0] * PROCESSES
        reports = {w: r for w, r in received.items() if isinstance(r, list)}

        reported = Counter(job_id for done in reports.values() for job_id in done)
        assert len(reported) == JOBS and set(reported.values()) == {1}
        done_by = {job_id: worker for worker, done in reports.items() for job_id in done}

        with store.engines.read() as conn:
            statuses: dict[str, int] = dict(
                conn.execute(text("SELECT status, count(*) FROM transcode_jobs GROUP BY status")).all()
            )
            attempts = conn.execute(text("SELECT job_id, attempt, worker_id, outcome FROM job_attempts")).all()
            counters = conn.execute(text("SELECT id, attempts, worker_id FROM transcode_jobs")).all()
        assert statuses == {JobStatus.COMPLETED.value: JOBS}
        assert len(attempts) == JOBS
        assert {(job_id, 1, done_by[job_id], "completed") for job_id, *_ in attempts} == set(map(tuple, attempts))
        assert {(job_id, n, owner) for job_id, n, owner in counters} == {(job_id, 1, None) for job_id in done_by}
    finally:
        store.close()


def _seed(store: Store) -> None:
    """2,000 scanned files, queued by one ``queue_for_transcoding``."""
    records = [media_record(f"/library/show/episode{i:05d}.mkv", size=10_000 + i, priority=i % 7) for i in range(JOBS)]
    seed_media(store, records)
    assert store.jobs.queue_for_transcoding() == JOBS
