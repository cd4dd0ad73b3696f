"""kill -STOP of a worker: another worker takes its job after stall_timeout; once continued it changes nothing."""

from __future__ import annotations

import os
import signal
import time

from amphigory_tui.domain.jobs import JobStatus
from tests.faults.harness import Rig, wait_until


def test_a_frozen_worker_loses_its_job_and_cannot_finish_it_after(make_rig: type[Rig]) -> None:
    """Worker A is SIGSTOPped mid-encode; B requeues the job through fail() with A's id and completes it; after
    SIGCONT, A's stale updates are refused: the job completes once, the original is kept once, A encodes no more."""
    rig = make_rig(stall_timeout_s=3)
    (clip,) = rig.add_jobs(1)
    a = rig.start(tag="A", env={"AMPHIGORY_TEST_HB_FREEZE": f"{clip.job_id},A"})
    rig.wait_marker(f"transcode.{clip.job_id}", a)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        owner_a = rig.job(clip.job_id).worker_id
        b = rig.start(tag="B")
        wait_until(
            lambda: rig.job(clip.job_id).status is JobStatus.COMPLETED,
            60,
            lambda: f"B never completed the job; B's log:\n{b.output()}",
        )
        done = rig.job(clip.job_id)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # A runs again: give it time to notice (heartbeat every second, then its failure path), then stop both.
    wait_until(lambda: "another worker owns the job now" in a.output(), 20, lambda: f"A's log:\n{a.output()}")
    time.sleep(1.0)
    for worker in (a, b):
        worker.signal(signal.SIGTERM)
    assert a.wait(10) == 0 and b.wait(10) == 0

    assert rig.job(clip.job_id) == done, "A's stale updates changed the job"
    attempts = rig.store.jobs.attempts(clip.job_id)
    assert [(x.worker_id == owner_a, x.outcome) for x in attempts] == [(True, "retry"), (False, "completed")]
    assert attempts[0].error is not None and attempts[0].error.startswith("stalled: no heartbeat")
    rig.check_completed(clip)
    by_worker = {tag: sum(1 for e in rig.hb_events() if e["event"] == "start" and e["tag"] == tag) for tag in "AB"}
    assert by_worker == {"A": 1, "B": 1}
    rig.check_clean()
