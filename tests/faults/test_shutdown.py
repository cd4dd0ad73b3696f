"""Stopping amphigory worker: SIGTERM/SIGINT/SIGHUP pause running jobs (no attempt used) and exit 0 promptly."""

from __future__ import annotations

import os
import signal
import time

import pytest

from amphigory_tui.domain.jobs import JobStatus, PauseReason, Stage
from tests.faults.harness import Rig, wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_mid_transcode_pauses_and_the_restart_completes(make_rig: type[Rig], sig: int) -> None:
    """Paused with its stage kept and attempts unchanged, partial output deleted, exit 0 within 10 s; resumes."""
    rig = make_rig()
    (clip,) = rig.add_jobs(1)
    worker = rig.start(env={"AMPHIGORY_TEST_HB_FREEZE": str(clip.job_id)})
    rig.wait_marker(f"transcode.{clip.job_id}", worker)
    assert rig.temp_files(), "mid-transcode the job has files in its lease dir"
    worker.signal(sig)
    assert worker.wait(10) == 0

    job = rig.job(clip.job_id)
    assert (job.status, job.pause_reason, job.attempts, job.stage) == (
        JobStatus.PAUSED,
        PauseReason.SHUTDOWN,
        1,
        Stage.TRANSCODE,
    )
    assert [(a.attempt, a.outcome) for a in rig.store.jobs.attempts(job.id)] == [(1, "paused")]
    assert rig.check_library_path(clip) == "original"
    rig.check_clean()

    rig.drain()
    rig.check_completed(clip)
    assert rig.job(clip.job_id).attempts == 1, "the pause used no attempt: the resumed run is still attempt 1"
    assert rig.starts()[clip.job_id] == 2
    rig.check_clean()


def test_a_second_signal_skips_the_grace_period(make_rig: type[Rig]) -> None:
    """A tool that ignores the polite signal would get 30 s of grace; a second SIGTERM kills it at once."""
    rig = make_rig(kill_grace_s=30.0)
    (clip,) = rig.add_jobs(1)
    worker = rig.start(env={"AMPHIGORY_TEST_HB_DEAF": "1"})
    rig.wait_marker(f"deaf.{clip.job_id}", worker)
    worker.signal(signal.SIGTERM)
    time.sleep(1.0)
    assert worker.alive(), "the first signal waits for the tool (grace period)"
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    job = rig.job(clip.job_id)
    assert (job.status, job.attempts) == (JobStatus.PAUSED, 1)
    rig.check_clean()


def test_a_tool_killed_by_the_service_manager_first_counts_as_paused(make_rig: type[Rig]) -> None:
    """KillMode=control-group: HandBrakeCLI dies from the same SIGTERM before our handler runs: paused, not failed."""
    rig = make_rig()
    (clip,) = rig.add_jobs(1)
    worker = rig.start(env={"AMPHIGORY_TEST_HB_FREEZE": str(clip.job_id)})
    rig.wait_marker(f"transcode.{clip.job_id}", worker)
    tool = next(e["pid"] for e in rig.hb_events() if e["event"] == "start")
    os.killpg(tool, signal.SIGTERM)  # the tool's group first, as the cgroup kill may deliver it
    os.killpg(tool, signal.SIGCONT)
    wait_until(lambda: any(e["event"] == "end" for e in rig.hb_events()), 10, "HandBrakeCLI did not die")
    time.sleep(0.3)  # amphigory has seen the tool die; its own SIGTERM comes a moment later
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    job = rig.job(clip.job_id)
    assert (job.status, job.pause_reason, job.attempts) == (JobStatus.PAUSED, PauseReason.SHUTDOWN, 1)
    assert job.error_message is None
    rig.check_clean()


def test_a_tool_killed_without_a_shutdown_is_a_failed_attempt(make_rig: type[Rig]) -> None:
    """The same kill with no shutdown following is a real failure: the attempt is spent and the job retried."""
    rig = make_rig()
    (clip,) = rig.add_jobs(1)
    worker = rig.start("--drain", env={"AMPHIGORY_TEST_HB_FREEZE": str(clip.job_id)})
    rig.wait_marker(f"transcode.{clip.job_id}", worker)
    tool = next(e["pid"] for e in rig.hb_events() if e["event"] == "start")
    os.killpg(tool, signal.SIGTERM)
    os.killpg(tool, signal.SIGCONT)
    assert worker.wait(60) == 0
    rig.check_completed(clip)
    assert [a.outcome for a in rig.store.jobs.attempts(clip.job_id)] == ["retry", "completed"]
    rig.check_clean()
