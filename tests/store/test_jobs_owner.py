"""The owner's side of a job: create, claim, heartbeat, update_running, complete, fail, skip, pause/cancel_running."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.errors import JobNotFound, StaleLease, UsageError
from amphigory_tui.domain.jobs import Attempt, JobKind, JobStatus, PauseReason, Progress, Stage
from amphigory_tui.store import Store
from amphigory_tui.store.jobs import JobStore
from tests.store.helpers import MAX_RETRIES, RETRY_BACKOFF, RETRY_DELAY_S, count_rows, snapshot

MISSING = 987_654_321


def test_create_inserts_one_queued_job(jobs: JobStore, clock: FixedClock) -> None:
    """A new job is queued, unowned, with no attempt spent and the configured retry budget."""
    job = jobs.create("/library/a.mkv", priority=70, preset="H.265 MKV 1080p30", source_size=123)
    assert job.status is JobStatus.QUEUED
    assert job.kind is JobKind.TRANSCODE
    assert (job.priority, job.attempts, job.max_retries) == (70, 0, MAX_RETRIES)
    assert (job.worker_id, job.stage, job.next_attempt_at, job.pause_reason) == (None, None, None, None)
    assert job.created_at == job.updated_at == clock.now()
    assert (job.preset, job.source_size, job.name) == ("H.265 MKV 1080p30", 123, "a.mkv")
    assert jobs.get(job.id) == job
    assert jobs.attempts(job.id) == []


@pytest.mark.parametrize("priority", [-1, 101])
def test_create_rejects_a_priority_out_of_bounds(store: Store, priority: int) -> None:
    """Priorities run from 0 to 100; anything else is refused before any row is written."""
    with pytest.raises(UsageError, match="priority must be from 0 to 100"):
        store.jobs.create("/library/a.mkv", priority=priority)
    assert count_rows(store, "SELECT count(*) FROM transcode_jobs") == 0


def test_claim_takes_the_job_and_counts_an_attempt(jobs: JobStore, clock: FixedClock) -> None:
    """A claim moves queued -> running, records the lease, counts attempt 1 and opens its history row."""
    job = jobs.create("/library/a.mkv")
    clock.advance(5)
    claimed = jobs.claim("host:1:w1")
    assert claimed is not None and claimed.id == job.id
    assert claimed.status is JobStatus.RUNNING
    assert claimed.worker_id == "host:1:w1"
    assert claimed.attempts == 1
    assert claimed.started_at == claimed.last_heartbeat == claimed.updated_at == clock.now()
    assert jobs.get(job.id) == claimed
    assert jobs.attempts(job.id) == [Attempt(job.id, 1, "host:1:w1", clock.now(), None, None, None)]


def test_claim_with_nothing_queued_returns_none(jobs: JobStore) -> None:
    """No queued job: no claim, nothing written."""
    assert jobs.claim("w1") is None


def test_claim_order_is_priority_then_age(jobs: JobStore, clock: FixedClock) -> None:
    """The highest priority goes first; among equals the oldest, then the lowest id."""
    low = jobs.create("/library/low.mkv", priority=10)
    clock.advance(1)
    old = jobs.create("/library/old.mkv", priority=90)
    clock.advance(1)
    young_a = jobs.create("/library/young-a.mkv", priority=90)
    young_b = jobs.create("/library/young-b.mkv", priority=90)
    clock.advance(1)
    urgent = jobs.create("/library/urgent.mkv", priority=100)
    order = []
    while (claimed := jobs.claim("w1")) is not None:
        order.append(claimed.id)
    assert order == [urgent.id, old.id, young_a.id, young_b.id, low.id]


def test_claim_skips_a_job_whose_retry_time_has_not_come(jobs: JobStore, clock: FixedClock) -> None:
    """A retry waits for its ``next_attempt_at``; a later job of lower priority may run meanwhile."""
    first = jobs.create("/library/first.mkv", priority=90)
    assert jobs.claim("w1") is not None
    failed = jobs.fail(first.id, "w1", "transient")
    assert failed.next_attempt_at == clock.now() + RETRY_DELAY_S
    other = jobs.create("/library/other.mkv", priority=10)
    claimed = jobs.claim("w2")
    assert claimed is not None and claimed.id == other.id
    clock.advance(RETRY_DELAY_S - 0.5)
    assert jobs.claim("w3") is None
    clock.advance(0.5)
    retried = jobs.claim("w3")
    assert retried is not None and retried.id == first.id
    assert retried.attempts == 2 and retried.next_attempt_at is None


def test_claim_skips_a_job_whose_upstream_is_not_completed(jobs: JobStore, clock: FixedClock) -> None:
    """``depends_on`` holds a job back until its upstream completed, whatever its priority."""
    upstream = jobs.create("/library/rip.mkv", kind=JobKind.RIP, priority=0)
    downstream = jobs.create("/library/rip.mkv", priority=100, depends_on=upstream.id)
    claimed = jobs.claim("w1")
    assert claimed is not None and claimed.id == upstream.id
    assert jobs.claim("w2") is None
    jobs.complete(upstream.id, "w1")
    claimed = jobs.claim("w2")
    assert claimed is not None and claimed.id == downstream.id


def test_a_failed_upstream_keeps_its_downstream_waiting(jobs: JobStore) -> None:
    """A downstream of a failed job is never claimed (it waits for a resubmit of the upstream)."""
    upstream = jobs.create("/library/rip.mkv", kind=JobKind.RIP)
    downstream = jobs.create("/library/out.mkv", depends_on=upstream.id)
    jobs.claim("w1")
    jobs.fail(upstream.id, "w1", "disc unreadable", permanent=True)
    assert jobs.claim("w2") is None
    assert jobs.get(downstream.id).status is JobStatus.QUEUED


def test_heartbeat_records_progress_and_stage(jobs: JobStore, clock: FixedClock) -> None:
    """The owner's heartbeat moves ``last_heartbeat`` and stores the progress it reports."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    clock.advance(30)
    progress = Progress(percent=42.5, fps=61.0, avg_fps=58.5, eta_s=120.0)
    assert jobs.heartbeat(job.id, "w1", progress, stage=Stage.TRANSCODE) is True
    after = jobs.get(job.id)
    assert after.last_heartbeat == after.updated_at == clock.now()
    assert (after.progress_percent, after.fps, after.avg_fps, after.eta_s) == (42.5, 61.0, 58.5, 120.0)
    assert after.stage is Stage.TRANSCODE
    clock.advance(30)
    assert jobs.heartbeat(job.id, "w1") is True
    assert jobs.get(job.id).progress_percent == 42.5


def test_heartbeat_of_a_stranger_changes_nothing(jobs: JobStore, clock: FixedClock) -> None:
    """A worker that does not own the job gets False and writes nothing."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    before = snapshot(jobs, job.id)
    clock.advance(10)
    assert jobs.heartbeat(job.id, "w2", Progress(percent=99.0), stage=Stage.UPLOAD) is False
    assert jobs.heartbeat(MISSING, "w1") is False
    assert snapshot(jobs, job.id) == before


def test_update_running_sets_fields_and_a_new_stage_resets_progress(jobs: JobStore, clock: FixedClock) -> None:
    """The owner records its temp file and child; entering a stage restarts the progress bar."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    jobs.heartbeat(job.id, "w1", Progress(percent=80.0, fps=30.0, eta_s=5.0))
    clock.advance(3)
    jobs.update_running(job.id, "w1", stage=Stage.VALIDATE, temp_path="/work/1/a.mkv", child_pid=4242)
    after = jobs.get(job.id)
    assert after.stage is Stage.VALIDATE
    assert (after.temp_path, after.child_pid) == ("/work/1/a.mkv", 4242)
    assert (after.progress_percent, after.fps, after.eta_s) == (0.0, None, None)
    assert after.last_heartbeat == after.updated_at == clock.now()


def test_update_running_refuses_status_and_unknown_fields(jobs: JobStore) -> None:
    """``update_running`` never writes ``status``, ``attempts`` or the lease: those have their own methods."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    before = snapshot(jobs, job.id)
    for field in ("status", "attempts", "last_heartbeat", "bogus"):
        with pytest.raises(ValueError, match="not a running-job field"):
            jobs.update_running(job.id, "w1", **{field: "x"})
    assert snapshot(jobs, job.id) == before


def test_complete_records_the_result_and_closes_the_attempt(jobs: JobStore, clock: FixedClock) -> None:
    """``running -> completed``: the lease is released, the result's facts stored, the attempt closed."""
    job = jobs.create("/library/a.mkv", source_size=1000)
    jobs.claim("w1")
    jobs.update_running(job.id, "w1", temp_path="/work/1/a.mkv", child_pid=99)
    clock.advance(60)
    done = jobs.complete(
        job.id, "w1", output_path="/library/a.hevc.mkv", output_size=400, duration_s=59.5, encode_time_s=58.0
    )
    assert done.status is JobStatus.COMPLETED
    assert (done.worker_id, done.child_pid, done.temp_path, done.control_request) == (None, None, None, None)
    assert (done.output_path, done.output_size, done.duration_s, done.encode_time_s) == (
        "/library/a.hevc.mkv",
        400,
        59.5,
        58.0,
    )
    assert done.progress_percent == 100.0
    assert done.completed_at == clock.now()
    assert jobs.get(job.id) == done
    [attempt] = jobs.attempts(job.id)
    assert (attempt.outcome, attempt.ended_at, attempt.error) == ("completed", clock.now(), None)


def test_fail_retries_with_backoff_then_fails_at_max(jobs: JobStore, clock: FixedClock) -> None:
    """Attempt n fails -> queued after ``delay × backoff^(n-1)``; the last allowed attempt fails for good."""
    job = jobs.create("/library/a.mkv")
    for attempt in range(1, MAX_RETRIES):
        claimed = jobs.claim("w1")
        assert claimed is not None and claimed.attempts == attempt
        failed = jobs.fail(job.id, "w1", f"exit 3 on try {attempt}")
        delay = RETRY_DELAY_S * RETRY_BACKOFF ** (attempt - 1)
        assert failed.status is JobStatus.QUEUED
        assert failed.next_attempt_at == clock.now() + delay
        assert (failed.error_message, failed.worker_id, failed.completed_at) == (f"exit 3 on try {attempt}", None, None)
        assert jobs.claim("w1") is None
        clock.advance(delay)
    claimed = jobs.claim("w1")
    assert claimed is not None and claimed.attempts == MAX_RETRIES
    final = jobs.fail(job.id, "w1", "exit 3 again")
    assert final.status is JobStatus.FAILED
    assert (final.attempts, final.completed_at, final.next_attempt_at) == (MAX_RETRIES, clock.now(), None)
    assert [(a.attempt, a.outcome) for a in jobs.attempts(job.id)] == [(1, "retry"), (2, "retry"), (3, "failed")]
    clock.advance(10_000)
    assert jobs.claim("w1") is None


def test_backoff_delays_are_the_configured_series(jobs: JobStore, clock: FixedClock) -> None:
    """With delay 30 s and ×4: 30 s after the first failure, 120 s after the second (measured, not assumed)."""
    job = jobs.create("/library/a.mkv")
    waits = []
    for _ in range(MAX_RETRIES - 1):
        jobs.claim("w1")
        failed = jobs.fail(job.id, "w1", "transient")
        assert failed.next_attempt_at is not None
        waits.append(failed.next_attempt_at - clock.now())
        clock.advance(waits[-1])
    assert waits == [30.0, 120.0]


def test_permanent_failure_skips_the_retries(jobs: JobStore, clock: FixedClock) -> None:
    """A permanent error (unreadable input) fails the job at once, attempts left or not."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    failed = jobs.fail(job.id, "w1", "input is not a video", permanent=True)
    assert failed.status is JobStatus.FAILED
    assert (failed.attempts, failed.error_message, failed.completed_at) == (1, "input is not a video", clock.now())
    assert [(a.attempt, a.outcome, a.error) for a in jobs.attempts(job.id)] == [(1, "failed", "input is not a video")]


def test_skip_is_final_and_keeps_the_reason(jobs: JobStore, clock: FixedClock) -> None:
    """``running -> skipped``: nothing to gain; the reason is kept for the queue table."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    skipped = jobs.skip(job.id, "w1", "output was larger than the source")
    assert skipped.status is JobStatus.SKIPPED
    assert (skipped.error_message, skipped.worker_id, skipped.completed_at) == (
        "output was larger than the source",
        None,
        clock.now(),
    )
    assert [(a.outcome, a.error) for a in jobs.attempts(job.id)] == [("skipped", "output was larger than the source")]


def test_pause_running_keeps_the_attempt_for_the_resume(jobs: JobStore, clock: FixedClock) -> None:
    """A shutdown pause spends no attempt: the next claim continues attempt 1 and reopens its history row."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    jobs.update_running(job.id, "w1", temp_path="/work/1/a.mkv")
    paused = jobs.pause_running(job.id, "w1")
    assert paused.status is JobStatus.PAUSED
    assert paused.pause_reason is PauseReason.SHUTDOWN
    assert (paused.attempts, paused.resume_attempt, paused.worker_id, paused.temp_path) == (1, True, None, None)
    assert [(a.attempt, a.outcome) for a in jobs.attempts(job.id)] == [(1, "paused")]
    assert jobs.recover_paused() == 1
    clock.advance(1)
    again = jobs.claim("w2")
    assert again is not None and again.id == job.id
    assert (again.attempts, again.resume_attempt, again.pause_reason) == (1, False, None)
    assert jobs.attempts(job.id) == [Attempt(job.id, 1, "w2", clock.now() - 1, None, None, None)]
    jobs.fail(job.id, "w2", "transient")
    clock.advance(RETRY_DELAY_S)
    third = jobs.claim("w2")
    assert third is not None and third.attempts == 2


def test_cancel_running_is_final(jobs: JobStore, clock: FixedClock) -> None:
    """The owner finishes a cancel after killing its child: canceled, temp file forgotten."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    jobs.update_running(job.id, "w1", temp_path="/work/1/a.mkv")
    jobs.cancel(job.id)
    canceled = jobs.cancel_running(job.id, "w1")
    assert canceled.status is JobStatus.CANCELED
    assert (canceled.temp_path, canceled.control_request, canceled.error_message) == (None, None, "canceled by user")
    assert canceled.completed_at == clock.now()
    assert [a.outcome for a in jobs.attempts(job.id)] == ["canceled"]


def test_a_stale_worker_changes_nothing(jobs: JobStore, clock: FixedClock) -> None:
    """After its job was recovered and re-claimed by w2, the old owner w1 is refused everywhere."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    jobs.recover_orphaned(lambda worker: worker != "w1")
    clock.advance(1)
    jobs.claim("w2")
    jobs.heartbeat(job.id, "w2", Progress(percent=10.0))
    before = snapshot(jobs, job.id)
    clock.advance(5)
    assert jobs.heartbeat(job.id, "w1", Progress(percent=99.0)) is False
    refusals: list[Callable[[], object]] = [
        lambda: jobs.update_running(job.id, "w1", stage=Stage.UPLOAD),
        lambda: jobs.complete(job.id, "w1", output_size=1),
        lambda: jobs.fail(job.id, "w1", "late failure"),
        lambda: jobs.fail(job.id, "w1", "late failure", permanent=True),
        lambda: jobs.skip(job.id, "w1", "late skip"),
        lambda: jobs.pause_running(job.id, "w1"),
        lambda: jobs.cancel_running(job.id, "w1"),
    ]
    for refused in refusals:
        with pytest.raises(StaleLease, match=f"job {job.id}: .* worker w1 does not own it"):
            refused()
    assert snapshot(jobs, job.id) == before


def test_operations_on_a_missing_job_say_so(jobs: JobStore) -> None:
    """An unknown id is a ``JobNotFound`` naming it, for readers and writers alike."""
    operations: list[Callable[[], object]] = [
        lambda: jobs.get(MISSING),
        lambda: jobs.pause(MISSING),
        lambda: jobs.cancel(MISSING),
        lambda: jobs.resume(MISSING),
        lambda: jobs.resubmit(MISSING),
        lambda: jobs.dismiss(MISSING),
        lambda: jobs.set_priority(MISSING, 5),
        lambda: jobs.complete(MISSING, "w1"),
    ]
    for operation in operations:
        with pytest.raises(JobNotFound, match=f"job {MISSING} does not exist"):
            operation()
