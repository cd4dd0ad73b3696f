"""Reading: running, list_jobs (filters, order, paging), count, changed_since, attempts history, stats."""

from __future__ import annotations

import pytest

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.jobs import JobStatus, QueueStats
from amphigory_tui.store import JobFilter, Store
from amphigory_tui.store.jobs import JobStore
from tests.store.helpers import RETRY_DELAY_S, job_in_status, seed_candidates


def test_running_lists_running_jobs_by_worker(jobs: JobStore) -> None:
    """``running()`` is every running job, or those of the given workers."""
    a = jobs.create("/library/a.mkv")
    b = jobs.create("/library/b.mkv")
    jobs.create("/library/c.mkv")
    jobs.claim("w1")
    jobs.claim("w2")
    assert {j.id for j in jobs.running()} == {a.id, b.id}
    assert [j.id for j in jobs.running(["w2"])] == [b.id]
    assert jobs.running(["nobody"]) == []
    assert jobs.running([]) == []


def test_list_jobs_orders_live_by_priority_then_finished_newest_first(store: Store, clock: FixedClock) -> None:
    """Running, paused, queued (by priority, then age), then failed, then the other finished ones, newest first."""
    jobs = store.jobs
    early_done = job_in_status(store, clock, "completed")
    clock.advance(1)
    late_done = job_in_status(store, clock, "skipped")
    failed = job_in_status(store, clock, "failed")
    running = job_in_status(store, clock, "running")
    paused = job_in_status(store, clock, "paused-user")
    low = jobs.create("/library/low.mkv", priority=5)
    clock.advance(1)
    high_old = jobs.create("/library/high-old.mkv", priority=80)
    clock.advance(1)
    high_new = jobs.create("/library/high-new.mkv", priority=80)
    expected = [running.id, paused.id, high_old.id, high_new.id, low.id, failed.id, late_done.id, early_done.id]
    assert [j.id for j in jobs.list_jobs()] == expected
    assert [j.id for j in jobs.list_jobs(offset=2, limit=3)] == expected[2:5]
    assert [j.id for j in jobs.list_jobs(offset=7, limit=10)] == expected[7:]
    assert jobs.list_jobs(offset=8) == []
    assert jobs.count() == len(expected)


def test_list_jobs_filters_by_status_search_and_path(store: Store, clock: FixedClock) -> None:
    """Status sets, a literal case-insensitive search (``%`` and ``_`` are not wildcards) and path substrings."""
    jobs = store.jobs
    plain = jobs.create("/library/Movies/Alien (1979).mkv")
    percent = jobs.create("/library/TV/100%_done.mkv")
    under = jobs.create("/library/TV/a_b.mkv")
    jobs.claim("w1")  # the oldest of the highest priority: plain

    def ids(flt: JobFilter) -> set[int]:
        found = {j.id for j in jobs.list_jobs(flt)}
        assert jobs.count(flt) == len(found)
        return found

    assert ids(JobFilter(statuses=frozenset({JobStatus.RUNNING}))) == {plain.id}
    assert ids(JobFilter(statuses=frozenset({JobStatus.QUEUED, JobStatus.FAILED}))) == {percent.id, under.id}
    assert ids(JobFilter(statuses=frozenset())) == set()
    assert ids(JobFilter(search="alien")) == {plain.id}
    assert ids(JobFilter(search="%")) == {percent.id}
    assert ids(JobFilter(search="_")) == {percent.id, under.id}
    assert ids(JobFilter(search="nothing like this")) == set()
    assert ids(JobFilter(path_contains=("/tv/",))) == {percent.id, under.id}
    assert ids(JobFilter(path_contains=("/Movies/", "a_b"))) == {plain.id, under.id}
    assert ids(JobFilter(path_contains=("%_",))) == {percent.id}


def test_changed_since_returns_what_changed_in_order(jobs: JobStore, clock: FixedClock) -> None:
    """The TUI's poll: rows updated at or after a time, oldest change first, bounded by a limit."""
    a = jobs.create("/library/a.mkv")
    clock.advance(1)
    b = jobs.create("/library/b.mkv")
    since = clock.now()
    clock.advance(1)
    jobs.set_priority(a.id, 90)
    assert [j.id for j in jobs.changed_since(since)] == [b.id, a.id]
    assert [j.id for j in jobs.changed_since(since, limit=1)] == [b.id]
    assert jobs.changed_since(clock.now() + 0.001) == []
    assert jobs.changed_since(clock.now())[0].priority == 90


def test_attempts_record_every_try(jobs: JobStore, clock: FixedClock) -> None:
    """Each attempt has its worker, start, end, outcome and error, oldest first."""
    job = jobs.create("/library/a.mkv")
    t0 = clock.now()
    jobs.claim("w1")
    clock.advance(10)
    jobs.fail(job.id, "w1", "exit 3")
    clock.advance(RETRY_DELAY_S)
    t1 = clock.now()
    jobs.claim("w2")
    clock.advance(5)
    jobs.pause_running(job.id, "w2")
    jobs.resume(job.id)
    clock.advance(1)
    jobs.claim("w3")
    clock.advance(20)
    jobs.complete(job.id, "w3")
    # The paused attempt 2 was resumed by w3: one attempt, still dated from its first start.
    history = [(a.attempt, a.worker_id, a.started_at, a.ended_at, a.outcome, a.error) for a in jobs.attempts(job.id)]
    assert history == [
        (1, "w1", t0, t0 + 10, "retry", "exit 3"),
        (2, "w3", t1, clock.now(), "completed", None),
    ]
    assert jobs.attempts(987_654_321) == []


def test_stats_count_statuses_candidates_and_savings(store: Store, clock: FixedClock) -> None:
    """One stats line: files still needing a job, jobs per status (dismissed left out), bytes saved."""
    seed_candidates(store, 6)
    assert store.jobs.stats() == QueueStats(
        need_transcoding=6, queued=0, running=0, paused=0, failed=0, completed=0, saved_bytes=0
    )
    store.jobs.queue_for_transcoding(limit=5)
    first = store.jobs.claim("w1")
    second = store.jobs.claim("w2")
    third = store.jobs.claim("w3")
    assert first and second and third
    store.jobs.complete(first.id, "w1", output_size=400_000)
    store.jobs.complete(second.id, "w2")  # no output size known: counts as completed, saves nothing
    store.jobs.fail(third.id, "w3", "bad", permanent=True)
    paused = store.jobs.list_jobs(JobFilter(statuses=frozenset({JobStatus.QUEUED})))[0]
    store.jobs.pause(paused.id)
    store.jobs.claim("w4")
    assert first.source_size is not None
    assert store.jobs.stats() == QueueStats(
        need_transcoding=1,
        queued=0,
        running=1,
        paused=1,
        failed=1,
        completed=2,
        saved_bytes=first.source_size - 400_000,
    )
    store.jobs.dismiss(third.id)
    stats = store.jobs.stats()
    assert (stats.failed, stats.need_transcoding) == (0, 2)


@pytest.mark.parametrize("offset", [0, 1, 3])
def test_paging_covers_every_job_exactly_once(jobs: JobStore, clock: FixedClock, offset: int) -> None:
    """Pages of any size walk the whole list without gaps or repeats (the order is total)."""
    created = []
    for i in range(7):
        created.append(jobs.create(f"/library/{i}.mkv", priority=50 if i % 2 else 60).id)
    seen: list[int] = []
    page = 2 + offset
    start = 0
    while batch := jobs.list_jobs(offset=start, limit=page):
        seen.extend(j.id for j in batch)
        start += page
    assert sorted(seen) == sorted(created)
    assert seen == [j.id for j in jobs.list_jobs()]
