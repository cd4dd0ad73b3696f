"""queue_for_transcoding: one live job per file (the database enforces it), best files first, done files stay put."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.errors import InvalidTransition, UsageError
from amphigory_tui.domain.jobs import Job, JobKind, JobStatus
from amphigory_tui.store import JobFilter, Store
from tests.store.helpers import count_rows, media_record, seed_candidates, seed_media


def _queued_paths(store: Store) -> list[str]:
    return sorted(job.input_path for job in store.jobs.list_jobs(JobFilter(include_dismissed=True)))


def _live_jobs_of(store: Store, media_id: int) -> int:
    return count_rows(
        store,
        "SELECT count(*) FROM transcode_jobs WHERE media_file_id = :m AND status IN ('queued', 'running', 'paused')",
        m=media_id,
    )


def test_queue_creates_one_job_per_candidate_and_only_once(store: Store, clock: FixedClock) -> None:
    """Candidates get a job each; files that need nothing, cannot be read or vanished get none; twice adds none."""
    candidates = seed_candidates(store, 5)
    seed_media(
        store,
        [
            media_record("/library/hevc.mkv", should_transcode=False),
            media_record("/library/broken.mkv", probe_error="moov atom not found"),
            media_record("/library/gone.mkv"),
        ],
    )
    gone = store.media.get_by_path("/library/gone.mkv")
    assert gone is not None
    store.media.mark_missing([gone.id])
    assert store.jobs.queue_for_transcoding() == 5
    assert store.jobs.queue_for_transcoding() == 0
    jobs = store.jobs.list_jobs()
    assert sorted(j.media_file_id for j in jobs if j.media_file_id is not None) == sorted(candidates)
    for job in jobs:
        media = store.media.get(job.media_file_id or 0)
        assert media is not None
        assert job.status is JobStatus.QUEUED
        assert (job.input_path, job.priority, job.source_size, job.source_mtime_ns) == (
            media.path,
            media.priority,
            media.size_bytes,
            media.mtime_ns,
        )
        assert job.created_at == clock.now()
    assert store.jobs.stats().need_transcoding == 0


def test_a_second_live_job_for_a_file_is_refused_by_the_database(store: Store) -> None:
    """The partial unique index rejects a duplicate live job even when inserted behind the store's back."""
    [media_id] = seed_candidates(store, 1)
    assert store.jobs.queue_for_transcoding() == 1
    insert = text(
        "INSERT INTO transcode_jobs (kind, status, priority, media_file_id, input_path, attempts, max_retries, "
        "progress_percent, resume_attempt, dismissed, created_at, updated_at) "
        "VALUES ('transcode', :status, 50, :m, '/library/dup.mkv', 0, 3, 0, FALSE, FALSE, 0, 0)"
    )
    for status in ("queued", "running", "paused"):
        with pytest.raises(IntegrityError), store.engines.write() as conn:
            conn.execute(insert, {"status": status, "m": media_id})
    # Finished jobs are history, not live: any number of them may sit beside the live one.
    with store.engines.write() as conn:
        for status in ("completed", "failed", "canceled", "skipped"):
            conn.execute(insert, {"status": status, "m": media_id})
    assert _live_jobs_of(store, media_id) == 1
    with pytest.raises(UsageError, match=f"media file {media_id} already has a live job"):
        store.jobs.create("/library/dup.mkv", media_file_id=media_id)
    assert count_rows(store, "SELECT count(*) FROM transcode_jobs WHERE media_file_id = :m", m=media_id) == 5


def test_queue_takes_the_highest_priority_then_the_largest_first(store: Store) -> None:
    """With a limit, the files queued are the most urgent ones, then the biggest; the priority is copied."""
    seed_media(
        store,
        [
            media_record("/library/small-urgent.mkv", priority=90, size=1_000),
            media_record("/library/big-urgent.mkv", priority=90, size=9_000),
            media_record("/library/huge-lazy.mkv", priority=10, size=99_000),
            media_record("/library/mid.mkv", priority=50, size=5_000),
            media_record("/library/mid-bigger.mkv", priority=50, size=6_000),
        ],
    )
    batches = []
    for limit in (1, 2, 5):
        before = set(_queued_paths(store))
        assert store.jobs.queue_for_transcoding(limit=limit) == min(limit, 5 - len(before))
        batches.append(sorted(set(_queued_paths(store)) - before))
    assert batches == [
        ["/library/big-urgent.mkv"],
        ["/library/mid-bigger.mkv", "/library/small-urgent.mkv"],
        ["/library/huge-lazy.mkv", "/library/mid.mkv"],
    ]
    claimed = [store.jobs.claim("w1") for _ in range(5)]
    assert [(job.priority if job else None) for job in claimed] == [90, 90, 50, 50, 10]


def test_queue_limit_zero_queues_nothing_and_a_negative_one_is_refused(store: Store) -> None:
    """``limit=0`` is a valid no-op; a negative limit is a usage error naming the value."""
    seed_candidates(store, 3)
    assert store.jobs.queue_for_transcoding(limit=0) == 0
    with pytest.raises(UsageError, match="-1"):
        store.jobs.queue_for_transcoding(limit=-1)
    assert count_rows(store, "SELECT count(*) FROM transcode_jobs") == 0


@pytest.mark.parametrize("ending", ["failed", "canceled", "skipped"])
def test_a_file_whose_job_gave_up_is_not_queued_again_until_dismissed(
    store: Store, clock: FixedClock, ending: str
) -> None:
    """A failed/canceled/skipped job keeps its unchanged file out of the queue until the user dismisses it."""
    [media_id] = seed_candidates(store, 1)
    store.jobs.queue_for_transcoding()
    job = _finish(store, ending)
    assert store.jobs.queue_for_transcoding() == 0
    assert store.jobs.stats().need_transcoding == 0
    store.jobs.dismiss(job.id)
    assert store.jobs.stats().need_transcoding == 1
    assert store.jobs.queue_for_transcoding() == 1
    assert _live_jobs_of(store, media_id) == 1


def test_a_failed_file_comes_back_through_resubmit_not_a_new_job(store: Store, clock: FixedClock) -> None:
    """Resubmitting re-queues the same job; queueing afterwards adds no second one."""
    [media_id] = seed_candidates(store, 1)
    store.jobs.queue_for_transcoding()
    job = _finish(store, "failed")
    again = store.jobs.resubmit(job.id)
    assert again.id == job.id and again.status is JobStatus.QUEUED
    assert store.jobs.queue_for_transcoding() == 0
    assert _live_jobs_of(store, media_id) == 1


def test_a_failed_file_that_changed_on_disk_is_queued_again(store: Store, clock: FixedClock) -> None:
    """New size or mtime means new content: it deserves a fresh job even though the old one failed."""
    [media_id] = seed_candidates(store, 1)
    store.jobs.queue_for_transcoding()
    old = _finish(store, "failed")
    record = media_record("/library/movie0000.mkv", size=2_000_000)
    seed_media(store, [record])
    assert store.jobs.queue_for_transcoding() == 1
    [new] = [j for j in store.jobs.list_jobs() if j.status is JobStatus.QUEUED]
    assert new.id != old.id and new.media_file_id == media_id and new.source_size == 2_000_000
    touched = media_record("/library/movie0000.mkv", size=2_000_000, mtime_ns=1_800_000_000_000_000_000)
    _finish(store, "failed")
    seed_media(store, [touched])
    assert store.jobs.queue_for_transcoding() == 1


def test_a_completed_file_is_not_transcoded_twice(store: Store, clock: FixedClock) -> None:
    """A file whose job completed stays out of the queue while it is unchanged, dismissed or not."""
    [media_id] = seed_candidates(store, 1)
    store.jobs.queue_for_transcoding()
    job = _finish(store, "completed")
    assert store.jobs.queue_for_transcoding() == 0
    store.jobs.dismiss(job.id)
    assert store.jobs.queue_for_transcoding() == 0
    assert store.jobs.stats().need_transcoding == 0
    # Redoing it is an explicit choice: resubmit.
    assert store.jobs.resubmit(job.id).status is JobStatus.QUEUED
    assert _live_jobs_of(store, media_id) == 1


def test_cancel_for_media_stops_the_live_jobs_of_those_files(store: Store, clock: FixedClock) -> None:
    """Idle jobs are canceled at once with the reason; a running one is asked to stop; others are untouched."""
    ids = seed_candidates(store, 4)
    store.jobs.queue_for_transcoding()
    by_media = {j.media_file_id: j for j in store.jobs.list_jobs()}
    running = store.jobs.claim("w1")
    assert running is not None
    paused = by_media[ids[1]] if running.media_file_id != ids[1] else by_media[ids[2]]
    store.jobs.pause(paused.id)
    targets = [running.media_file_id or 0, paused.media_file_id or 0]
    untouched = [m for m in ids if m not in targets]
    queued_target = by_media[untouched.pop()]
    targets.append(queued_target.media_file_id or 0)
    assert store.jobs.cancel_for_media(targets, "the file changed on disk") == 3
    assert store.jobs.get(running.id).control_request == "cancel"
    assert store.jobs.get(running.id).status is JobStatus.RUNNING
    for job_id in (paused.id, queued_target.id):
        job = store.jobs.get(job_id)
        assert (job.status, job.error_message, job.completed_at) == (
            JobStatus.CANCELED,
            "the file changed on disk",
            clock.now(),
        )
    assert store.jobs.get(by_media[untouched[0]].id).status is JobStatus.QUEUED
    assert store.jobs.cancel_for_media([], "nothing") == 0
    # The owner only sees "cancel"; the job and its attempt record why.
    done = store.jobs.cancel_running(running.id, "w1")
    assert (done.status, done.error_message) == (JobStatus.CANCELED, "the file changed on disk")
    assert [(a.outcome, a.error) for a in store.jobs.attempts(running.id)] == [("canceled", "the file changed on disk")]


def test_cancel_queued_for_media_cancels_only_queued_transcodes_each_with_its_reason(
    store: Store, clock: FixedClock
) -> None:
    """Each file's queued transcode job is canceled with that file's reason, written exactly as a user's cancel
    of a queued job writes it; a running or paused job of a listed file, another kind of job and unlisted files
    are untouched."""
    ids = seed_candidates(store, 6)
    store.jobs.queue_for_transcoding()
    by_media = {j.media_file_id: j for j in store.jobs.list_jobs()}
    running = store.jobs.claim("w1")
    assert running is not None and running.media_file_id is not None
    rest = [m for m in ids if m != running.media_file_id]
    paused, queued_a, queued_b, by_user, unlisted = rest
    store.jobs.pause(by_media[paused].id)
    insert = store.jobs.create("/library/insert.mkv", kind=JobKind.INSERT, media_file_id=queued_a)
    clock.advance(5)
    reasons = {
        running.media_file_id: "rules changed: r",
        paused: "rules changed: p",
        queued_a: "rules changed: expected saving 8 % < min 10 %",
        queued_b: "rules changed: already hevc",
        999_999: "rules changed: no such file",
    }
    assert store.jobs.cancel_queued_for_media(reasons) == 2
    for media_id in (queued_a, queued_b):
        job = store.jobs.get(by_media[media_id].id)
        assert (job.status, job.error_message, job.completed_at, job.updated_at) == (
            JobStatus.CANCELED,
            reasons[media_id],
            clock.now(),
            clock.now(),
        )
    # Field for field what JobStore.cancel writes for a queued job (and no attempt rows either way).
    user = store.jobs.cancel(by_media[by_user].id, "rules changed: already hevc")
    mine = store.jobs.get(by_media[queued_b].id)
    same_file = {"id": user.id, "input_path": user.input_path, "media_file_id": user.media_file_id}
    assert replace(mine, **same_file, source_size=user.source_size) == user
    assert store.jobs.attempts(mine.id) == store.jobs.attempts(user.id) == []
    still_running = store.jobs.get(running.id)
    assert (still_running.status, still_running.control_request, still_running.error_message) == (
        JobStatus.RUNNING,
        None,
        None,
    )
    assert store.jobs.get(by_media[paused].id).status is JobStatus.PAUSED
    assert store.jobs.get(insert.id).status is JobStatus.QUEUED
    assert store.jobs.get(by_media[unlisted].id).status is JobStatus.QUEUED
    assert store.jobs.cancel_queued_for_media(reasons) == 0
    assert store.jobs.cancel_queued_for_media({}) == 0


def test_cancel_queued_for_media_keeps_each_reason_across_chunks(store: Store) -> None:
    """More files than one statement's bound values allow: every job is canceled, each with its own reason."""
    ids = seed_candidates(store, 650)
    assert store.jobs.queue_for_transcoding() == 650
    reasons = {media_id: f"rules changed: file {n}" for n, media_id in enumerate(ids)}
    assert store.jobs.cancel_queued_for_media(reasons) == 650
    got = {j.media_file_id: j.error_message for j in store.jobs.list_jobs(JobFilter(include_dismissed=True))}
    assert got == reasons


def test_an_in_process_cancel_does_not_pick_up_an_old_error(store: Store, clock: FixedClock) -> None:
    """With no cancel request pending, the owner's own reason is recorded, not a previous attempt's error."""
    seed_candidates(store, 1)
    store.jobs.queue_for_transcoding()
    first = store.jobs.claim("w1")
    assert first is not None
    assert store.jobs.fail(first.id, "w1", "HandBrakeCLI crashed").status is JobStatus.QUEUED
    clock.advance(10_000)  # past the retry delay
    second = store.jobs.claim("w1")
    assert second is not None and second.id == first.id and second.error_message == "HandBrakeCLI crashed"
    done = store.jobs.cancel_running(second.id, "w1", "killed by user")
    assert done.error_message == "killed by user"


def test_dismiss_refuses_a_live_job(store: Store) -> None:
    """Only a finished job can be hidden; the refusal names its status and changes nothing."""
    seed_candidates(store, 1)
    store.jobs.queue_for_transcoding()
    job = store.jobs.list_jobs()[0]
    with pytest.raises(InvalidTransition):
        store.jobs.dismiss(job.id)
    assert store.jobs.get(job.id).dismissed is False


def _finish(store: Store, ending: str) -> Job:
    """Claim the next job and end it as ``ending`` (failed permanently, canceled, skipped or completed)."""
    job = store.jobs.claim("w1")
    assert job is not None
    if ending == "failed":
        return store.jobs.fail(job.id, "w1", "HandBrakeCLI exited with code 3", permanent=True)
    if ending == "canceled":
        return store.jobs.cancel_running(job.id, "w1")
    if ending == "skipped":
        return store.jobs.skip(job.id, "w1", "output larger than the source")
    return store.jobs.complete(job.id, "w1", output_size=10)
