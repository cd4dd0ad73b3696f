"""Draining a queue with the real HandBrakeCLI: outputs valid, originals per policy, nothing left behind."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from amphigory_tui.domain.events import JobChanged
from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.pool import ListSink, WorkerPool
from amphigory_tui.services.ffprobe import ffprobe
from amphigory_tui.services.probe import probe_file
from amphigory_tui.services.rules import decide
from amphigory_tui.store import MediaRecord, Store
from tests.pool.conftest import Clips, Env, leftovers, run_drain


def _queue_via_library(env: Env, store: Store, files: list[tuple[Path, str]]) -> dict[str, Path]:
    """Copy clips into the library, record them as scanned (probe + rules), and queue them like `a` does."""
    settings = env.settings()
    records = []
    paths: dict[str, Path] = {}
    for clip, name in files:
        path = env.lib / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(clip.read_bytes())
        st = path.stat()
        probe = probe_file(str(path))
        decision = decide(str(path), st.st_size, probe, settings.rules)
        assert decision.should_transcode, decision.reason
        records.append(MediaRecord(str(path), str(env.lib), st.st_size, st.st_mtime_ns, probe, decision))
        paths[name] = path
    store.media.upsert(records)
    assert store.jobs.queue_for_transcoding() == len(files)
    return paths


@pytest.mark.anyio
@pytest.mark.parametrize("policy", ["keep", "backup", "delete"])
async def test_drain_six_jobs_with_two_workers(env: Env, clips: Clips, sink: ListSink, policy: str) -> None:
    """Six jobs, two workers: all completed, outputs valid, each original kept/backed up/deleted per policy."""
    settings = env.settings(workers={"count": 2}, transcode={"original_policy": policy})
    store = env.store(settings)
    files = [
        (clips.plain, "Movie One.mp4"),
        (clips.plain, "Movie Two.mp4"),
        (clips.plain, "Show/S01E01.mp4"),
        (clips.two_audio, "Two Audio.mkv"),
        (clips.two_audio, "Show/S01E02.mkv"),
        (clips.plain, "Show/Extras/clip.m4v"),
    ]
    paths = _queue_via_library(env, store, files)
    originals = {name: path.read_bytes() for name, path in paths.items()}

    pool = WorkerPool(store, settings, sink, drain=True)
    await run_drain(pool)

    assert pool.drained
    jobs = store.jobs.list_jobs()
    assert [j.status for j in jobs] == [JobStatus.COMPLETED] * 6, [(j.input_path, j.error_message) for j in jobs]
    for job in jobs:
        source = Path(job.input_path)
        name = str(source.relative_to(env.lib))
        target = source.with_suffix(".mkv")
        assert job.output_path == str(target)
        assert job.attempts == 1
        assert job.output_size == target.stat().st_size > 0
        assert job.encode_time_s is not None and job.encode_time_s > 0
        assert job.avg_fps is not None and job.avg_fps > 0
        assert job.duration_s is not None and abs(job.duration_s - 2.0) < 0.2
        probe = await ffprobe(target)
        assert probe.error is None and probe.video_codec == "h264"
        assert len(probe.audio) == (2 if "Audio" in name or "E02" in name else 1)
        assert probe.duration_s is not None and abs(probe.duration_s - 2.0) < 0.2
        # The library row now describes the new file.
        media = store.media.get(job.media_file_id or -1)
        assert media is not None and media.path == str(target) and not media.should_transcode
        assert media.reason == "transcoded to h264" and media.size_bytes == target.stat().st_size
        same_name = target == source
        kept = Path(str(source) + ".original")
        backup = env.backup / str(source).lstrip("/")
        if policy == "keep":
            assert kept.read_bytes() == originals[name]
            assert not backup.exists()
        elif policy == "backup":
            assert backup.read_bytes() == originals[name]
            assert not kept.exists()
        else:
            assert not kept.exists() and not backup.exists()
        if not same_name:
            assert not source.exists()
    assert leftovers(env) == []
    assert store.workers.list_workers() == []
    completed = {e.job_id for e in sink.of_type(JobChanged) if e.status is JobStatus.COMPLETED}
    assert completed == {j.id for j in jobs}
    messages = [r.message for _i, r in store.log.tail(limit=1000)]
    assert sum(m.startswith("completed") for m in messages) == 6


@pytest.mark.anyio
async def test_hostile_names_have_no_shell_effect(
    env: Env, clips: Clips, sink: ListSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names with $(…), quotes, a newline and a leading dash are transcoded; nothing is ever executed."""
    monkeypatch.chdir(env.root)
    settings = env.settings(workers={"count": 2})
    store = env.store(settings)
    names = ['$(touch pwned) it\'s "quoted" `touch pwned2`.mp4', "-i danger.mp4", "new\nline;rm -rf x.mp4"]
    added = [env.add(clips.plain, name, store) for name in names]
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    for path, job in added:
        done = store.jobs.get(job.id)
        assert done.status is JobStatus.COMPLETED, done.error_message
        assert Path(done.output_path or "").is_file()
        assert Path(str(path) + ".original").read_bytes() == clips.plain.read_bytes()
    for where in (env.root, env.lib, Path.cwd(), Path("/tmp")):
        assert not (where / "pwned").exists() and not (where / "pwned2").exists()
    assert leftovers(env) == []


@pytest.mark.anyio
async def test_larger_output_is_skipped_and_original_untouched(env: Env, clips: Clips, sink: ListSink) -> None:
    """require_smaller: an output bigger than the source → skipped with the reason; nothing replaced."""
    settings = env.settings(
        transcode={"extra_args": ["-e", "x264", "--encoder-preset", "ultrafast", "-q", "12", "-w", "320", "-l", "180"]}
    )
    store = env.store(settings)
    path, job = env.add(clips.low_bitrate, "tiny.mkv", store)
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.SKIPPED
    assert done.error_message is not None and "is not smaller than tiny.mkv" in done.error_message
    assert done.attempts == 1
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in env.lib.iterdir()) == ["tiny.mkv"]
    assert leftovers(env) == []


@pytest.mark.anyio
async def test_corrupt_input_fails_permanently_without_retries(env: Env, sink: ListSink) -> None:
    """A file that is not video: failed at once (no retry used), one clear sentence naming the file."""
    settings = env.settings()
    store = env.store(settings)
    broken = env.lib / "broken.mkv"
    broken.write_bytes(random.Random(7).randbytes(200_000))
    job = store.jobs.create(str(broken))
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.FAILED
    assert done.attempts == 1
    assert done.error_message is not None and done.error_message.startswith(f"cannot decode {broken}")
    assert "\n" not in done.error_message
    assert [a.outcome for a in store.jobs.attempts(job.id)] == ["failed"]
    assert broken.read_bytes() == random.Random(7).randbytes(200_000)
    assert leftovers(env) == []


@pytest.mark.anyio
async def test_missing_handbrake_is_one_clear_message(env: Env, clips: Clips, sink: ListSink) -> None:
    """tools.handbrake pointing nowhere: the job says HandBrakeCLI was not found (and may retry once installed)."""
    settings = env.settings(tools={"handbrake": "/nonexistent/HandBrakeCLI"}, jobs={"max_retries": 1})
    store = env.store(settings)
    path, job = env.add(clips.plain, "a.mp4", store)
    await run_drain(WorkerPool(store, settings, sink, drain=True))
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error_message is not None and done.error_message.startswith("HandBrakeCLI not found")
    assert done.stage is None  # refused before anything was copied
    assert path.read_bytes() == clips.plain.read_bytes()
    assert leftovers(env) == []


def test_worker_command_drains_and_exits_zero(env: Env, clips: Clips) -> None:
    """`amphigory worker --drain --workers 2` (a real process) completes the queue and exits 0."""
    settings = env.settings()
    store = env.store(settings)
    jobs = [env.add(clips.plain, f"cli{i}.mp4", store)[1] for i in range(2)]
    config = env.root / "config.toml"
    extra = ", ".join(f'"{a}"' for a in settings.transcode.extra_args)
    config.write_text(
        f'[database]\nurl = "{env.db_url}"\n[paths]\nwork_dir = "{env.work}"\n'
        f"[workers]\nheartbeat_interval_s = 1\npoll_interval_s = 0.1\n[transcode]\nextra_args = [{extra}]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "amphigory_tui", "--config", str(config), "worker", "--drain", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == 0, proc.stderr
    assert "worker stopped (queue drained)" in proc.stderr
    assert all(store.jobs.get(j.id).status is JobStatus.COMPLETED for j in jobs)
    assert leftovers(env) == []


@pytest.mark.anyio
async def test_drain_with_nothing_queued_returns_at_once(env: Env, sink: ListSink) -> None:
    """An empty queue: drain mode ends immediately and unregisters its workers."""
    settings = env.settings(workers={"count": 3})
    store = env.store(settings)
    pool = WorkerPool(store, settings, sink, drain=True)
    with anyio.fail_after(10):
        await pool.run()
    assert pool.drained and store.workers.list_workers() == []
