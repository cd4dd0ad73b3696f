"""Failures with real tools: retries with attempts recorded, a full disk, an exit-0 truncation, a changed source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from amphigory_tui.cli import main
from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.pool import ListSink, WorkerPool
from tests.pool.conftest import HANDBRAKE, Clips, Env, child_pid, leftovers, make_script, run_drain, run_until


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount tiny tmpfs file systems (we run as root here; `mount -t tmpfs` was checked to work)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.anyio
async def test_encoder_failing_twice_then_succeeding_completes_on_attempt_three(
    env: Env, clips: Clips, sink: ListSink
) -> None:
    """A stand-in HandBrakeCLI crashes (SIGSEGV) twice, then runs the real one: completed, 3 attempts recorded."""
    counter = env.root / "calls"
    script = make_script(
        env.root / "flaky-handbrake",
        f"""
        import os, signal, sys
        path = {str(counter)!r}
        n = int(open(path).read()) if os.path.exists(path) else 0
        open(path, "w").write(str(n + 1))
        if n < 2:
            sys.stderr.write("simulated encoder crash\\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGSEGV)
        os.execv({HANDBRAKE!r}, ["HandBrakeCLI", *sys.argv[1:]])
        """,
    )
    settings = env.settings(tools={"handbrake": str(script)})
    store = env.store(settings)
    path, job = env.add(clips.plain, "flaky.mp4", store)
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.attempts == 3
    attempts = store.jobs.attempts(job.id)
    assert [a.outcome for a in attempts] == ["retry", "retry", "completed"]
    for failed in attempts[:2]:
        assert failed.error is not None and "HandBrakeCLI crashed (signal 11, SIGSEGV)" in failed.error
        assert str(path) in failed.error
    assert counter.read_text() == "3"
    assert Path(done.output_path or "").is_file()
    # Each failed attempt's stderr tail went to the processing log once, with its retry line; the success's once.
    logged = [r.message for _i, r in store.log.tail(job_id=job.id, limit=100)]
    crashes = [m for m in logged if "simulated encoder crash" in m]
    assert len(crashes) == 2, logged
    assert all(m.startswith("attempt ") and m.endswith("\nsimulated encoder crash") for m in crashes), crashes
    assert len([m for m in logged if m.startswith("flaky-handbrake exited with code 0;")]) == 1, logged
    assert leftovers(env) == []


@pytest.mark.anyio
async def test_stderr_tails_reach_the_log_at_info_and_a_failure_carries_its_tail(
    env: Env, clips: Clips, sink: ListSink
) -> None:
    """Success and failure alike, HandBrakeCLI's last stderr lines are in the processing log exactly once: after a
    success as one ``info`` line (the default level keeps it), after a failure inside the logged error, which is the
    one-line reason, then that tail."""
    settings = env.settings()
    assert settings.logging.level == "info"
    store = env.store(settings)
    _good_path, good = env.add(clips.plain, "good.mp4", store)
    _bad_path, bad = env.add(clips.plain, "bad.mp4", store, preset="No Such Preset")
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    assert store.jobs.get(good.id).status is JobStatus.COMPLETED

    good_log = [r for _i, r in store.log.tail(job_id=good.id, limit=100)]
    tails = [r for r in good_log if r.message.startswith("HandBrakeCLI exited with code ")]
    assert [r.level for r in tails] == ["info"], [r.message for r in good_log]
    assert tails[0].message.startswith("HandBrakeCLI exited with code 0;")
    assert len(tails[0].message.splitlines()) > 2

    failed = store.jobs.get(bad.id)
    assert failed.status is JobStatus.FAILED and failed.error_message is not None
    reason, heading, *tail = failed.error_message.split("\n")
    assert reason == (
        "HandBrakeCLI does not know the preset 'No Such Preset' (see HandBrakeCLI --preset-list) "
        "(HandBrakeCLI: Invalid preset No Such Preset)"
    )
    assert heading == f"HandBrakeCLI stderr, last {len(tail)} lines:"
    assert 0 < len(tail) <= 50 and all(line.strip() for line in tail)
    bad_log = [r for _i, r in store.log.tail(job_id=bad.id, limit=100)]
    assert not [r for r in bad_log if r.message.startswith("HandBrakeCLI exited")], "no tail line of its own"
    # Exactly one copy of the tail: the pool's "failed" line, which is the error itself.
    carrying = [r for r in bad_log if "\n".join(tail) in r.message]
    assert [(r.level, r.message) for r in carrying] == [("error", f"failed (permanent error): {failed.error_message}")]
    assert [a.error for a in store.jobs.attempts(bad.id)] == [failed.error_message]

    # `amphigory jobs` keeps one row per job: the reason only (the full error is in `--json`).
    config = env.root / "config.toml"
    config.write_text(f'[database]\nurl = "{env.db_url}"\n[paths]\nwork_dir = "{env.work}"\n', encoding="utf-8")
    listed = CliRunner().invoke(main, ["--config", str(config), "jobs"])
    assert listed.exit_code == 0, listed.output
    rows = listed.output.splitlines()
    assert len(rows) == 2, rows
    assert next(row for row in rows if "bad.mp4" in row).endswith(f"({reason})"), rows
    as_json = CliRunner().invoke(main, ["--config", str(config), "jobs", "--json"])
    assert failed.error_message in [j["error_message"] for j in json.loads(as_json.output)]


@pytest.mark.anyio
async def test_full_work_disk_is_refused_before_copying_and_retried(
    env: Env, clips: Clips, sink: ListSink, tmpfs: Callable[[str], Path]
) -> None:
    """Free space < source × factor on a 256 KiB tmpfs work dir: a clear message, the job waits for a retry."""
    work = tmpfs("256k")
    settings = env.settings(paths={"work_dir": str(work)}, jobs={"retry_delay_s": 3600})
    store = env.store(settings)
    path, job = env.add(clips.plain, "big.mp4", store)
    pool = WorkerPool(store, settings, sink)
    await run_until(pool, lambda: store.jobs.get(job.id).error_message is not None)
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.QUEUED and done.next_attempt_at is not None
    assert done.error_message is not None
    assert done.error_message.startswith(f"not enough free space in {work} for {path}:")
    assert "needed (2× its size)" in done.error_message
    assert [a.outcome for a in store.jobs.attempts(job.id)] == ["retry"]
    assert list(work.iterdir()) == []
    assert path.read_bytes() == clips.plain.read_bytes()


@pytest.mark.anyio
async def test_disk_full_mid_encode_is_caught_although_handbrake_exits_zero(
    env: Env, clips: Clips, sink: ListSink, tmpfs: Callable[[str], Path]
) -> None:
    """HandBrakeCLI fills a 200 KiB tmpfs and exits 0 with a cut file: caught, 'disk full', retried later."""
    work = tmpfs("200k")
    big_output = ["-e", "x264", "--encoder-preset", "ultrafast", "-q", "0", "-w", "320", "-l", "180"]
    settings = env.settings(
        paths={"work_dir": str(work)},
        jobs={"retry_delay_s": 3600},
        transcode={"extra_args": big_output, "free_space_factor": 1.0, "require_smaller": False},
    )
    store = env.store(settings)
    path, job = env.add(clips.low_bitrate, "full.mp4", store)
    pool = WorkerPool(store, settings, sink)
    await run_until(pool, lambda: store.jobs.get(job.id).error_message is not None)
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.QUEUED
    assert done.error_message is not None and done.error_message.startswith(f"disk full while encoding {path}")
    assert "cut short" in done.error_message
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in env.lib.iterdir()) == ["full.mp4"]


@pytest.mark.anyio
async def test_truncated_output_with_exit_zero_is_rejected_then_failed_permanently(
    env: Env, clips: Clips, sink: ListSink
) -> None:
    """HandBrakeCLI with --stop-at exits 0 after 1 s of a 6 s clip: validation rejects it (both durations named);
    the identical failure on the next attempt makes it permanent."""
    script = make_script(
        env.root / "short-handbrake",
        f"""
        import os, sys
        os.execv({HANDBRAKE!r}, ["HandBrakeCLI", *sys.argv[1:], "--stop-at", "seconds:1"])
        """,
    )
    settings = env.settings(tools={"handbrake": str(script)})
    store = env.store(settings)
    path, job = env.add(clips.long, "cut.mp4", store)
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.FAILED
    assert done.attempts == 2
    first, second = store.jobs.attempts(job.id)
    assert first.outcome == "retry" and second.outcome == "failed"
    assert first.error is not None and first.error.startswith("validation failed for cut.mp4: the output lasts 1.")
    assert "s, the source 6." in first.error
    assert done.error_message == first.error + " (the same as the previous attempt)"
    assert path.read_bytes() == clips.long.read_bytes()
    assert sorted(p.name for p in env.lib.iterdir()) == ["cut.mp4"]
    assert leftovers(env) == []


@pytest.mark.anyio
async def test_source_changed_during_the_job_is_not_replaced(env: Env, clips: Clips, sink: ListSink) -> None:
    """The original is modified while HandBrakeCLI runs: nothing is replaced, a clear error, the new bytes stay."""
    settings = env.settings(jobs={"max_retries": 1})
    store = env.store(settings)
    path, job = env.add(clips.plain, "growing.mp4", store)

    def modify_source() -> None:
        pid = store.jobs.get(job.id).child_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        with open(path, "ab") as fh:
            fh.write(b"appended while the job ran")
        os.kill(pid, signal.SIGCONT)

    pool = WorkerPool(store, settings, sink)
    await run_until(
        pool,
        child_pid(store, job.id),
        action=modify_source,
        then=lambda: store.jobs.get(job.id).status is JobStatus.FAILED,
    )
    done = store.jobs.get(job.id)
    assert done.error_message is not None
    assert done.error_message.startswith(f"the source {path} changed during the job")
    assert path.read_bytes() == clips.plain.read_bytes() + b"appended while the job ran"
    assert sorted(p.name for p in env.lib.iterdir()) == ["growing.mp4"]
    assert leftovers(env) == []


@pytest.mark.anyio
async def test_a_worker_whose_job_was_taken_over_leaves_the_library_alone(
    env: Env, clips: Clips, sink: ListSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another machine takes the job over (its owner looked dead) just before the swap: this worker's encode is
    discarded, the original stays byte-identical, and the job stays with the new owner."""
    from amphigory_tui.services import pipeline

    settings = env.settings()
    store = env.store(settings)
    other = env.store(settings)
    path, job = env.add(clips.plain, "taken.mp4", store)
    real_place = pipeline.place
    taker: list[str] = []

    def taken_over_then_place(*args: object, **kwargs: object) -> object:
        # What a second machine does once this worker's heartbeat is older than stall_timeout.
        assert other.jobs.recover_orphaned(lambda _owner: False) == (1, 0)
        again = other.jobs.claim("elsewhere:1:feedface")
        assert again is not None and again.id == job.id
        taker.append(again.worker_id or "")
        return real_place(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "place", taken_over_then_place)
    pool = WorkerPool(store, settings, sink)
    await run_until(pool, lambda: bool(taker) and not any(s.job_id == job.id for s in pool.snapshot()))
    now = store.jobs.get(job.id)
    assert (now.status, now.worker_id) == (JobStatus.RUNNING, "elsewhere:1:feedface")
    assert path.read_bytes() == clips.plain.read_bytes()
    assert sorted(p.name for p in env.lib.iterdir()) == ["taken.mp4"]
