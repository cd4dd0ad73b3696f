"""The transcode rules as pure functions: reasons, order of checks, savings model, priority, names."""

from __future__ import annotations

import math

import pytest

from amphigory_tui.config import RulesSettings
from amphigory_tui.domain.media import AudioStream, ProbeResult
from amphigory_tui.services.rules import (
    canonical_codec,
    canonical_container,
    decide,
    estimate_savings_pct,
    excluded_by,
    priority,
    resolution_label,
)

RULES = RulesSettings()
GIB = 1024**3
STEREO_AAC = (AudioStream(index=1, codec="aac", language="eng", channels=2),)


def video(
    codec: str = "h264", width: int = 1920, height: int = 1080, kbps: int | None = 10_000, **kw: object
) -> ProbeResult:
    """A probe result of a file with one stereo AAC track."""
    fields: dict[str, object] = {"audio": STEREO_AAC, "fps": 24.0, "duration_s": 3600.0}
    fields.update(kw)
    return ProbeResult(video_codec=codec, width=width, height=height, bitrate_kbps=kbps, **fields)  # type: ignore[arg-type]


def test_transcode_reason_and_estimate() -> None:
    d = decide("/lib/Movie (2020).mkv", 4 * GIB, video(), RULES)
    # audio 2 × 96 = 192 kbps copied; video (10000 − 192) × 0.65; saving ⌊(1 − 6567.2 / 10000) × 100⌋ = 34
    assert d == type(d)(True, "h264 1080p → hevc, est. −34 %", priority(1920, 1080, 4 * GIB), 34)


def test_mpeg2_dvd_saves_more_than_h264() -> None:
    dvd = decide("/lib/dvd.mkv", 4 * GIB, video("mpeg2video", 720, 480, 6000), RULES)
    assert dvd.should_transcode and dvd.reason.startswith("mpeg2video 480p → hevc, est. −")
    # (192 + 5808 × 0.45) / 6000 → 53 %
    assert dvd.est_savings_pct == 53


def test_low_expected_saving_is_skipped_with_the_numbers() -> None:
    # 1080p floor 3000 kbps dominates: 1 − (192 + 3000) / 3470 = 8.01 %
    d = decide("/lib/x.mkv", GIB, video(kbps=3470), RULES)
    assert (d.should_transcode, d.reason, d.priority, d.est_savings_pct) == (
        False,
        "expected saving 8 % < min 10 %",
        0,
        8,
    )


def test_already_efficient_file_never_grows() -> None:
    assert estimate_savings_pct(video(kbps=2000), GIB) == 0
    d = decide("/lib/x.mkv", GIB, video(kbps=2000), RulesSettings(min_expected_savings_pct=0))
    assert (d.should_transcode, d.reason) == (False, "no expected saving")


@pytest.mark.parametrize("codec", ["hevc", "h265", "HEVC", "hvc1", "hev1"])
def test_already_target(codec: str) -> None:
    assert decide("/lib/x.mkv", GIB, video(codec), RULES).reason == "already hevc"


def test_other_target_codec() -> None:
    rules = RulesSettings(target_codec="av1")
    d = decide("/lib/x.mkv", GIB, video("hevc", kbps=20_000), rules)
    assert d.should_transcode and d.reason.startswith("hevc 1080p → av1, est. −")
    assert decide("/lib/x.mkv", GIB, video("av1"), rules).reason == "already av1"


def test_excludes_match_base_name_and_full_path_case_insensitively() -> None:
    patterns = ("*sample*", "*trailer*")
    assert excluded_by("/lib/Movie-SAMPLE.mkv", patterns) == "*sample*"
    assert excluded_by("/lib/Samples/clip.mkv", patterns) == "*sample*"
    assert excluded_by("/lib/Trailers/x.mp4", patterns) == "*trailer*"
    assert excluded_by("/lib/Example.mkv", patterns) is None
    assert excluded_by("/lib/Extras/a.mkv", ("extras/*",)) is None  # only */extras/* would match the full path
    assert excluded_by("/lib/Extras/a.mkv", ("*/extras/*",)) == "*/extras/*"
    assert excluded_by("/lib/a.MKV", ("a.mkv",)) == "a.mkv"  # the base name alone


def test_order_of_checks() -> None:
    broken = ProbeResult(error="truncated: 1 of the 2 bytes its MP4 header declares (50 %)")
    rules = RulesSettings(min_size_mb=100)
    assert decide("/lib/a-sample.mkv", 1, broken, rules).reason == "excluded by pattern *sample*"
    assert decide("/lib/a.mkv", 99_999_999, broken, rules).reason == "below min size 100 MB"
    assert decide("/lib/a.mkv", 100_000_000, broken, rules).reason == f"probe error: {broken.error}"
    assert decide("/lib/a.mkv", 100_000_000, video(), rules).should_transcode
    unprobed = ProbeResult()  # the scanner may skip probing small or excluded files
    assert decide("/lib/a.mkv", 10, unprobed, rules).reason == "below min size 100 MB"


def test_fractional_min_size_reads_naturally() -> None:
    assert decide("/lib/a.mkv", 1000, video(), RulesSettings(min_size_mb=0.5)).reason == "below min size 0.5 MB"


@pytest.mark.parametrize(
    "probe",
    [ProbeResult(error="no video stream"), ProbeResult(error="no video stream (audio or data only)"), ProbeResult()],
)
def test_no_video_stream(probe: ProbeResult) -> None:
    d = decide("/lib/a.mkv", GIB, probe, RULES)
    assert (d.should_transcode, d.reason, d.priority) == (False, "no video stream", 0)


def test_probe_errors_are_never_transcoded() -> None:
    d = decide("/lib/a.mkv", 50 * GIB, ProbeResult(error="probe crashed (killed by SIGSEGV)"), RULES)
    assert (d.should_transcode, d.reason) == (False, "probe error: probe crashed (killed by SIGSEGV)")


def test_bitrate_falls_back_to_size_over_duration() -> None:
    no_rate = video(kbps=None, duration_s=1000.0)
    size = 10_000 * 1000 * 1000 // 8  # 10,000 kbps for 1000 s
    assert estimate_savings_pct(no_rate, size) == estimate_savings_pct(video(kbps=10_000), size) == 34


def test_unknown_bitrate_is_transcoded_with_an_unknown_saving() -> None:
    d = decide("/lib/a.mkv", GIB, video(kbps=None, duration_s=None), RULES)
    assert (d.should_transcode, d.reason, d.est_savings_pct) == (True, "h264 1080p → hevc, saving unknown", None)


def test_lossless_audio_is_assumed_copied() -> None:
    truehd = (AudioStream(index=1, codec="truehd", channels=8),)
    with_lossy = estimate_savings_pct(video(kbps=20_000), GIB)
    with_truehd = estimate_savings_pct(video(kbps=20_000, audio=truehd), GIB)
    assert with_lossy is not None and with_truehd is not None and with_truehd < with_lossy


def test_high_frame_rate_raises_the_floor() -> None:
    at_24 = estimate_savings_pct(video(kbps=5000), GIB)
    at_60 = estimate_savings_pct(video(kbps=5000, fps=59.94), GIB)
    assert at_24 is not None and at_60 is not None and at_60 < at_24


@pytest.mark.parametrize(
    ("width", "height", "label"),
    [
        (3840, 2160, "2160p"),
        (3840, 1600, "2160p"),
        (2560, 1440, "1440p"),
        (1920, 1080, "1080p"),
        (1920, 800, "1080p"),
        (1440, 1080, "1080p"),
        (1280, 720, "720p"),
        (1280, 534, "720p"),
        (720, 576, "576p"),
        (720, 480, "480p"),
        (320, 180, "180p"),
        (None, None, None),
    ],
)
def test_resolution_bucket_is_the_larger_of_width_and_height(
    width: int | None, height: int | None, label: str | None
) -> None:
    assert resolution_label(width, height) == label


def test_priority_formula() -> None:
    assert priority(None, None, 0) == 0
    assert priority(3840, 2160, 64 * GIB) == 100
    assert priority(3840, 2160, 1000 * GIB) == 100
    assert priority(1920, 1080, 1 * GIB) == 40 + 20
    assert priority(1920, 1080, 4 * GIB) == 40 + 30
    assert priority(1280, 720, 16 * GIB) == 25 + 40
    assert priority(720, 480, 700 * 1024**2) == 10 + round(50 * math.log2(700 / 64) / 10)
    assert priority(1920, 800, 8 * GIB) == priority(1920, 1080, 8 * GIB)


def test_priority_prefers_bigger_and_sharper() -> None:
    sizes = [10 * 1024**2, 100 * 1024**2, GIB, 8 * GIB, 40 * GIB]
    for w, h in [(720, 480), (1280, 720), (1920, 1080), (3840, 2160)]:
        by_size = [priority(w, h, s) for s in sizes]
        assert by_size == sorted(by_size) and by_size[0] < by_size[-1]
    by_res = [priority(w, h, 8 * GIB) for w, h in [(720, 480), (1280, 720), (1920, 1080), (2560, 1440), (3840, 2160)]]
    assert by_res == sorted(by_res) and len(set(by_res)) == len(by_res)
    assert all(0 <= priority(w, h, s) <= 100 for w, h in [(1, 1), (8000, 8000)] for s in (0, 10**15))


def test_transcode_decisions_carry_the_priority() -> None:
    small = decide("/lib/a.mkv", GIB, video(), RULES)
    big = decide("/lib/b.mkv", 20 * GIB, video(), RULES)
    uhd = decide("/lib/c.mkv", GIB, video(width=3840, height=2160, kbps=40_000), RULES)
    assert 0 < small.priority < big.priority and small.priority < uhd.priority


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("H264", "h264"), ("avc1", "h264"), ("XVID", "mpeg4"), ("mpeg2", "mpeg2video"), ("vp09", "vp9"), ("av01", "av1")],
)
def test_codec_aliases(name: str, canonical: str) -> None:
    assert canonical_codec(name) == canonical
    assert canonical_codec(None) is None and canonical_codec("") is None


@pytest.mark.parametrize(
    ("fmt", "path", "name"),
    [
        ("matroska,webm", "/a/b.mkv", "matroska"),
        ("matroska,webm", "/a/b.WEBM", "webm"),
        ("mov,mp4,m4a,3gp,3g2,mj2", "/a/b.mp4", "mp4"),
        ("mov,mp4,m4a,3gp,3g2,mj2", "/a/b.m4v", "mov"),
        ("mpegts", "/a.b/c", "mpegts"),
        ("avi", "/a/b.avi", "avi"),
    ],
)
def test_container_names(fmt: str, path: str, name: str) -> None:
    assert canonical_container(fmt, path) == name


def test_decide_is_pure() -> None:
    probe = video()
    assert decide("/lib/a.mkv", GIB, probe, RULES) == decide("/lib/a.mkv", GIB, probe, RULES)
    assert probe == video()
