"""kill -9 of the worker at every step of a job: after a restart every job completes, nothing is lost or damaged."""

from __future__ import annotations

import pytest

from amphigory_tui.domain.jobs import JobStatus
from tests.faults.harness import Rig

# Kill points in the order a job meets them; "transcode" freezes the real HandBrakeCLI after its first progress.
POINTS = ["download", "transcode", "validate", "upload.placing", "upload.swap", "upload.placed", "finalize"]


@pytest.mark.parametrize("point", POINTS)
def test_kill9_at_each_step_then_restart_completes(make_rig: type[Rig], point: str) -> None:
    """The library path always holds the complete original or the complete new file; the restart finishes the job."""
    rig = make_rig()
    victim, bystander = rig.add_jobs(2)
    if point == "transcode":
        env = {"AMPHIGORY_TEST_HB_FREEZE": str(victim.job_id)}
    else:
        env = {"AMPHIGORY_TEST_PAUSE_AT": f"{point}@{victim.job_id}"}
    worker = rig.start(env=env)
    rig.wait_marker(f"{point}.{victim.job_id}", worker)
    worker.kill9()

    # The crash instant: never neither, never a partial.
    state = rig.check_library_path(victim)
    assert state == ("new" if point in ("upload.placed", "finalize") else "original")
    crashed = rig.job(victim.job_id)
    assert crashed.status is (JobStatus.COMPLETED if point == "finalize" else JobStatus.RUNNING)

    rig.drain()
    for clip in (victim, bystander):
        rig.check_completed(clip)
    rig.check_clean()
    finished_by_recovery = point in ("upload.placed", "finalize")
    # A replace that was already in the library is finished by recovery, not encoded again; any other crash
    # used its attempt (counted at claim) and the job ran again from the start.
    assert rig.job(victim.job_id).attempts == (1 if finished_by_recovery else 2)
    encodes = 1 if finished_by_recovery or point == "download" else 2
    assert rig.starts()[victim.job_id] == encodes
    assert rig.starts()[bystander.job_id] == 1
