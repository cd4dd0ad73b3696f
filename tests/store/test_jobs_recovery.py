"""Recovery: orphans of dead workers, shutdown pauses, stalled heartbeats."""

from __future__ import annotations

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.jobs import JobStatus, PauseReason, Progress
from amphigory_tui.store import Store
from amphigory_tui.store.jobs import JobStore
from tests.store.helpers import MAX_RETRIES, job_in_status, snapshot


def test_an_orphan_goes_back_to_the_queue_with_its_attempt_counted(jobs: JobStore, clock: FixedClock) -> None:
    """A dead owner's job is queued again at once; the dead attempt stays spent and is recorded as abandoned."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("dead")
    jobs.update_running(job.id, "dead", child_pid=321, temp_path="/work/1/a.mkv")
    clock.advance(60)
    assert [j.id for j in jobs.find_orphaned(lambda w: w != "dead")] == [job.id]
    assert jobs.recover_orphaned(lambda w: w != "dead") == (1, 0)
    recovered = jobs.get(job.id)
    assert (recovered.status, recovered.worker_id, recovered.child_pid, recovered.attempts) == (
        JobStatus.QUEUED,
        None,
        None,
        1,
    )
    assert recovered.next_attempt_at is None
    assert recovered.error_message == "interrupted: its worker died; requeued"
    [attempt] = jobs.attempts(job.id)
    assert (attempt.outcome, attempt.ended_at) == ("abandoned", clock.now())
    claimed = jobs.claim("w2")
    assert claimed is not None and claimed.attempts == 2


def test_an_orphan_at_its_last_attempt_fails(jobs: JobStore, clock: FixedClock) -> None:
    """A crash on the last allowed attempt ends the job: no crash loop of a poison file."""
    job = jobs.create("/library/poison.mkv")
    for _ in range(MAX_RETRIES - 1):
        jobs.claim("w1")
        jobs.fail(job.id, "w1", "transient")
        clock.advance(10_000)
    jobs.claim("dead")
    assert jobs.recover_orphaned(lambda w: w == "w1") == (0, 1)
    failed = jobs.get(job.id)
    assert (failed.status, failed.attempts, failed.completed_at) == (JobStatus.FAILED, MAX_RETRIES, clock.now())
    assert failed.error_message == "abandoned after restart (max retries exceeded)"
    assert [a.outcome for a in jobs.attempts(job.id)] == ["retry", "retry", "failed"]


def test_an_orphan_the_user_canceled_is_canceled(jobs: JobStore, clock: FixedClock) -> None:
    """The owner died before carrying out the user's cancel (or kill): recovery finishes it."""
    canceled = jobs.create("/library/c.mkv")
    killed = jobs.create("/library/k.mkv")
    jobs.claim("dead")
    jobs.claim("dead")
    jobs.cancel(canceled.id)
    jobs.kill(killed.id)
    assert jobs.recover_orphaned(lambda w: False) == (0, 0)
    for job_id in (canceled.id, killed.id):
        job = jobs.get(job_id)
        assert (job.status, job.control_request, job.worker_id) == (JobStatus.CANCELED, None, None)
        assert job.error_message == "canceled by user (owner died)"
        assert [a.outcome for a in jobs.attempts(job_id)] == ["canceled"]


def test_an_orphan_the_user_paused_stays_on_hold(jobs: JobStore, clock: FixedClock) -> None:
    """The user's pause survives its owner's death: the job is held, not run again behind the user's back."""
    job = jobs.create("/library/a.mkv")
    jobs.claim("dead")
    jobs.pause(job.id)
    assert jobs.recover_orphaned(lambda w: False) == (0, 0)
    held = jobs.get(job.id)
    assert (held.status, held.pause_reason, held.control_request, held.attempts) == (
        JobStatus.PAUSED,
        PauseReason.USER,
        None,
        1,
    )
    assert jobs.recover_paused() == 0
    assert jobs.claim("w2") is None


def test_recovery_leaves_live_owners_alone(jobs: JobStore, clock: FixedClock) -> None:
    """Only the jobs of dead workers move; a live worker's job is not even touched."""
    mine = jobs.create("/library/mine.mkv")
    theirs = jobs.create("/library/theirs.mkv")
    jobs.claim("alive")
    jobs.claim("dead")
    jobs.heartbeat(mine.id, "alive", Progress(percent=33.0))
    before = snapshot(jobs, mine.id)
    clock.advance(3600)
    assert [j.id for j in jobs.find_orphaned(lambda w: w == "alive")] == [theirs.id]
    assert jobs.recover_orphaned(lambda w: w == "alive") == (1, 0)
    assert snapshot(jobs, mine.id) == before
    assert jobs.get(theirs.id).status is JobStatus.QUEUED


def test_recovering_twice_is_recovering_once(store: Store, clock: FixedClock) -> None:
    """A second pass finds nothing to do and changes nothing."""
    jobs = store.jobs
    for name in ("a", "b", "c"):
        jobs.create(f"/library/{name}.mkv")
        jobs.claim(f"dead-{name}")
    jobs.cancel(jobs.running(["dead-b"])[0].id)
    assert jobs.recover_orphaned(lambda w: False) == (2, 0)
    after_once = {j.id: snapshot(jobs, j.id) for j in jobs.list_jobs()}
    clock.advance(5)
    assert jobs.recover_orphaned(lambda w: False) == (0, 0)
    assert {j.id: snapshot(jobs, j.id) for j in jobs.list_jobs()} == after_once


def test_recover_paused_resumes_only_shutdown_pauses(store: Store, clock: FixedClock) -> None:
    """Shutdown pauses go back to the queue at startup; a user's hold stays held."""
    shutdown = job_in_status(store, clock, "paused-shutdown")
    user = job_in_status(store, clock, "paused-user")
    clock.advance(7)
    assert store.jobs.recover_paused() == 1
    resumed = store.jobs.get(shutdown.id)
    assert (resumed.status, resumed.pause_reason, resumed.resume_attempt, resumed.updated_at) == (
        JobStatus.QUEUED,
        None,
        True,
        clock.now(),
    )
    assert store.jobs.get(user.id).status is JobStatus.PAUSED
    assert store.jobs.recover_paused() == 0


def test_detect_stalled_finds_silent_running_jobs(jobs: JobStore, clock: FixedClock) -> None:
    """A running job whose heartbeat is older than the timeout is stalled; a fresh heartbeat clears it."""
    quiet = jobs.create("/library/quiet.mkv")
    chatty = jobs.create("/library/chatty.mkv")
    jobs.claim("w1")
    jobs.claim("w2")
    clock.advance(200)
    jobs.heartbeat(chatty.id, "w2")
    clock.advance(150)
    assert [j.id for j in jobs.detect_stalled(clock.now(), 300)] == [quiet.id]
    assert jobs.detect_stalled(clock.now(), 350) == []
    jobs.heartbeat(quiet.id, "w1")
    assert jobs.detect_stalled(clock.now(), 300) == []
    clock.advance(301)
    assert {j.id for j in jobs.detect_stalled(clock.now(), 300)} == {quiet.id, chatty.id}
    # Detection only reports: the pool decides what to do with a stalled job.
    assert {j.status for j in jobs.list_jobs()} == {JobStatus.RUNNING}
