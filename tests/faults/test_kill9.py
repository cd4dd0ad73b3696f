"""kill -9 of the worker at every step of a job: after a restart every job completes, nothing is lost or damaged."""

from __future__ import annotations

from pathlib import Path

import pytest

from amphigory_tui.domain.jobs import JobStatus
from tests.faults.harness import Rig, sha256

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


@pytest.mark.parametrize(("policy", "ext"), [("delete", "mkv"), ("backup", "mkv"), ("keep", "mp4"), ("delete", "mp4")])
def test_kill9_mid_swap_with_every_policy_and_a_renamed_output(make_rig: type[Rig], policy: str, ext: str) -> None:
    """Killed between the two steps of the swap: the original is complete at its path or the new file at its own,
    and after the restart the original policy is applied exactly once (kept, backed up or deleted)."""
    rig = make_rig(policy=policy)
    (clip,) = rig.add_jobs(1, ext=ext)
    target = clip.path.with_suffix(".mkv")
    worker = rig.start(env={"AMPHIGORY_TEST_PAUSE_AT": f"upload.swap@{clip.job_id}"})
    rig.wait_marker(f"upload.swap.{clip.job_id}", worker)
    worker.kill9()
    at_crash = (rig.library_state(clip), rig.library_state(clip, target))
    if ext == "mkv":
        assert at_crash == ("original", "original"), "same name: the original is in place until the rename"
    else:
        assert at_crash == ("original", "new"), "new name: both names present beats neither"

    rig.drain()
    job = rig.job(clip.job_id)
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert rig.library_state(clip, target) == "new"
    kept = Path(str(clip.path) + ".original")
    backup = rig.backup / str(clip.path).lstrip("/")
    if ext != "mkv":
        assert not clip.path.exists(), "the original left its old name only after the new file was in place"
    assert kept.exists() == (policy == "keep")
    assert backup.exists() == (policy == "backup")
    for copy in (kept, backup):
        if copy.exists():
            assert sha256(copy) == clip.sha256
    assert [a.outcome for a in rig.store.jobs.attempts(job.id)].count("completed") == 1
    rig.check_clean()


@pytest.mark.parametrize("point", ["upload.placed", "finalize"])
def test_a_replace_finished_by_recovery_leaves_a_true_library_row_and_the_encode_facts(
    make_rig: type[Rig], point: str
) -> None:
    """Killed once the new file is in the library (before or after ``complete``): after the restart the library row
    describes the new file (re-probed), and the job has its duration, encode time and average fps."""
    rig = make_rig()
    (clip,) = rig.add_jobs(1, media=True)
    media_id = rig.job(clip.job_id).media_file_id
    assert media_id is not None
    worker = rig.start(env={"AMPHIGORY_TEST_PAUSE_AT": f"{point}@{clip.job_id}"})
    rig.wait_marker(f"{point}.{clip.job_id}", worker)
    worker.kill9()
    assert rig.library_state(clip) == "new"
    stale = rig.store.media.get(media_id)
    assert stale is not None and stale.should_transcode, "the crash came before the row was re-probed"

    rig.drain()
    rig.check_completed(clip)
    rig.check_clean()
    assert rig.starts()[clip.job_id] == 1, "finished by recovery, not encoded again"
    st = clip.path.stat()
    row = rig.store.media.get(media_id)
    assert row is not None
    assert (row.path, row.size_bytes, row.mtime_ns) == (str(clip.path), st.st_size, st.st_mtime_ns)
    assert (row.should_transcode, row.reason, row.probe.video_codec) == (False, "transcoded to h264", "h264")
    assert row.probe.duration_s is not None and abs(row.probe.duration_s - clip.duration_s) <= 1.0
    job = rig.job(clip.job_id)
    assert job.output_size == st.st_size
    assert job.duration_s is not None and abs(job.duration_s - clip.duration_s) <= 1.0
    assert job.encode_time_s is not None and job.encode_time_s > 0
    assert job.avg_fps is not None and job.avg_fps > 0
