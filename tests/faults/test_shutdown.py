"""Stopping amphigory worker: SIGTERM/SIGINT/SIGHUP pause running jobs (no attempt used) and exit 0 promptly."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from amphigory_tui import paths
from amphigory_tui.domain.jobs import JobStatus, PauseReason, Stage
from amphigory_tui.services.proc import process_start_ticks
from tests.faults.harness import Rig, wait_until
from tests.lifecycle.conftest import Holder


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_during_startup_recovery_exits_cleanly(make_rig: type[Rig], sig: int) -> None:
    """The signal arrives while startup recovery is ending a dead worker's leftover encoder: the recovery step
    finishes, the worker exits 0 without a traceback and claims nothing; the orphan is consistently requeued."""
    rig = make_rig(kill_grace_s=3.0)
    (clip,) = rig.add_jobs(1)
    dead = Holder(paths.lock_dir())
    dead.kill()
    claimed = rig.store.jobs.claim(dead.worker_id())
    assert claimed is not None and claimed.id == clip.job_id
    # A leftover "encoder" that outlives the polite signal: it says when recovery signalled it, and exits once the
    # test has signalled the worker (recovery is then still waiting out its grace period for it).
    term_seen, go = rig.markers / "leftover-term", rig.markers / "go"
    code = textwrap.dedent(
        f"""
        import os, signal, time
        def on_term(*_):
            open({str(term_seen)!r}, "w").close()
        signal.signal(signal.SIGTERM, on_term)
        deadline = time.monotonic() + 60
        while not os.path.exists({str(go)!r}) and time.monotonic() < deadline:
            time.sleep(0.02)
        """
    )
    leftover = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        ticks = process_start_ticks(leftover.pid)
        assert ticks is not None
        rig.store.jobs.update_running(clip.job_id, dead.worker_id(), child_pid=leftover.pid, child_start_ticks=ticks)
        worker = rig.start()
        wait_until(term_seen.exists, 30, lambda: f"recovery never signalled the leftover; log:\n{worker.output()}")
        worker.signal(sig)
        go.touch()
        exit_code = worker.wait(20)
        output = worker.output()
        assert exit_code == 0, output
        assert "Traceback" not in output, output
        assert f"{signal.Signals(sig).name} received during startup: exiting without claiming jobs" in output
        assert leftover.wait(10) is not None
        job = rig.job(clip.job_id)
        assert (job.status, job.attempts, job.worker_id, job.child_pid) == (JobStatus.QUEUED, 1, None, None)
        assert rig.starts()[clip.job_id] == 0, "a worker told to stop during startup claims nothing"
        assert not [p for p in paths.lock_dir().iterdir() if f":{worker.pid}:" in p.name], "its lock was released"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leftover.pid, signal.SIGKILL)
        leftover.wait()
        dead.cleanup()
    rig.drain()
    rig.check_completed(clip)


def test_usr1_and_usr2_resize_a_running_worker(make_rig: type[Rig]) -> None:
    """`kill -USR1` adds a claim loop (a new row in the workers table), `kill -USR2` removes one; the worker goes on
    and still stops cleanly on SIGTERM."""
    rig = make_rig()
    worker = rig.start()

    def loops() -> int:
        return sum(1 for w in rig.store.workers.list_workers() if w.pid == worker.pid)

    wait_until(lambda: loops() == 1, 30, lambda: f"1 loop registered; log:\n{worker.output()}")
    worker.signal(signal.SIGUSR1)
    wait_until(lambda: loops() == 2, 30, lambda: f"2 loops after SIGUSR1; log:\n{worker.output()}")
    # One at a time: two identical signals sent together may arrive as one (Unix signals do not queue).
    for left in (1, 0):
        worker.signal(signal.SIGUSR2)
        wait_until(lambda n=left: loops() == n, 30, lambda n=left: f"{n} loops after SIGUSR2: {worker.output()}")
    assert worker.alive()
    worker.signal(signal.SIGUSR1)
    wait_until(lambda: loops() == 1, 30, lambda: f"back to 1 loop; log:\n{worker.output()}")
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    assert "SIGUSR1 received: 2 worker loops now" in worker.output()


def test_a_worker_with_watch_on_records_a_file_copied_into_the_library(make_rig: type[Rig]) -> None:
    """`[scanner] watch = true`: `amphigory worker` catches up, then probes a file that lands in the library."""
    rig = make_rig(watch=True)
    (existing,) = rig.add_jobs(1)
    worker = rig.start()
    wait_until(lambda: rig.store.media.get_by_path(str(existing.path)) is not None, 60, worker.output)
    new = rig.library / "arrived later.mkv"
    shutil.copyfile(existing.path, rig.root / "staging.mkv")
    os.replace(rig.root / "staging.mkv", new)
    wait_until(lambda: rig.store.media.get_by_path(str(new)) is not None, 60, worker.output)
    row = rig.store.media.get_by_path(str(new))
    assert row is not None and row.probe_error is None and row.probe is not None and row.probe.video_codec == "h264"
    worker.signal(signal.SIGTERM)
    assert worker.wait(10) == 0
