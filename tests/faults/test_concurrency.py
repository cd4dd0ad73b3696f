"""Several worker processes on one database; a job that kills its worker every time."""

from __future__ import annotations

import signal
from collections import Counter

from amphigory_tui.domain.jobs import JobStatus
from tests.faults.harness import Rig


def test_two_worker_processes_never_run_the_same_job(make_rig: type[Rig]) -> None:
    """Two `amphigory worker --drain` processes with 2 loops each drain 8 jobs: each encoded exactly once."""
    rig = make_rig(workers=2)
    clips = rig.add_jobs(8)
    a, b = rig.start("--drain", tag="A"), rig.start("--drain", tag="B")
    assert a.wait(120) == 0 and b.wait(120) == 0
    for clip in clips:
        rig.check_completed(clip)
    assert rig.starts() == Counter({clip.job_id: 1 for clip in clips})
    assert rig.finished_encodes() == Counter({clip.job_id: 1 for clip in clips})
    rig.check_clean()


def test_a_job_that_crashes_its_worker_every_time_fails_after_max_retries(make_rig: type[Rig]) -> None:
    """The poison job kills its worker on every attempt; restarted each time (like systemd), the worker fails it
    after max_retries ("abandoned after restart") and completes the others."""
    rig = make_rig(max_retries=3)
    poison, *others = rig.add_jobs(3)
    env = {"AMPHIGORY_TEST_POISON_JOB": str(poison.job_id)}
    crashes = 0
    while True:
        worker = rig.start("--drain", env=env)
        code = worker.wait(90)
        if code == 0:
            break
        assert code == -signal.SIGKILL, worker.output()
        crashes += 1
        assert crashes <= 3, "the poison job was retried past max_retries"
    assert crashes == 3
    job = rig.job(poison.job_id)
    assert (job.status, job.attempts, job.error_message) == (
        JobStatus.FAILED,
        3,
        "abandoned after restart (max retries exceeded)",
    )
    assert rig.check_library_path(poison) == "original"
    for clip in others:
        rig.check_completed(clip)
    rig.check_clean()
