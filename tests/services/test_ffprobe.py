"""ffprobe on real generated files: good, empty, text, truncated, hostile names; the pure JSON parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from amphigory_tui.domain.errors import ToolNotFound
from amphigory_tui.domain.media import AudioStream, SubtitleStream
from amphigory_tui.services.ffprobe import ffprobe, parse_ffprobe_json, tool_version
from tests.media import FFMPEG, make_clip, make_truncated


@pytest.fixture
def anyio_backend() -> str:
    """Run these async tests on asyncio."""
    return "asyncio"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a 2 s two-language clip with a forced subtitle, and a 4 s clip."""
    folder = tmp_path_factory.mktemp("probe")
    plain = make_clip(folder / "plain.mkv", seconds=2, audio_languages=("eng", "fra"))
    srt = folder / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nBonjour\n", encoding="utf-8")
    argv = [FFMPEG, "-nostdin", "-v", "error", "-y", "-i", f"file:{plain}", "-i", f"file:{srt}"]
    argv += ["-map", "0", "-map", "1", "-c", "copy", "-c:s", "srt"]
    argv += ["-metadata:s:s:0", "language=fra", "-metadata:s:s:0", "title=Forced FR", "-disposition:s:0", "forced"]
    argv += ["-metadata:s:a:1", "title=Français", f"file:{folder / 'good.mkv'}"]
    subprocess.run(argv, check=True, capture_output=True)
    make_clip(folder / "four.mkv", seconds=4)
    return folder


@pytest.mark.anyio
async def test_probe_of_a_good_file(clips: Path) -> None:
    probe = await ffprobe(clips / "good.mkv", count_packets=True)
    assert probe.ok, probe.error
    assert probe.container == "matroska"
    assert probe.duration_s is not None and abs(probe.duration_s - 2.0) < 0.1
    assert probe.bitrate_kbps is not None and probe.bitrate_kbps > 0
    assert (probe.video_codec, probe.width, probe.height, probe.fps) == ("h264", 320, 180, 24.0)
    assert (probe.pix_fmt, probe.bit_depth) == ("yuv420p", 8)
    assert [(a.index, a.codec, a.language, a.channels, a.title) for a in probe.audio] == [
        (1, "aac", "eng", 2, None),
        (2, "aac", "fra", 2, "Français"),
    ]
    assert probe.subtitles == (
        SubtitleStream(index=3, codec="subrip", language="fra", title="Forced FR", default=False, forced=True),
    )


@pytest.mark.anyio
async def test_probe_of_ten_bit_hevc(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "hevc.mkv", seconds=1, vcodec="libx265", extra=["-pix_fmt", "yuv420p10le"])
    probe = await ffprobe(clip)
    assert probe.ok, probe.error
    assert (probe.video_codec, probe.pix_fmt, probe.bit_depth) == ("hevc", "yuv420p10le", 10)


@pytest.mark.anyio
async def test_probe_of_broken_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mkv"
    empty.touch()
    text = tmp_path / "not_a_video.mkv"
    text.write_text("hello, I am text\n" * 100)
    assert (await ffprobe(empty)).error == "empty file (0 bytes)"
    assert (await ffprobe(text)).error == "not a media file ffprobe can read (Invalid data found when processing input)"
    assert (await ffprobe(tmp_path / "gone.mkv")).error == "the file does not exist"
    assert (await ffprobe(tmp_path)).error == "not a regular file"
    missing = await ffprobe(tmp_path / "gone.mkv")
    assert not missing.ok and missing.video_codec is None


@pytest.mark.anyio
async def test_truncation_is_caught_only_by_counting_packets(tmp_path: Path, clips: Path) -> None:
    truncated = make_truncated(clips / "four.mkv", tmp_path / "truncated.mkv")
    # The header still says 4 s, so a plain probe sees a healthy file...
    quick = await ffprobe(truncated)
    assert quick.ok
    assert quick.duration_s is not None and quick.duration_s > 3.9
    # ...and counting the packets shows half of the frames are missing.
    counted = await ffprobe(truncated, count_packets=True)
    assert counted.error is not None
    assert counted.error.startswith("truncated: only ")
    assert "of about 97 video frames are present" in counted.error
    assert counted.width == 320
    healthy = await ffprobe(clips / "four.mkv", count_packets=True)
    assert healthy.ok, healthy.error


@pytest.mark.anyio
async def test_truncated_mp4_has_no_index(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", seconds=2)
    truncated = make_truncated(clip, tmp_path / "cut.mp4")
    assert (await ffprobe(truncated)).error == "truncated or damaged MP4/MOV file (moov atom not found)"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "name",
    ["-i danger.mkv", "$(touch pwned) `id` 'q' \"d\".mkv", "http:not a url.mkv", "a: colon ? # %.mkv", "new\nline.mkv"],
)
async def test_hostile_names(tmp_path: Path, clips: Path, name: str) -> None:
    target = tmp_path / name
    target.write_bytes((clips / "plain.mkv").read_bytes())
    probe = await ffprobe(target, count_packets=True)
    assert probe.ok, probe.error
    assert probe.width == 320
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.anyio
async def test_a_hung_ffprobe_times_out(tmp_path: Path, clips: Path) -> None:
    fake = tmp_path / "ffprobe"
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    fake.chmod(0o755)
    probe = await ffprobe(clips / "plain.mkv", ffprobe=str(fake), timeout_s=0.5)
    assert probe.error == "ffprobe did not finish within 0.5 s"


@pytest.mark.anyio
async def test_missing_ffprobe_raises_with_install_hint(clips: Path) -> None:
    with pytest.raises(ToolNotFound, match="install it with: apt-get install ffmpeg"):
        await ffprobe(clips / "plain.mkv", ffprobe="no-such-ffprobe")


def test_tool_versions() -> None:
    ffprobe_version = tool_version("ffprobe")
    assert ffprobe_version is not None and ffprobe_version.startswith("ffprobe version ")
    assert "Copyright" not in ffprobe_version
    handbrake_version = tool_version("HandBrakeCLI")
    assert handbrake_version is not None and handbrake_version.startswith("HandBrake 1.")
    assert tool_version("no-such-tool-amphigory") is None


def test_parse_ffprobe_json_edge_cases() -> None:
    data: dict[str, Any] = {
        "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "size": "1000000"},
        "streams": [
            {"index": 0, "codec_type": "video", "codec_name": "mjpeg", "disposition": {"attached_pic": 1}},
            {
                "index": 1,
                "codec_type": "video",
                "codec_name": "hevc",
                "width": 1920,
                "height": 800,
                "avg_frame_rate": "0/0",
                "r_frame_rate": "24000/1001",
                "pix_fmt": "yuv420p12le",
                "tags": {"DURATION": "00:00:08.000000000"},
            },
            {
                "index": 2,
                "codec_type": "audio",
                "codec_name": "ac3",
                "channels": 6,
                "channel_layout": "5.1(side)",
                "tags": {"LANGUAGE": "ger"},
                "disposition": {"default": 1},
            },
            {"index": 3, "codec_type": "data"},
        ],
    }
    probe = parse_ffprobe_json(data)
    assert probe.ok
    assert probe.container == "mov"
    assert probe.video_codec == "hevc"
    assert probe.fps == 23.976
    assert probe.bit_depth == 12
    assert probe.duration_s == 8.0
    assert probe.bitrate_kbps == 1000
    assert probe.audio == (
        AudioStream(index=2, codec="ac3", language="ger", channels=6, channel_layout="5.1(side)", default=True),
    )
    audio_only = parse_ffprobe_json({"format": {"duration": "3.0"}, "streams": [data["streams"][2]]})
    assert audio_only.error == "no video stream (audio or data only)"
    assert parse_ffprobe_json({}).error == "no audio or video streams found"


def test_parse_ffprobe_json_truncation_needs_evidence_for_small_shortfalls() -> None:
    def probe(packets: int, warnings: tuple[str, ...] = ()) -> str | None:
        video = {
            "codec_type": "video",
            "codec_name": "mpeg2video",
            "avg_frame_rate": "30000/1001",
            "nb_read_packets": str(packets),
        }
        return parse_ffprobe_json({"format": {"duration": "100.0"}, "streams": [video]}, warnings=warnings).error

    # 100 s at 29.97 fps: 2997 frames expected. Soft-telecined MPEG-2 codes only 4 of every 5 (2398).
    assert probe(2997) is None
    assert probe(2398) is None
    assert probe(2300) is None
    assert probe(2300, ("[matroska,webm @ 0x1] File ended prematurely",)) is not None
    assert probe(1500) == "truncated: only 1500 of about 2997 video frames are present (50.1 s of 100.0 s)"
    # A second or so of missing frames is normal, with or without warnings.
    assert probe(2970, ("File ended prematurely",)) is None
