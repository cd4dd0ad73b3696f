"""PyAV probing and the probe pool on real generated media: facts, errors, truncation, decisions, isolation."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from amphigory_tui.config import RulesSettings, ScannerSettings
from amphigory_tui.domain.errors import AmphigoryError
from amphigory_tui.services.probe import (
    CRASH_MARKER,
    FAULTS_ENV,
    HANG_MARKER,
    ProbePool,
    container_truncation,
    probe_file,
)
from amphigory_tui.services.rules import decide, estimate_savings_pct, priority
from tests.media import FFMPEG, make_clip, make_truncated

RULES = RulesSettings()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small library: the codecs and containers of a real one, plus every kind of broken file."""
    d = tmp_path_factory.mktemp("library")
    make_clip(d / "h264_1080.mkv", seconds=1, width=1920, height=1080, bitrate="6M", audio_languages=("eng", "fra"))
    make_clip(d / "dvd.mpg", seconds=1, width=720, height=480, vcodec="mpeg2video", acodec="mp2", bitrate="5M")
    make_clip(d / "hevc.mkv", seconds=1, vcodec="libx265")
    make_clip(d / "legacy.avi", seconds=1, vcodec="mpeg4", acodec="libmp3lame", bitrate="1M")
    make_clip(d / "scope.mkv", seconds=1, width=1920, height=800, bitrate="6M")
    make_clip(d / "ten_bit.mkv", seconds=1, vcodec="libx265", extra=["-pix_fmt", "yuv420p10le"])
    make_clip(d / "clip.mp4", seconds=2)
    long = make_clip(d / "long.mkv", seconds=4)
    make_truncated(long, d / "truncated.mkv")
    make_truncated(d / "clip.mp4", d / "truncated.mp4")
    make_truncated(d / "legacy.avi", d / "truncated.avi")
    shutil.copy(d / "h264_1080.mkv", d / "Movie-SAMPLE.mkv")
    (d / "empty.mkv").write_bytes(b"")
    (d / "not_a_video.mkv").write_text("this is not a video\n" * 20, encoding="utf-8")
    srt = d / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n", encoding="utf-8")
    argv = [FFMPEG, "-nostdin", "-v", "error", "-y", "-i", f"file:{d / 'hevc.mkv'}", "-i", f"file:{srt}"]
    argv += ["-f", "lavfi", "-i", "sine=duration=1", "-map", "0", "-map", "2", "-map", "1"]
    argv += ["-c:v", "copy", "-c:a", "ac3", "-c:s", "srt", "-ac:a:1", "6"]
    argv += ["-metadata:s:a:1", "title=Commentary", "-metadata:s:a:1", "language=fra"]
    argv += ["-disposition:a:0", "default", "-disposition:a:1", "forced"]
    argv += ["-metadata:s:s:0", "language=eng", "-disposition:s:0", "default+forced", f"file:{d / 'subs.mkv'}"]
    subprocess.run(argv, check=True, capture_output=True)
    audio = [FFMPEG, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"]
    subprocess.run([*audio, f"file:{d / 'audio_only.mkv'}"], check=True, capture_output=True)
    # Written to a pipe, Matroska has no segment size, but the duration is copied from the source.
    piped = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "error", "-i", f"file:{long}", "-c", "copy", "-f", "matroska", "pipe:1"],
        check=True,
        capture_output=True,
    ).stdout
    (d / "streamed.mkv").write_bytes(piped)
    (d / "streamed_truncated.mkv").write_bytes(piped[: len(piped) // 2])
    return d


# ------------------------------------------------------------------------------------------------ facts


def test_h264_1080p_facts(media: Path) -> None:
    probe = probe_file(str(media / "h264_1080.mkv"))
    assert probe.ok, probe.error
    assert (probe.container, probe.video_codec, probe.width, probe.height) == ("matroska", "h264", 1920, 1080)
    assert (probe.fps, probe.pix_fmt, probe.bit_depth) == (24.0, "yuv420p", 8)
    assert probe.duration_s is not None and abs(probe.duration_s - 1.0) < 0.1
    assert probe.bitrate_kbps is not None and 4000 < probe.bitrate_kbps < 9000
    assert [(a.codec, a.language, a.channels, a.channel_layout) for a in probe.audio] == [
        ("aac", "eng", 2, "stereo"),
        ("aac", "fra", 2, "stereo"),
    ]
    assert probe.subtitles == ()


def test_mpeg2_program_stream_facts(media: Path) -> None:
    probe = probe_file(str(media / "dvd.mpg"))
    assert probe.ok, probe.error
    assert (probe.container, probe.video_codec, probe.width, probe.height) == ("mpeg", "mpeg2video", 720, 480)
    assert [(a.codec, a.channels) for a in probe.audio] == [("mp2", 2)]


def test_avi_reports_ffprobe_codec_names(media: Path) -> None:
    probe = probe_file(str(media / "legacy.avi"))
    assert probe.ok, probe.error
    assert (probe.container, probe.video_codec) == ("avi", "mpeg4")
    assert [a.codec for a in probe.audio] == ["mp3"]  # the codec, not PyAV's decoder name "mp3float"


def test_hevc_ten_bit_and_mp4(media: Path) -> None:
    ten = probe_file(str(media / "ten_bit.mkv"))
    assert (ten.video_codec, ten.pix_fmt, ten.bit_depth) == ("hevc", "yuv420p10le", 10)
    mp4 = probe_file(str(media / "clip.mp4"))
    assert (mp4.container, mp4.video_codec, mp4.error) == ("mp4", "h264", None)


def test_streams_titles_languages_and_dispositions(media: Path) -> None:
    probe = probe_file(str(media / "subs.mkv"))
    assert probe.ok, probe.error
    first, second = probe.audio
    assert (first.codec, first.channels, first.default, first.forced) == ("ac3", 2, True, False)
    assert (second.language, second.title, second.channels, second.forced) == ("fra", "Commentary", 6, True)
    assert second.channel_layout is not None and second.channel_layout.startswith("5.1")
    (sub,) = probe.subtitles
    assert (sub.codec, sub.language, sub.default, sub.forced) == ("subrip", "eng", True, True)


# ------------------------------------------------------------------------------------------------ errors


def test_empty_text_and_audio_only_files(media: Path) -> None:
    assert probe_file(str(media / "empty.mkv")).error == "empty file (0 bytes)"
    text = probe_file(str(media / "not_a_video.mkv")).error
    assert text is not None and text.startswith("not a media file (")
    audio = probe_file(str(media / "audio_only.mkv"))
    assert audio.error == "no video stream"
    assert [a.codec for a in audio.audio] == ["aac"]  # the facts are still there


def test_missing_directory_and_fifo(media: Path, tmp_path: Path) -> None:
    assert probe_file(str(media / "nope.mkv")).error == "file not found"
    assert probe_file(str(media)).error == "not a regular file (directory)"
    fifo = tmp_path / "pipe.mkv"
    os.mkfifo(fifo)
    assert probe_file(str(fifo)).error == "not a regular file (fifo)"  # and it did not block on the open


def test_unreadable_file_as_an_unprivileged_user(media: Path) -> None:
    """chmod 000 does not stop root, so a child drops to uid/gid 65534 (nobody) after importing, then probes."""
    shared = Path(os.environ.get("TMPDIR", "/tmp")) / f"amphigory-unreadable-{os.getpid()}"
    shared.mkdir(mode=0o755, exist_ok=True)
    try:
        os.chmod(shared, 0o755)  # the temp dirs of pytest are 0700: nobody must reach the file itself
        secret = shared / "secret.mkv"
        shutil.copy(media / "hevc.mkv", secret)
        os.chmod(secret, 0)
        code = textwrap.dedent(
            """
            import os, sys
            from amphigory_tui.services.probe import probe_file
            os.setgroups([]); os.setgid(65534); os.setuid(65534)
            print(probe_file(sys.argv[1]).error)
            """
        )
        out = subprocess.run([sys.executable, "-c", code, str(secret)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "permission denied"
    finally:
        shutil.rmtree(shared)


def test_hostile_names_are_just_names(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["$(touch pwned) `id` ; 'x' \"y\".mkv", "-i danger.mkv", "concat:evil.mkv", "line\nbreak.mkv"]
    for name in names:
        shutil.copy(media / "hevc.mkv", tmp_path / name)
    monkeypatch.chdir(tmp_path)
    for name in names:
        probe = probe_file(name)  # relative, so a "concat:" prefix would be read as a protocol by libav
        assert (probe.error, probe.video_codec) == (None, "hevc"), name
    with ProbePool(1, timeout_s=30) as pool:  # the workers get absolute paths: their cwd is not ours
        assert {p: r.video_codec for p, r in pool.probe_many(names)} == dict.fromkeys(names, "hevc")
    assert not list(tmp_path.rglob("pwned"))


# ------------------------------------------------------------------------------------------------ truncation


@pytest.mark.parametrize(
    ("name", "kind"),
    [("truncated.mkv", "Matroska"), ("truncated.mp4", "MP4"), ("truncated.avi", "AVI")],
)
def test_truncated_files_are_caught(media: Path, name: str, kind: str) -> None:
    probe = probe_file(str(media / name))
    assert probe.error is not None
    assert probe.error.startswith("truncated: ") and f"its {kind} header declares" in probe.error
    assert "(50 %)" in probe.error or "(49 %)" in probe.error


def test_truncated_mkv_still_claims_its_full_duration(media: Path) -> None:
    """The trap of TOOLS.md §2: the header still says 4 s, so only the structure check can tell."""
    probe = probe_file(str(media / "truncated.mkv"))
    assert probe.duration_s is not None and probe.duration_s > 3.9
    assert probe.video_codec == "h264"


def test_streamed_matroska_is_checked_against_its_last_timestamp(media: Path) -> None:
    assert probe_file(str(media / "streamed.mkv")).error is None
    error = probe_file(str(media / "streamed_truncated.mkv")).error
    assert error is not None
    assert error.startswith("truncated: its Matroska header says 4.0 s but the data ends at ")


def test_intact_files_are_not_called_truncated(media: Path) -> None:
    for name in ("h264_1080.mkv", "dvd.mpg", "hevc.mkv", "legacy.avi", "scope.mkv", "clip.mp4", "long.mkv"):
        assert probe_file(str(media / name)).error is None, name
        assert container_truncation(str(media / name)) is None, name


def test_structure_check_alone_agrees_with_the_probe(media: Path) -> None:
    for name in ("truncated.mkv", "truncated.mp4", "truncated.avi", "streamed_truncated.mkv"):
        assert container_truncation(str(media / name)) == probe_file(str(media / name)).error, name


# ------------------------------------------------------------------------------------------------ decisions


def test_decisions_on_real_files(media: Path) -> None:
    def verdict(name: str) -> tuple[bool, str]:
        path = media / name
        d = decide(str(path), path.stat().st_size, probe_file(str(path)), RULES)
        return d.should_transcode, d.reason

    def expected(name: str, what: str) -> str:
        path = media / name
        pct = estimate_savings_pct(probe_file(str(path)), path.stat().st_size)
        assert pct is not None and pct >= 10
        return f"{what} → hevc, est. −{pct} %"

    assert verdict("h264_1080.mkv") == (True, expected("h264_1080.mkv", "h264 1080p"))
    assert verdict("scope.mkv") == (True, expected("scope.mkv", "h264 1080p"))  # 1920×800 is 1080p
    assert verdict("dvd.mpg") == (True, expected("dvd.mpg", "mpeg2video 480p"))
    assert verdict("legacy.avi") == (True, expected("legacy.avi", "mpeg4 180p"))
    assert verdict("hevc.mkv") == (False, "already hevc")
    assert verdict("Movie-SAMPLE.mkv") == (False, "excluded by pattern *sample*")
    assert verdict("empty.mkv") == (False, "probe error: empty file (0 bytes)")
    assert verdict("audio_only.mkv") == (False, "no video stream")
    ok, reason = verdict("truncated.mkv")
    assert not ok and reason.startswith("probe error: truncated: ")
    ok, reason = verdict("not_a_video.mkv")
    assert not ok and reason.startswith("probe error: not a media file (")


def test_scope_and_full_hd_share_a_priority_bucket(media: Path) -> None:
    scope = probe_file(str(media / "scope.mkv"))
    size = 4 * 1024**3
    assert priority(scope.width, scope.height, size) == priority(1920, 1080, size)
    assert priority(scope.width, scope.height, size) > priority(1280, 720, size)


def test_min_size_rule_on_a_real_file(media: Path) -> None:
    path = media / "h264_1080.mkv"
    d = decide(str(path), path.stat().st_size, probe_file(str(path)), RulesSettings(min_size_mb=100))
    assert (d.should_transcode, d.reason) == (False, "below min size 100 MB")


# ------------------------------------------------------------------------------------------------ pool


def _reaped(pid: int) -> bool:
    """True when no process (not even a zombie) has this pid."""
    return not os.path.exists(f"/proc/{pid}")


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Arm the crash/hang markers for pools created in this test."""
    monkeypatch.setenv(FAULTS_ENV, "1")
    yield


def test_pool_probes_everything_once(media: Path) -> None:
    names = ["h264_1080.mkv", "dvd.mpg", "hevc.mkv", "legacy.avi", "empty.mkv", "truncated.mkv", "clip.mp4"]
    paths = [str(media / n) for n in names] * 3
    with ProbePool(2, timeout_s=30) as pool:
        got = list(pool.probe_many(paths))
        assert sorted(p for p, _ in got) == sorted(paths)
        for path, result in got:
            assert result == probe_file(path), path
        assert pool.probe(str(media / "hevc.mkv")).video_codec == "hevc"
        assert pool.restarts == 0


def test_pool_reads_ahead_of_odd_paths_without_blocking(media: Path, tmp_path: Path) -> None:
    """A worker starts reading the files of a batch before probing them: a FIFO, a folder or a missing path in the
    batch neither blocks it nor changes any answer."""
    fifo = tmp_path / "pipe.mkv"
    os.mkfifo(fifo)
    paths = [str(fifo), str(media), str(tmp_path / "nope.mkv"), str(media / "clip.mp4")]
    with ProbePool(1, timeout_s=30) as pool:
        got = dict(pool.probe_many(paths))
    assert got[str(fifo)].error == "not a regular file (fifo)"
    assert got[str(media)].error == "not a regular file (directory)"
    assert got[str(tmp_path / "nope.mkv")].error == "file not found"
    assert got[str(media / "clip.mp4")].video_codec == "h264"


def test_pool_pulls_paths_lazily(media: Path) -> None:
    """100,000 paths must not be held at once: only workers × depth are in flight."""
    pulled = 0

    def endless() -> Iterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield str(media / "hevc.mkv")

    with ProbePool(2, timeout_s=30, depth=2) as pool:
        results = pool.probe_many(endless())
        first = next(results)
        assert first[1].video_codec == "hevc"
        assert pulled <= 2 * 2 + 1
        for _ in range(20):
            next(results)
        assert pulled <= 21 + 2 * 2 + 1
        results.close()
        # Answers to the abandoned requests are dropped, not handed to the next caller.
        again = list(pool.probe_many([str(media / "dvd.mpg"), str(media / "legacy.avi")]))
        assert sorted((p, r.video_codec) for p, r in again) == [
            (str(media / "dvd.mpg"), "mpeg2video"),
            (str(media / "legacy.avi"), "mpeg4"),
        ]


def test_one_stream_at_a_time(media: Path) -> None:
    with ProbePool(1, timeout_s=30) as pool:
        first = pool.probe_many([str(media / "hevc.mkv"), str(media / "dvd.mpg")])
        next(first)
        with pytest.raises(AmphigoryError, match="already streaming"):
            pool.probe(str(media / "legacy.avi"))
        assert [r.video_codec for _, r in first] == ["mpeg2video"]
        assert pool.probe(str(media / "legacy.avi")).video_codec == "mpeg4"


def test_a_crashing_file_kills_only_its_worker(media: Path, tmp_path: Path, faults: None) -> None:
    bad = tmp_path / f"movie {CRASH_MARKER}.mkv"
    shutil.copy(media / "hevc.mkv", bad)
    good = [str(media / n) for n in ("h264_1080.mkv", "dvd.mpg", "legacy.avi", "hevc.mkv")]
    with ProbePool(2, timeout_s=30) as pool:
        before = set(pool.pids)
        results = dict(pool.probe_many([*good[:2], str(bad), *good[2:]]))
        assert results.pop(str(bad)).error == "probe crashed (killed by SIGSEGV)"
        assert {p: r.error for p, r in results.items()} == dict.fromkeys(good)
        assert pool.restarts == 1 and len(pool.pids) == 2
        dead = before - set(pool.pids)
        assert len(dead) == 1 and _reaped(dead.pop())
        assert pool.probe(good[0]).video_codec == "h264"  # the pool carries on


def test_a_hanging_file_times_out(media: Path, tmp_path: Path, faults: None) -> None:
    hang = tmp_path / f"movie {HANG_MARKER}.mkv"
    shutil.copy(media / "hevc.mkv", hang)
    good = [str(media / n) for n in ("h264_1080.mkv", "dvd.mpg", "legacy.avi")]
    with ProbePool(2, timeout_s=1.0) as pool:
        before = set(pool.pids)
        results = dict(pool.probe_many([str(hang), *good]))
        assert results.pop(str(hang)).error == "probe timed out after 1 s"
        assert {p: r.error for p, r in results.items()} == dict.fromkeys(good)
        dead = before - set(pool.pids)
        assert len(dead) == 1 and _reaped(dead.pop())
    assert pool.closed


def test_cancel_stops_waiting_on_a_hanging_file(media: Path, tmp_path: Path, faults: None) -> None:
    """Cancel while a worker hangs: the call returns long before timeout_s, the hung file gets no result, the
    stuck worker is replaced and reaped, and the pool serves the next call and closes cleanly."""
    hang = tmp_path / f"movie {HANG_MARKER}.mkv"
    shutil.copy(media / "hevc.mkv", hang)
    good = [str(media / n) for n in ("h264_1080.mkv", "dvd.mpg", "legacy.avi")]
    pulled: list[str] = []

    def paths() -> Iterator[str]:
        for path in [str(hang), *good, str(media / "clip.mp4")]:
            pulled.append(path)
            yield path

    cancel = threading.Event()
    others_done = threading.Event()
    got: dict[str, str | None] = {}
    failed: list[BaseException] = []
    # depth 1: the hanging file holds one worker, and nothing else queues behind it.
    pool = ProbePool(2, timeout_s=30, depth=1)
    before = set(pool.pids)

    def consume() -> None:
        try:
            for path, result in pool.probe_many(paths(), cancel):
                got[path] = result.error
                if len(got) == len(good):
                    others_done.set()
                    cancel.wait()  # keep the last path unpulled until the cancel
        except BaseException as exc:  # pragma: no cover - reported by the asserts below
            failed.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        assert others_done.wait(timeout=20), got
        cancel.set()
        thread.join(timeout=5)  # far below timeout_s: only the cancel can end the call in time
        assert not thread.is_alive()
        assert failed == []
        assert got == dict.fromkeys(good)  # the hanging file produced no result at all
        assert str(media / "clip.mp4") not in pulled  # no new path was pulled after the cancel
        stuck = before - set(pool.pids)
        assert len(stuck) == 1 and _reaped(stuck.pop())
        assert pool.restarts == 0  # a cancel is not a crash or a timeout
        assert pool.probe(good[1]).video_codec == "mpeg2video"
        again = dict(pool.probe_many(good, threading.Event()))
        assert {p: r.error for p, r in again.items()} == dict.fromkeys(good)
    finally:
        cancel.set()
        pids = pool.pids
        pool.close()
    assert all(_reaped(pid) for pid in pids)


def test_markers_are_inert_without_the_env_var(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FAULTS_ENV, raising=False)
    bad = tmp_path / f"x {CRASH_MARKER} {HANG_MARKER}.mkv"
    shutil.copy(media / "hevc.mkv", bad)
    with ProbePool(1, timeout_s=5) as pool:
        assert pool.probe(str(bad)).video_codec == "hevc"
        assert pool.restarts == 0


def test_close_reaps_every_worker_even_busy_ones(media: Path, tmp_path: Path, faults: None) -> None:
    hang = tmp_path / f"{HANG_MARKER}.mkv"
    shutil.copy(media / "hevc.mkv", hang)
    pool = ProbePool(2, timeout_s=60)
    pids = pool.pids
    results = pool.probe_many([str(hang), str(media / "dvd.mpg")])
    assert next(results)[0] == str(media / "dvd.mpg")
    results.close()  # one worker is still stuck on the hanging file
    pool.close()
    pool.close()  # idempotent
    assert pool.closed and pool.pids == []
    assert all(_reaped(pid) for pid in pids)
    with pytest.raises(AmphigoryError, match="closed"):
        pool.probe(str(media / "dvd.mpg"))


def test_pool_size_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """probe_workers = 0: one worker per CPU this process may use (its affinity), not per CPU of the machine."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    with ProbePool.from_settings(ScannerSettings(probe_workers=0, probe_timeout_s=5)) as pool:
        assert pool.size == 1 and len(pool.pids) == 1
        assert pool.timeout_s == 5


def test_a_cancel_retires_busy_workers_without_starting_new_ones(media: Path, tmp_path: Path, faults: None) -> None:
    """After a cancel nothing is spawned (the caller is usually about to close the pool, as Ctrl+C does); close
    then has only idle workers to stop, and a later call starts the missing workers first."""
    hang = tmp_path / f"movie {HANG_MARKER}.mkv"
    shutil.copy(media / "hevc.mkv", hang)
    pool = ProbePool(2, timeout_s=30, depth=1)
    try:
        before = set(pool.pids)
        cancel = threading.Event()
        paths = [str(hang), str(media / "dvd.mpg"), str(media / "legacy.avi"), str(media / "clip.mp4")]
        for _path, _result in pool.probe_many(paths, cancel):
            cancel.set()  # the hanging file is still in a worker
        after = set(pool.pids)
        assert after < before  # the stuck worker retired, no replacement
        assert all(_reaped(pid) for pid in before - after)
        assert pool.probe(str(media / "dvd.mpg")).video_codec == "mpeg2video"
        assert len(pool.pids) == 2 and pool.restarts == 0
    finally:
        pids = pool.pids
        pool.close()
    assert all(_reaped(pid) for pid in pids)


def test_random_bytes_named_mkv_are_not_media(media: Path, tmp_path: Path) -> None:
    """Noise with a media extension gets a probe error (in-process and in the pool), never facts."""
    noise = tmp_path / "noise.mkv"
    noise.write_bytes(random.Random(7).randbytes(256 * 1024))
    result = probe_file(str(noise))
    assert result.error is not None and result.video_codec is None
    with ProbePool(1, timeout_s=30) as pool:
        assert pool.probe(str(noise)) == result
