"""Every operation from every status: the legal ones land where ``domain.jobs.ALLOWED`` says, the rest change nothing.

A job is brought to each status through the store itself, then each operation is tried once. An illegal one must
raise ``InvalidTransition`` (the user's side) or ``StaleLease`` (the owner's side) and leave the row and its attempt
history exactly as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.errors import InvalidTransition, StaleLease
from amphigory_tui.domain.jobs import ALLOWED, TERMINAL, Job, JobStatus, PauseReason, Progress, Stage
from amphigory_tui.store import Store
from amphigory_tui.store.jobs import JobStore
from tests.store.helpers import job_in_status, snapshot

OWNER = "w1"
STRANGER = "w-stale"

STATUSES = [
    "queued",
    "running",
    "paused-shutdown",
    "paused-user",
    "completed",
    "failed",
    "canceled",
    "skipped",
]


def _status_of(name: str) -> JobStatus:
    return JobStatus.PAUSED if name.startswith("paused") else JobStatus(name)


@dataclass(frozen=True)
class Op:
    """One store operation on a job, and what it should do from each status."""

    name: str
    run: Callable[[JobStore, int], object]
    # Status (name) -> the status the job must end in; a status not listed must be refused.
    legal: dict[str, JobStatus]
    refusal: type[Exception]


def _user(target: JobStatus, *, running_request: bool) -> dict[str, JobStatus]:
    """The user's operation: from each status that may reach ``target`` (a running job only gets a request)."""
    legal = {}
    for name in STATUSES:
        status = _status_of(name)
        if status is JobStatus.RUNNING:
            if running_request:
                legal[name] = JobStatus.RUNNING
        elif target in ALLOWED[status]:
            legal[name] = target
    return legal


def _owner_only(target: JobStatus) -> dict[str, JobStatus]:
    assert target in ALLOWED[JobStatus.RUNNING]
    return {"running": target}


TERMINAL_NAMES = [name for name in STATUSES if _status_of(name) in TERMINAL]

OPS = [
    Op("pause", lambda j, i: j.pause(i), _user(JobStatus.PAUSED, running_request=True), InvalidTransition),
    Op("cancel", lambda j, i: j.cancel(i), _user(JobStatus.CANCELED, running_request=True), InvalidTransition),
    Op("kill", lambda j, i: j.kill(i), _user(JobStatus.CANCELED, running_request=True), InvalidTransition),
    Op(
        "resume",
        lambda j, i: j.resume(i),
        {"paused-shutdown": JobStatus.QUEUED, "paused-user": JobStatus.QUEUED},
        InvalidTransition,
    ),
    Op("resubmit", lambda j, i: j.resubmit(i), dict.fromkeys(TERMINAL_NAMES, JobStatus.QUEUED), InvalidTransition),
    Op("dismiss", lambda j, i: j.dismiss(i), {n: _status_of(n) for n in TERMINAL_NAMES}, InvalidTransition),
    Op("complete", lambda j, i: j.complete(i, OWNER), _owner_only(JobStatus.COMPLETED), StaleLease),
    Op("fail", lambda j, i: j.fail(i, OWNER, "x"), _owner_only(JobStatus.QUEUED), StaleLease),
    Op("fail-permanent", lambda j, i: j.fail(i, OWNER, "x", permanent=True), _owner_only(JobStatus.FAILED), StaleLease),
    Op("skip", lambda j, i: j.skip(i, OWNER, "x"), _owner_only(JobStatus.SKIPPED), StaleLease),
    Op("pause_running", lambda j, i: j.pause_running(i, OWNER), _owner_only(JobStatus.PAUSED), StaleLease),
    Op("cancel_running", lambda j, i: j.cancel_running(i, OWNER), _owner_only(JobStatus.CANCELED), StaleLease),
    Op(
        "update_running",
        lambda j, i: j.update_running(i, OWNER, stage=Stage.UPLOAD),
        _owner_only(JobStatus.RUNNING),
        StaleLease,
    ),
    # Strangers: never allowed, not even on a running job.
    Op("stranger-complete", lambda j, i: j.complete(i, STRANGER), {}, StaleLease),
    Op("stranger-fail", lambda j, i: j.fail(i, STRANGER, "x"), {}, StaleLease),
    Op("stranger-skip", lambda j, i: j.skip(i, STRANGER, "x"), {}, StaleLease),
    Op("stranger-pause_running", lambda j, i: j.pause_running(i, STRANGER), {}, StaleLease),
    Op("stranger-cancel_running", lambda j, i: j.cancel_running(i, STRANGER), {}, StaleLease),
    Op("stranger-update_running", lambda j, i: j.update_running(i, STRANGER, temp_path="/x"), {}, StaleLease),
]


@pytest.mark.parametrize("status", STATUSES)
def test_every_operation_from_every_status(store: Store, clock: FixedClock, status: str) -> None:
    """Legal moves land on the expected status; illegal ones raise and leave row and history untouched."""
    jobs = store.jobs
    checked = 0
    for op in OPS:
        job = job_in_status(store, clock, status, worker=OWNER)
        before = snapshot(jobs, job.id)
        clock.advance(1)
        if status in op.legal:
            op.run(jobs, job.id)
            after = jobs.get(job.id)
            assert after.status is op.legal[status], f"{op.name} from {status}"
            assert after.updated_at == clock.now(), f"{op.name} from {status}"
        else:
            with pytest.raises(op.refusal):
                op.run(jobs, job.id)
            assert snapshot(jobs, job.id) == before, f"{op.name} from {status} changed the job"
        # Each job gets a file of its own kind of status; cancel it out of the way of the next claim.
        _retire(jobs, job.id)
        checked += 1
    assert checked == len(OPS)


@pytest.mark.parametrize("status", STATUSES)
def test_heartbeat_and_claim_change_only_what_they_may(store: Store, clock: FixedClock, status: str) -> None:
    """A heartbeat succeeds only for the running owner; a claim takes only a queued job."""
    jobs = store.jobs
    job = job_in_status(store, clock, status, worker=OWNER)
    before = snapshot(jobs, job.id)
    clock.advance(1)
    assert jobs.heartbeat(job.id, STRANGER, Progress(percent=50.0)) is False
    assert snapshot(jobs, job.id) == before
    beat = jobs.heartbeat(job.id, OWNER, Progress(percent=50.0))
    assert beat is (status == "running")
    if not beat:
        assert snapshot(jobs, job.id) == before
    claimed = jobs.claim("w-new")
    if status == "queued":
        assert claimed is not None and claimed.id == job.id
    else:
        assert claimed is None
        after = snapshot(jobs, job.id)
        assert (after.job.status, after.job.worker_id, after.job.attempts) == (
            before.job.status,
            before.job.worker_id,
            before.job.attempts,
        )


def test_user_requests_on_a_running_job_only_ask_its_owner(store: Store, clock: FixedClock) -> None:
    """pause/cancel/kill of a running job set ``control_request``; status, owner and attempt stay."""
    jobs = store.jobs
    for action, request in ((jobs.pause, "pause"), (jobs.cancel, "cancel"), (jobs.kill, "kill")):
        job = job_in_status(store, clock, "running", worker=OWNER)
        before = jobs.get(job.id)
        after = action(job.id)
        assert after.control_request == request
        assert (after.status, after.worker_id, after.attempts) == (JobStatus.RUNNING, OWNER, before.attempts)
        assert jobs.control_requests([OWNER]) == {job.id: request}
        jobs.cancel_running(job.id, OWNER)


def test_paused_jobs_are_paused_for_the_reason_given(store: Store, clock: FixedClock) -> None:
    """The two pauses differ only in their reason: the shutdown one is resumed at startup."""
    shutdown = job_in_status(store, clock, "paused-shutdown")
    user = job_in_status(store, clock, "paused-user")
    assert (shutdown.pause_reason, user.pause_reason) == (PauseReason.SHUTDOWN, PauseReason.USER)


def _retire(jobs: JobStore, job_id: int) -> None:
    """Bring a job to a terminal state so it stays out of later claims of the same test."""
    job: Job = jobs.get(job_id)
    if job.status is JobStatus.RUNNING:
        assert job.worker_id is not None
        jobs.cancel_running(job_id, job.worker_id)
    elif job.status in (JobStatus.QUEUED, JobStatus.PAUSED):
        jobs.cancel(job_id)
