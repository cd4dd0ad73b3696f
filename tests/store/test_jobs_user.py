"""The user's side: pause, resume, cancel, kill, resubmit, dismiss, set_priority."""

from __future__ import annotations

import pytest

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.errors import UsageError
from amphigory_tui.domain.jobs import JobStatus, PauseReason
from amphigory_tui.store import JobFilter, Store
from amphigory_tui.store.jobs import JobStore
from tests.store.helpers import MAX_RETRIES, job_in_status, seed_candidates, snapshot


def test_pausing_a_queued_job_holds_it_and_resume_releases_it(jobs: JobStore, clock: FixedClock) -> None:
    """A held job is never claimed; resumed, it is claimed and counts its first attempt as usual."""
    job = jobs.create("/library/a.mkv")
    held = jobs.pause(job.id)
    assert (held.status, held.pause_reason, held.attempts) == (JobStatus.PAUSED, PauseReason.USER, 0)
    assert jobs.claim("w1") is None
    assert jobs.recover_paused() == 0
    clock.advance(1)
    resumed = jobs.resume(job.id)
    assert (resumed.status, resumed.pause_reason, resumed.updated_at) == (JobStatus.QUEUED, None, clock.now())
    claimed = jobs.claim("w1")
    assert claimed is not None and claimed.attempts == 1


def test_a_user_pause_of_a_running_job_keeps_its_attempt(jobs: JobStore, clock: FixedClock) -> None:
    """Asked to pause, the owner stops the child and pauses; the user's hold survives a restart; no attempt spent."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    assert jobs.pause(job.id).control_request == "pause"
    assert jobs.control_requests(["w1", "w2"]) == {job.id: "pause"}
    assert jobs.control_requests(["w2"]) == {}
    assert jobs.control_requests([]) == {}
    paused = jobs.pause_running(job.id, "w1", PauseReason.USER)
    assert (paused.status, paused.pause_reason, paused.attempts, paused.control_request) == (
        JobStatus.PAUSED,
        PauseReason.USER,
        1,
        None,
    )
    assert jobs.recover_paused() == 0
    assert jobs.get(job.id).status is JobStatus.PAUSED
    jobs.resume(job.id)
    claimed = jobs.claim("w2")
    assert claimed is not None and claimed.attempts == 1
    assert [(a.attempt, a.worker_id) for a in jobs.attempts(job.id)] == [(1, "w2")]


def test_cancel_and_kill_of_idle_jobs_are_immediate(jobs: JobStore, clock: FixedClock) -> None:
    """Queued and paused jobs are canceled on the spot, with the reason recorded."""
    queued = jobs.create("/library/q.mkv")
    paused = jobs.create("/library/p.mkv")
    jobs.pause(paused.id)
    killed = jobs.create("/library/k.mkv")
    clock.advance(2)
    assert jobs.cancel(queued.id, "not worth it").error_message == "not worth it"
    assert jobs.cancel(paused.id).error_message == "canceled by user"
    assert jobs.kill(killed.id).error_message == "killed by user"
    for job_id in (queued.id, paused.id, killed.id):
        job = jobs.get(job_id)
        assert (job.status, job.completed_at, job.attempts) == (JobStatus.CANCELED, clock.now(), 0)


def test_resubmit_gives_a_fresh_budget_without_lowering_attempts(jobs: JobStore, clock: FixedClock) -> None:
    """A job failed at its last attempt goes back to the queue: attempts stay, the cap grows by max_retries."""
    job = jobs.create("/library/a.mkv")
    for _ in range(MAX_RETRIES):
        jobs.claim("w1")
        jobs.fail(job.id, "w1", "exit 3")
        clock.advance(10_000)
    failed = jobs.get(job.id)
    assert (failed.status, failed.attempts, failed.max_retries) == (JobStatus.FAILED, MAX_RETRIES, MAX_RETRIES)
    again = jobs.resubmit(job.id)
    assert (again.status, again.attempts, again.max_retries) == (JobStatus.QUEUED, MAX_RETRIES, 2 * MAX_RETRIES)
    assert (again.error_message, again.completed_at, again.next_attempt_at, again.dismissed) == (
        None,
        None,
        None,
        False,
    )
    claimed = jobs.claim("w1")
    assert claimed is not None and claimed.attempts == MAX_RETRIES + 1
    assert [a.attempt for a in jobs.attempts(job.id)] == [1, 2, 3, 4]


@pytest.mark.parametrize("ending", ["completed", "failed", "canceled", "skipped"])
def test_resubmit_works_from_every_terminal_state(store: Store, clock: FixedClock, ending: str) -> None:
    """Every terminal state goes back to queued through resubmit (and only through it), undismissed."""
    job = job_in_status(store, clock, ending)
    store.jobs.dismiss(job.id)
    again = store.jobs.resubmit(job.id)
    assert (again.status, again.dismissed, again.stage) == (JobStatus.QUEUED, False, None)
    assert again.attempts == job.attempts


def test_resubmit_is_refused_while_the_file_has_another_live_job(store: Store, clock: FixedClock) -> None:
    """Two live jobs for one file are impossible: the resubmit says why and changes nothing."""
    seed_candidates(store, 1)
    store.jobs.queue_for_transcoding()
    first = store.jobs.claim("w1")
    assert first is not None
    store.jobs.fail(first.id, "w1", "exit 3", permanent=True)
    store.jobs.dismiss(first.id)
    assert store.jobs.queue_for_transcoding() == 1
    before = snapshot(store.jobs, first.id)
    with pytest.raises(UsageError, match=f"job {first.id}: its file already has another live job"):
        store.jobs.resubmit(first.id)
    assert snapshot(store.jobs, first.id) == before


def test_dismiss_hides_a_finished_job(store: Store, clock: FixedClock) -> None:
    """A dismissed job leaves the default list and the stats but stays readable."""
    done = job_in_status(store, clock, "completed")
    failed = job_in_status(store, clock, "failed")
    assert store.jobs.stats().failed == 1
    clock.advance(3)
    dismissed = store.jobs.dismiss(failed.id)
    assert (dismissed.dismissed, dismissed.status, dismissed.updated_at) == (True, JobStatus.FAILED, clock.now())
    assert [j.id for j in store.jobs.list_jobs()] == [done.id]
    assert {j.id for j in store.jobs.list_jobs(JobFilter(include_dismissed=True))} == {done.id, failed.id}
    assert store.jobs.stats().failed == 0
    assert store.jobs.get(failed.id).dismissed is True


@pytest.mark.parametrize("priority", [0, 100, 37])
def test_set_priority_accepts_the_bounds(jobs: JobStore, clock: FixedClock, priority: int) -> None:
    """0 and 100 are valid priorities."""
    job = jobs.create("/library/a.mkv")
    clock.advance(1)
    changed = jobs.set_priority(job.id, priority)
    assert (changed.priority, changed.updated_at) == (priority, clock.now())


@pytest.mark.parametrize("priority", [-1, 101, 1000])
def test_set_priority_refuses_out_of_bounds(jobs: JobStore, clock: FixedClock, priority: int) -> None:
    """Out-of-range priorities are usage errors that change nothing."""
    job = jobs.create("/library/a.mkv")
    before = snapshot(jobs, job.id)
    clock.advance(1)
    with pytest.raises(UsageError, match=f"priority must be from 0 to 100, not {priority}"):
        jobs.set_priority(job.id, priority)
    assert snapshot(jobs, job.id) == before


def test_set_priority_reorders_the_claims(jobs: JobStore, clock: FixedClock) -> None:
    """Raising a job's priority lets it jump the queue."""
    first = jobs.create("/library/first.mkv")
    clock.advance(1)
    second = jobs.create("/library/second.mkv")
    jobs.set_priority(second.id, 99)
    claimed = jobs.claim("w1")
    assert claimed is not None and claimed.id == second.id
    claimed = jobs.claim("w1")
    assert claimed is not None and claimed.id == first.id


def test_a_weaker_request_never_replaces_a_stronger_one(jobs: JobStore) -> None:
    """Pause after cancel stays a cancel, cancel after kill stays a kill; a stronger one always wins."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("w1")
    steps = [(jobs.pause, "pause"), (jobs.cancel, "cancel"), (jobs.pause, "cancel"), (jobs.kill, "kill")]
    steps += [(jobs.cancel, "kill"), (jobs.pause, "kill")]
    for action, expected in steps:
        assert action(job.id).control_request == expected
        assert jobs.get(job.id).control_request == expected
