"""The periodic check every running amphigory does: dead owners at once, silent owners after stall_timeout."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.errors import StaleLease
from amphigory_tui.domain.jobs import Job, JobStatus, RecoveryReport, Stage
from amphigory_tui.services.locks import ProcessLock
from amphigory_tui.services.proc import is_same_process
from amphigory_tui.services.recovery import periodic_check, run_periodic_checks
from amphigory_tui.services.runtime import Services
from tests.lifecycle.conftest import STALL_TIMEOUT_S, Holder
from tests.lifecycle.test_recovery import dead_worker, running_job, sleeper


def test_a_silent_live_owner_loses_its_job_through_fail(
    services: Services, clock: FixedClock, lock_dir: Path, holders: list[Holder]
) -> None:
    """A frozen process (lock held, no heartbeat for stall_timeout) has its job requeued with its old id (CAS)."""
    frozen = Holder(lock_dir)
    holders.append(frozen)
    pid, ticks = sleeper()
    job = running_job(services, frozen.worker_id(), stage=Stage.TRANSCODE, child_pid=pid, child_start_ticks=ticks)
    clock.advance(STALL_TIMEOUT_S - 1)
    assert not periodic_check(services).changed, "inside the stall timeout nothing happens"
    clock.advance(2)
    report = periodic_check(services)
    assert (report.stalled_requeued, report.killed_processes) == (1, 1)
    after = services.store.jobs.get(job.id)
    assert (after.status, after.attempts, after.worker_id) == (JobStatus.QUEUED, 1, None)
    assert after.error_message is not None and after.error_message.startswith("stalled: no heartbeat for 61 s")
    assert "(frozen)" in after.error_message
    assert [a.outcome for a in services.store.jobs.attempts(job.id)] == ["retry"]
    assert not is_same_process(pid, ticks), "the job was taken, then the frozen owner's encoder was ended"
    # The old owner wakes up: every update it tries changes nothing.
    assert services.store.jobs.heartbeat(job.id, frozen.worker_id()) is False
    with pytest.raises(StaleLease):
        services.store.jobs.complete(job.id, frozen.worker_id(), output_size=1)
    assert not periodic_check(services).changed


def test_an_owner_that_wakes_up_before_the_take_keeps_its_job_and_its_encoder(
    services: Services, clock: FixedClock, lock_dir: Path, holders: list[Holder], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner heartbeats after the check found its job stalled, before the check takes it: the take is refused
    and the owner's encode is not touched (the kill comes only after a take that succeeded)."""
    owner = Holder(lock_dir)
    holders.append(owner)
    pid, ticks = sleeper()
    jobs = services.store.jobs
    job = running_job(services, owner.worker_id(), stage=Stage.TRANSCODE, child_pid=pid, child_start_ticks=ticks)
    clock.advance(STALL_TIMEOUT_S + 1)
    real_fail = jobs.fail
    calls: list[int] = []

    def owner_wakes_first(job_id: int, worker_id: str, error: str, **kwargs: Any) -> Job:
        # The frozen owner runs again at exactly this moment: its heartbeat lands before the check's take.
        calls.append(job_id)
        assert jobs.heartbeat(job_id, owner.worker_id()) is True
        return real_fail(job_id, worker_id, error, **kwargs)

    monkeypatch.setattr(jobs, "fail", owner_wakes_first)
    try:
        report = periodic_check(services)
        assert calls == [job.id], "the check did try to take the stalled job"
        assert (report.stalled_requeued, report.stalled_failed, report.killed_processes) == (0, 0, 0)
        assert is_same_process(pid, ticks), "the owner's encoder must survive a take that was refused"
        after = jobs.get(job.id)
        assert (after.status, after.worker_id, after.child_pid) == (JobStatus.RUNNING, owner.worker_id(), pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_a_dead_owner_is_recovered_without_waiting(services: Services, lock_dir: Path, holders: list[Holder]) -> None:
    """The lock says dead: no stall timeout to wait for."""
    job = running_job(services, dead_worker(lock_dir, holders))
    report = periodic_check(services)
    assert report.orphaned_requeued == 1
    assert services.store.jobs.get(job.id).status is JobStatus.QUEUED


def test_own_jobs_and_silent_uploads_are_left_alone(
    services: Services, clock: FixedClock, lock_dir: Path, holders: list[Holder]
) -> None:
    """Our own pool watches its jobs; a live owner silent in the upload stage may be mid-swap: both stay."""
    frozen = Holder(lock_dir)
    holders.append(frozen)
    with ProcessLock.acquire(lock_dir) as own:
        mine = running_job(services, own.new_worker_id(), "mine.mkv")
        uploading = running_job(services, frozen.worker_id(), "up.mkv", stage=Stage.UPLOAD)
        clock.advance(STALL_TIMEOUT_S * 10)
        assert not periodic_check(services, lock=own).changed
        assert services.store.jobs.get(mine.id).status is JobStatus.RUNNING
        assert services.store.jobs.get(uploading.id).status is JobStatus.RUNNING
        frozen.kill()
        # Dead now: exact liveness hands the job to recovery (its intent, if any, is settled first).
        assert periodic_check(services, lock=own).orphaned_requeued == 1


def test_dead_workers_rows_are_pruned(services: Services, lock_dir: Path, holders: list[Holder]) -> None:
    """The Workers tab lists the living: a killed process's rows go, a live one's stay."""
    live = Holder(lock_dir)
    holders.append(live)
    dead = dead_worker(lock_dir, holders)
    services.store.workers.register(live.worker_id(), "h", 1)
    services.store.workers.register(dead, "h", 2)
    assert periodic_check(services).workers_pruned == 1
    assert [w.id for w in services.store.workers.list_workers()] == [live.worker_id()]


@pytest.mark.anyio
async def test_the_periodic_task_reports_what_it_did(services: Services, lock_dir: Path, holders: list[Holder]) -> None:
    """``run_periodic_checks`` runs in a task group and hands each report that changed something to a callback."""
    running_job(services, dead_worker(lock_dir, holders))
    seen: list[RecoveryReport] = []
    async with anyio.create_task_group() as tg:

        def on_report(report: RecoveryReport) -> None:
            seen.append(report)
            tg.cancel_scope.cancel()

        tg.start_soon(lambda: run_periodic_checks(services, interval_s=0.05, on_report=on_report))
        with anyio.fail_after(10):
            await anyio.sleep_forever()
    assert [r.orphaned_requeued for r in seen] == [1]
