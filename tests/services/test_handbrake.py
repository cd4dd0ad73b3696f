"""HandBrakeCLI: preset choice, argv safety, progress parsing and failure classification, on real encodes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from amphigory_tui.config import Settings, TranscodeSettings
from amphigory_tui.domain.errors import JobError
from amphigory_tui.domain.jobs import Progress
from amphigory_tui.services.ffprobe import ffprobe
from amphigory_tui.services.handbrake import (
    ProgressParser,
    build_argv,
    classify_failure,
    pick_preset,
    run_encode,
)
from amphigory_tui.services.proc import ProcessHandle, ToolResult, resolve_tool, run_tool
from tests.media import make_clip

# The cheap custom encode of TOOLS.md §7: about 0.7 s for a 2 s clip.
FAST = ["-e", "x264", "--encoder-preset", "ultrafast", "-q", "40", "-w", "320", "-l", "180"]
HOSTILE = '-i $(touch pwned) `touch pwned` Tom\'s "Movie" – Café 日本語 & ; | [x] *'


@pytest.fixture
def anyio_backend() -> str:
    """Run these async tests on asyncio."""
    return "asyncio"


@pytest.fixture(scope="module")
def handbrake() -> str:
    """The absolute path of the real HandBrakeCLI."""
    return resolve_tool("HandBrakeCLI", package_hint="handbrake-cli")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s 320x180 H.264 + AAC clip."""
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mkv", seconds=2)


# ---------------------------------------------------------------------------------------------------- presets


TRANSCODE = Settings().transcode


@pytest.mark.parametrize(
    ("width", "height", "tier"),
    [
        (720, 480, "preset_sd"),
        (720, 576, "preset_sd"),
        (854, 480, "preset_sd"),
        (1024, 576, "preset_sd"),
        (640, 352, "preset_sd"),
        (1280, 720, "preset_720p"),
        (960, 720, "preset_720p"),
        (1280, 536, "preset_720p"),
        (1920, 1080, "preset_1080p"),
        (1920, 800, "preset_1080p"),
        (1440, 1080, "preset_1080p"),
        (1920, 1088, "preset_1080p"),
        (2048, 858, "preset_1080p"),
        (1080, 1920, "preset_1080p"),
        (3840, 2160, "preset_2160p"),
        (3840, 1600, "preset_2160p"),
        (2560, 1440, "preset_2160p"),
        (None, None, "preset_1080p"),
        (0, 0, "preset_1080p"),
    ],
)
def test_pick_preset_by_resolution(width: int | None, height: int | None, tier: str) -> None:
    assert pick_preset(width, height, TRANSCODE) == getattr(TRANSCODE, tier)


def test_pick_preset_uses_the_configured_names() -> None:
    custom = TranscodeSettings(preset_sd="A", preset_720p="B", preset_1080p="C", preset_2160p="D")
    assert [pick_preset(w, h, custom) for w, h in ((640, 480), (1280, 720), (1920, 1080), (4096, 2160))] == [
        "A",
        "B",
        "C",
        "D",
    ]


# ---------------------------------------------------------------------------------------------------- argv


def test_build_argv_makes_paths_absolute_and_puts_extra_args_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = build_argv(
        "/usr/bin/HandBrakeCLI",
        "-i danger.mkv",
        Path("out") / "x.mp4",
        preset="Fast 1080p30",
        preset_import_file="presets.json",
        extra_args=["--stop-at", "seconds:2"],
        container="mp4",
    )
    assert argv == [
        "/usr/bin/HandBrakeCLI",
        "--preset-import-file",
        str(tmp_path / "presets.json"),
        "-i",
        str(tmp_path / "-i danger.mkv"),
        "-o",
        str(tmp_path / "out" / "x.mp4"),
        "--preset",
        "Fast 1080p30",
        "-f",
        "av_mp4",
        "--stop-at",
        "seconds:2",
    ]
    assert build_argv("hb", "/a.mkv", "/b.mkv", preset="P")[-2:] == ["-f", "av_mkv"]


def test_build_argv_refuses_to_overwrite_the_input(tmp_path: Path) -> None:
    source = tmp_path / "movie.mkv"
    source.write_bytes(b"x")
    link = tmp_path / "link.mkv"
    link.symlink_to(source)
    hard = tmp_path / "hard.mkv"
    os.link(source, hard)
    for target in (source, tmp_path / "." / "movie.mkv", link, hard):
        with pytest.raises(JobError, match="onto itself") as info:
            build_argv("hb", source, target, preset="P")
        assert info.value.permanent
    with pytest.raises(JobError, match="unknown output container") as info:
        build_argv("hb", source, tmp_path / "o.avi", preset="P", container="avi")
    assert info.value.permanent


# ---------------------------------------------------------------------------------------------------- progress


def test_progress_parser_on_the_records_of_tools_md() -> None:
    parser = ProgressParser()
    assert parser.feed("Encoding: task 1 of 1, 1.89 %") == Progress(percent=1.89)
    assert parser.feed("Encoding: task 1 of 1, 51.47 % (80.62 fps, avg 91.08 fps, ETA 00h00m10s)") == Progress(
        percent=51.47, fps=80.62, avg_fps=91.08, eta_s=10.0
    )
    assert parser.feed("Encoding: task 1 of 1, 100.00 % (93.21 fps, avg 90.19 fps, ETA 01h02m03s)") == Progress(
        percent=100.0, fps=93.21, avg_fps=90.19, eta_s=3723.0
    )
    for noise in (
        "[13:30:59] work: average encoding speed for job is 90.19 fps",
        "Encode done!",
        "HandBrake has exited.",
        "Scanning title 1 of 1, preview 5, 50.00 %",
        "libdvdread: Encrypted DVD support unavailable.****",
        "Encoding: task",
    ):
        assert parser.feed(noise) is None
    assert parser.last == Progress(percent=100.0, fps=93.21, avg_fps=90.19, eta_s=3723.0)


def test_progress_parser_two_pass_is_overall_percent() -> None:
    parser = ProgressParser()
    assert parser.feed("Encoding: task 1 of 2, 50.00 %") == Progress(percent=25.0)
    assert parser.task == 1
    assert parser.feed("Encoding: task 1 of 2, 100.00 %") == Progress(percent=50.0)
    progress = parser.feed("Encoding: task 2 of 2, 50.00 % (10.00 fps, avg 11.00 fps, ETA 00h01m00s)")
    assert progress == Progress(percent=75.0, fps=10.0, avg_fps=11.0, eta_s=60.0)
    assert (parser.task, parser.task_count) == (2, 2)


def test_progress_parser_json_blocks_with_banners_in_between() -> None:
    lines = [
        "Version: {",
        '    "Name": "HandBrake",',
        '    "Version": {',
        '        "Major": 1',
        "    },",
        '    "VersionString": "1.6.1"',
        "}",
        "libdvdread: Encrypted DVD support unavailable.************************************************",
        "**  No css library available. See             **",
        "Progress: {",
        '    "Scanning": {',
        '        "Preview": 2,',
        '        "Progress": 0.2',
        "    },",
        '    "State": "SCANNING"',
        "}",
        "Progress: {",
        '    "State": "WORKING",',
        '    "Working": {',
        '        "ETASeconds": 0,',
        '        "Hours": -1,',
        '        "Minutes": -1,',
        '        "Pass": 1,',
        '        "PassCount": 1,',
        '        "Progress": 0.25,',
        '        "Rate": 0.0,',
        '        "RateAvg": 0.0,',
        '        "Seconds": -1',
        "    }",
        "}",
        "libdvdnav: Using dvdnav version 6.1.1",
        "Progress: {",
        '    "State": "WORKING",',
        '    "Working": {',
        '        "ETASeconds": 10,',
        '        "Hours": 0,',
        '        "Minutes": 0,',
        '        "Pass": 1,',
        '        "PassCount": 1,',
        '        "Progress": 0.5308848023414612,',
        "libdvdread: a banner in the middle of a block",
        '        "Rate": 85.03,',
        '        "RateAvg": 85.54,',
        '        "Seconds": 10',
        "    }",
        "}",
        "Progress: {",
        '    "Muxing": {',
        '        "Progress": 0.0',
        "    },",
        '    "State": "MUXING"',
        "}",
        "Progress: {",
        '    "State": "WORKDONE",',
        '    "WorkDone": {',
        '        "Error": 0,',
        '        "SequenceID": 1',
        "    }",
        "}",
    ]
    parser = ProgressParser()
    results = [p for p in map(parser.feed, lines) if p is not None]
    assert results == [
        Progress(percent=25.0),
        Progress(percent=53.09, fps=85.03, avg_fps=85.54, eta_s=10.0),
        Progress(percent=100.0),
    ]
    assert parser.work_done_error == 0


@pytest.mark.anyio
async def test_progress_of_a_real_two_pass_encode(tmp_path: Path, handbrake: str) -> None:
    # HandBrake prints fps and ETA only once 4 s of wall time have passed since the pass started. Pausing the
    # encode (SIGSTOP) right after its first record gets there without burning CPU, and exercises pause too.
    source = make_clip(tmp_path / "long.mkv", seconds=30, width=640, height=360)
    argv = build_argv(
        handbrake,
        source,
        tmp_path / "out.mkv",
        preset="",
        extra_args=["-e", "x264", "--encoder-preset", "ultrafast", "-b", "300", "-2", "-T", "-w", "320", "-l", "180"],
    )
    seen: list[Progress] = []
    raw: list[str] = []
    handles: list[ProcessHandle] = []
    first = anyio.Event()
    paused_state: list[str] = []

    def on_progress(progress: Progress) -> None:
        seen.append(progress)
        first.set()

    async with anyio.create_task_group() as tg:

        async def pause_once() -> None:
            await first.wait()
            handle = handles[0]
            handle.stop()
            await anyio.sleep(4.5)
            paused_state.append(Path(f"/proc/{handle.pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
            handle.cont()

        tg.start_soon(pause_once)
        result = await run_encode(
            argv,
            on_progress=on_progress,
            on_start=handles.append,
            on_line=lambda stream, line: raw.append(line) if "Encoding:" in line else None,
        )
    assert result.returncode == 0, result.stderr_text
    assert result.killed_by is None
    assert paused_state == ["T"]
    percents = [p.percent for p in seen]
    assert percents == sorted(percents)
    assert percents[-1] >= 99.0
    assert any(p.percent > 50.0 for p in seen[:-1]) and any(p.percent < 50.0 for p in seen)
    assert any(line.startswith("Encoding: task 2 of 2") for line in raw)
    with_rate = [p for p in seen if p.fps is not None]
    assert with_rate, raw
    assert all(p.avg_fps is not None and p.avg_fps > 0 and p.eta_s is not None for p in with_rate)
    assert len(seen) == len(raw)


# ---------------------------------------------------------------------------------------------------- encodes


@pytest.mark.anyio
async def test_hostile_names_survive_a_real_encode(tmp_path: Path, handbrake: str, clip: Path) -> None:
    folder = tmp_path / "$(touch pwned)"
    source = folder / f"{HOSTILE}.mkv"
    source.parent.mkdir()
    source.write_bytes(clip.read_bytes())
    output = folder / "-o out $(id) 'quoted'\nnewline.mkv"
    argv = build_argv(handbrake, source, output, preset="", extra_args=FAST)
    progress: list[Progress] = []
    result = await run_encode(argv, on_progress=progress.append)
    assert result.returncode == 0, result.stderr_text
    assert progress and progress[-1].percent > 90
    assert output.stat().st_size > 0
    probe = await ffprobe(output)
    assert probe.ok, probe.error
    assert probe.width == 320 and probe.height == 180
    assert probe.duration_s is not None and abs(probe.duration_s - 2.0) < 0.5
    assert sorted(p.name for p in folder.iterdir()) == sorted([source.name, output.name])
    assert not list(tmp_path.rglob("pwned"))
    assert not Path("pwned").exists()


@pytest.mark.anyio
async def test_encode_with_an_imported_preset_file(tmp_path: Path, handbrake: str, clip: Path) -> None:
    presets = tmp_path / "my presets.json"
    # The exported preset scales to 160x90, which no built-in preset would do to a 320x180 source.
    export_argv = [handbrake, "--preset", "Very Fast 480p30", *FAST[:6], "-w", "160", "-l", "90"]
    export_argv += ["--preset-export", "Tiny Test", "--preset-export-file", str(presets)]
    export = await run_tool(export_argv)
    assert export.returncode == 0 and presets.stat().st_size > 0
    output = tmp_path / "out.mkv"
    argv = build_argv(handbrake, clip, output, preset="Tiny Test", preset_import_file=str(presets))
    result = await run_encode(argv)
    assert result.returncode == 0, result.stderr_text
    probe = await ffprobe(output)
    assert (probe.width, probe.height) == (160, 90)


@pytest.mark.anyio
async def test_cancelling_an_encode_interrupts_handbrake(tmp_path: Path, handbrake: str) -> None:
    source = make_clip(tmp_path / "src.mkv", seconds=10, width=640, height=360)
    argv = build_argv(handbrake, source, tmp_path / "out.mkv", preset="", extra_args=["-e", "x264", "-q", "20"])
    handles: list[ProcessHandle] = []
    with anyio.CancelScope() as scope:
        await run_encode(argv, on_progress=lambda p: scope.cancel(), on_start=handles.append, grace_s=10)
    assert scope.cancelled_caught
    handle = handles[0]
    assert handle.killed_by == "cancel"
    # SIGINT: HandBrake ends on its own (rc 1) instead of dying on the spot or needing SIGKILL.
    assert handle.returncode == 1
    assert not Path(f"/proc/{handle.pid}").exists()


# ---------------------------------------------------------------------------------------------------- failures


async def _failing_encode(handbrake: str, source: Path, output: Path, preset: str = "") -> JobError:
    result = await run_encode(build_argv(handbrake, source, output, preset=preset, extra_args=FAST))
    assert result.returncode != 0
    return classify_failure(result)


@pytest.mark.anyio
async def test_classify_zero_byte_input(tmp_path: Path, handbrake: str) -> None:
    empty = tmp_path / "empty.mkv"
    empty.touch()
    error = await _failing_encode(handbrake, empty, tmp_path / "out.mkv")
    assert error.permanent
    assert str(error) == f"the input file {empty} is empty (0 bytes) (HandBrakeCLI: No title found.)"


@pytest.mark.anyio
async def test_classify_text_file_and_missing_input(tmp_path: Path, handbrake: str) -> None:
    text = tmp_path / "not a video.mkv"
    text.write_text("this is not a video\n" * 50)
    error = await _failing_encode(handbrake, text, tmp_path / "out.mkv")
    assert error.permanent
    assert str(error).startswith(f"HandBrakeCLI cannot decode {text}: it is not a video it can read")
    assert str(error).endswith("(HandBrakeCLI: No title found.)")
    missing = await _failing_encode(handbrake, tmp_path / "gone.mkv", tmp_path / "out.mkv")
    assert missing.permanent
    assert str(missing).startswith(f"the input file {tmp_path / 'gone.mkv'} does not exist")


@pytest.mark.anyio
async def test_classify_with_the_stderr_tail_keeps_the_reason_as_the_first_line(tmp_path: Path, handbrake: str) -> None:
    """``tail_lines``: the one-line reason, then HandBrakeCLI's own last stderr lines, one per line (blank ones
    dropped), so a list showing only the first line stays clear and the job's error still says what the tool said."""
    text = tmp_path / "not a video.mkv"
    text.write_text("this is not a video\n" * 50)
    result = await run_encode(build_argv(handbrake, text, tmp_path / "out.mkv", preset="", extra_args=FAST))
    error = classify_failure(result, tail_lines=5)
    assert error.permanent
    reason, heading, *tail = str(error).split("\n")
    assert reason == str(classify_failure(result))
    assert reason.endswith("(HandBrakeCLI: No title found.)")
    expected = [line.rstrip() for line in result.stderr_tail if line.strip()][-5:]
    assert len(expected) == 5
    assert (heading, tail) == ("HandBrakeCLI stderr, last 5 lines:", expected)
    assert any("No title found" in line for line in tail)
    quiet = ToolResult(("HandBrakeCLI", "-i", "/lib/in.mkv"), 5, (), ("", "   "), 1.0)
    assert str(classify_failure(quiet, tail_lines=50)) == str(classify_failure(quiet)), "no tail, no heading"


@pytest.mark.anyio
async def test_classify_missing_output_folder(tmp_path: Path, handbrake: str, clip: Path) -> None:
    output = tmp_path / "no such folder" / "out.mkv"
    error = await _failing_encode(handbrake, clip, output)
    assert error.permanent
    message = str(error)
    assert message.startswith(f"HandBrakeCLI cannot write the output file {output}: No such file or directory")
    assert "Could not write to indicated output file" in message


@pytest.mark.anyio
async def test_classify_unknown_preset(tmp_path: Path, handbrake: str, clip: Path) -> None:
    # "Invalid preset" is followed by hundreds of lines of preset list: the kept lines still have it.
    error = await _failing_encode(handbrake, clip, tmp_path / "out.mkv", preset="No Such Preset")
    assert error.permanent
    assert str(error) == (
        "HandBrakeCLI does not know the preset 'No Such Preset' (see HandBrakeCLI --preset-list) "
        "(HandBrakeCLI: Invalid preset No Such Preset)"
    )


def _result(returncode: int, stderr: tuple[str, ...], *, killed_by: str | None = None) -> ToolResult:
    argv = ("HandBrakeCLI", "-i", "/lib/in.mkv", "-o", "/work/out.mkv", "--preset", "P")
    kept = tuple(line for line in stderr if "ERROR:" in line or "No space" in line)
    return ToolResult(argv, returncode, (), stderr, 1.0, killed_by, kept)


def test_classify_disk_full_is_transient() -> None:
    line = "ERROR: avformatMux: track 0, av_interleaved_write_frame failed with error 'No space left on device'"
    error = classify_failure(
        _result(4, (line, "[14:00:00] libhb: work result = 4", "Encode failed (error 4).", "HandBrake has exited."))
    )
    assert not error.permanent
    assert str(error) == f"disk full while writing /work/out.mkv (HandBrakeCLI: {line})"


def test_classify_signals_and_our_own_kills() -> None:
    crashed = classify_failure(_result(-signal.SIGSEGV, ("[14:00:00] work: something",)))
    assert not crashed.permanent
    assert str(crashed) == (
        "HandBrakeCLI crashed (signal 11, SIGSEGV) while encoding /lib/in.mkv "
        "(HandBrakeCLI: [14:00:00] work: something)"
    )
    stalled = classify_failure(_result(-signal.SIGTERM, (), killed_by="stall"))
    assert not stalled.permanent
    assert str(stalled) == "HandBrakeCLI was stopped by amphigory (stall) while encoding /lib/in.mkv"
    interrupted = classify_failure(_result(1, ("Signal 2 received, terminating - do it again in case it gets stuck",)))
    assert not interrupted.permanent
    assert "interrupted" in str(interrupted)
    unknown = classify_failure(_result(5, ("HandBrake has exited.",)))
    assert not unknown.permanent
    assert str(unknown) == "HandBrakeCLI failed while reading /lib/in.mkv (error 5)"


def test_classify_write_errors_name_the_errno() -> None:
    line = (
        "ERROR: avio_open2 failed, errno -30: Could not write to indicated output file. "
        "Please check destination path and file permissions"
    )
    error = classify_failure(_result(3, (line, "Encode failed (error 3).", "HandBrake has exited.")))
    assert error.permanent
    assert str(error).startswith("HandBrakeCLI cannot write the output file /work/out.mkv: Read-only file system (")
