"""ffprobe → ``ProbeResult``, with a clear ``error`` for files that are empty, not media, unreadable or cut short.

A truncated file looks healthy to most tools (ffprobe's duration comes from the header); only counting the
packets that are really there (``-count_packets``) shows that half of the frames are missing (TOOLS.md §2).

``FfprobeProber`` is the scanner's fallback when the PyAV probe pool is unavailable: one ffprobe process per file
(about 100 ms each instead of ~1.5 ms), a few at a time, with the same names for codecs and containers.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import replace
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal

from amphigory_tui.domain.errors import ToolNotFound
from amphigory_tui.domain.media import AudioStream, ProbeResult, SubtitleStream
from amphigory_tui.services.proc import resolve_tool, run_quick, run_tool
from amphigory_tui.services.rules import canonical_codec, canonical_container

__all__ = ["FfprobeProber", "ffprobe", "parse_ffprobe_json", "tool_version"]

# Evidence in ffprobe's stderr that the file ends before its header says it should.
_CUT_SHORT = re.compile(r"ended prematurely|[Tt]runcat|partial file|moov atom not found|end of file", re.ASCII)
# Without such evidence a shortfall must be large: soft-telecined MPEG-2 (DVD rips) legitimately has 4 coded
# frames for every 5 the frame rate promises, i.e. 80 % of the expected packets.
_SILENT_SHORTFALL = 0.75


async def ffprobe(
    path: str | os.PathLike[str],
    *,
    ffprobe: str = "ffprobe",
    timeout_s: float = 30.0,
    count_packets: bool = False,
    canonical_names: bool = False,
) -> ProbeResult:
    """Probe one file; problems with the file come back as ``ProbeResult.error``, never as an exception.

    ``count_packets`` reads the whole file (slower, I/O bound) to detect truncation. ``canonical_names`` names
    codecs and the container as the PyAV probe does (``rules.canonical_codec`` / ``canonical_container``), so
    scanner rows do not depend on which prober made them. Raises ``ToolNotFound`` only when ffprobe is missing.
    """
    target = os.path.abspath(os.fspath(path))
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return ProbeResult(error="the file does not exist")
    except OSError as exc:
        return ProbeResult(error=f"the file cannot be read ({exc.strerror or exc})")
    if not stat.S_ISREG(info.st_mode):
        return ProbeResult(error="not a regular file")
    if info.st_size == 0:
        return ProbeResult(error="empty file (0 bytes)")
    exe = resolve_tool(ffprobe, package_hint="ffmpeg")
    argv = [exe, "-v", "error", "-hide_banner", "-print_format", "json", "-show_format", "-show_streams"]
    if count_packets:
        argv.append("-count_packets")
    # "file:" makes ffprobe take the rest literally: no protocol prefix ("http:"), no option ("-i").
    argv.append("file:" + target)
    stdout: list[str] = []

    def on_line(stream: str, line: str) -> None:
        if stream == "stdout":
            stdout.append(line)

    result = None
    with anyio.move_on_after(timeout_s):
        result = await run_tool(argv, on_line=on_line, grace_s=1.0, tail_lines=20)
    if result is None:
        return ProbeResult(error=f"ffprobe did not finish within {timeout_s:g} s")
    messages = [_strip_prefix(line, target) for line in result.stderr_tail]
    if result.returncode != 0:
        return ProbeResult(error=_failure_reason(result.returncode, messages))
    try:
        data = json.loads("\n".join(stdout))
    except ValueError:
        return ProbeResult(error="ffprobe printed output that is not JSON")
    if not isinstance(data, dict):
        return ProbeResult(error="ffprobe printed output that is not JSON")
    probe = parse_ffprobe_json(data, warnings=messages)
    return _canonical(probe, data, target) if canonical_names else probe


def _canonical(result: ProbeResult, data: Mapping[str, Any], path: str) -> ProbeResult:
    """``result`` with the PyAV probe's names: canonical codecs, the container narrowed by the extension."""
    fmt = data.get("format")
    format_name = fmt.get("format_name") if isinstance(fmt, dict) else None
    return replace(
        result,
        container=canonical_container(format_name, path) if isinstance(format_name, str) else result.container,
        video_codec=canonical_codec(result.video_codec) if result.video_codec else None,
        audio=tuple(replace(a, codec=canonical_codec(a.codec) if a.codec else None) for a in result.audio),
        subtitles=tuple(replace(t, codec=canonical_codec(t.codec) if t.codec else None) for t in result.subtitles),
    )


class FfprobeProber:
    """The scanner's ``Prober`` without PyAV: ``workers`` ffprobe processes at a time, through ``run_tool``.

    Each ``probe_many`` call runs an event loop in a helper thread (a blocking portal), so the scanner's thread
    stays synchronous. ``truncation`` (``probe.container_truncation``) adds the cheap structure check that
    ffprobe, without reading the whole file, cannot do.
    """

    def __init__(
        self,
        workers: int,
        timeout_s: float = 30.0,
        *,
        ffprobe: str = "ffprobe",
        truncation: Callable[[str], str | None] | None = None,
    ) -> None:
        self.size = max(1, workers)
        self.timeout_s = timeout_s
        self.exe = resolve_tool(ffprobe, package_hint="ffmpeg")  # a missing ffprobe fails now, not once per file
        self._truncation = truncation

    def close(self) -> None:
        """Nothing to stop: every ffprobe process ends with its ``probe_many`` call."""

    async def _one(self, path: str) -> ProbeResult:
        result = await ffprobe(path, ffprobe=self.exe, timeout_s=self.timeout_s, canonical_names=True)
        if result.error is None and self._truncation is not None:
            cut = self._truncation(path)  # a few 16-byte reads: not worth a thread
            if cut is not None:
                return replace(result, error=cut)
        return result

    def probe_many(
        self, paths: Iterable[str], cancel: threading.Event | None = None
    ) -> Iterator[tuple[str, ProbeResult]]:
        """Yield ``(path, result)`` in completion order; once ``cancel`` is set, stop within ~0.1 s.

        Files still in flight at a cancel get no result; their ffprobe processes are killed (``run_tool``).
        """
        source = iter(paths)
        exhausted = False
        pending: dict[Future[ProbeResult], str] = {}
        with start_blocking_portal() as portal:
            try:
                while True:
                    if cancel is not None and cancel.is_set():
                        return
                    while not exhausted and len(pending) < self.size:
                        path = next(source, None)
                        if path is None:
                            exhausted = True
                        else:
                            pending[portal.start_task_soon(self._one, path)] = path
                    if not pending:
                        return
                    done, _ = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield pending.pop(future), future.result()
            finally:
                for future in pending:
                    future.cancel()  # cancels the task: run_tool stops its process group


def _strip_prefix(line: str, target: str) -> str:
    """ffprobe's message without the ``file:<path>: `` it starts with."""
    prefix = f"file:{target}: "
    return line[len(prefix) :] if line.startswith(prefix) else line


def _failure_reason(returncode: int, messages: Sequence[str]) -> str:
    """Why ffprobe failed, in words, from its messages (the last one, unless an earlier one says more)."""
    last = messages[-1].strip() if messages else ""
    if returncode < 0:
        return f"ffprobe was killed by signal {-returncode}"
    if any("moov atom not found" in message for message in messages):
        return "truncated or damaged MP4/MOV file (moov atom not found)"
    if "Invalid data found" in last:
        return f"not a media file ffprobe can read ({last})"
    if "No such file" in last:
        return "the file does not exist"
    if "Permission denied" in last:
        return "the file cannot be read (Permission denied)"
    return f"ffprobe failed with code {returncode}" + (f" ({last})" if last else "")


def _tag(entry: Mapping[str, Any], key: str) -> str | None:
    """A tag value, case-insensitively (``language``, ``LANGUAGE`` and ``Language`` all occur)."""
    tags = entry.get("tags")
    if not isinstance(tags, dict):
        return None
    for name, value in tags.items():
        if isinstance(name, str) and name.lower() == key and isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _flag(entry: Mapping[str, Any], key: str) -> bool:
    disposition = entry.get("disposition")
    return isinstance(disposition, dict) and bool(disposition.get(key))


def _int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _rate(value: Any) -> float | None:
    """``"24000/1001"`` → 23.976; None for ``"0/0"`` and junk."""
    if not isinstance(value, str) or "/" not in value:
        return None
    num, _, den = value.partition("/")
    n, d = _float(num), _float(den)
    if n is None or d is None or n <= 0 or d <= 0:
        return None
    return n / d


def _clock(value: Any) -> float | None:
    """``"01:02:03.500000000"`` (Matroska's DURATION tag) → seconds."""
    if not isinstance(value, str):
        return None
    parts = value.strip().split(":")
    if len(parts) != 3:
        return None
    h, m, s = (_float(p) for p in parts)
    if h is None or m is None or s is None:
        return None
    return h * 3600 + m * 60 + s


def _bit_depth(stream: Mapping[str, Any]) -> int | None:
    raw = _int(stream.get("bits_per_raw_sample"))
    if raw and raw > 0:
        return raw
    pix_fmt = stream.get("pix_fmt")
    if not isinstance(pix_fmt, str) or not pix_fmt:
        return None
    match = re.search(r"p(\d{2})(?:le|be)?$", pix_fmt)
    return int(match.group(1)) if match else 8


def _stream_duration(stream: Mapping[str, Any]) -> float | None:
    seconds = _float(stream.get("duration"))
    return seconds if seconds is not None else _clock(_tag(stream, "duration"))


def parse_ffprobe_json(data: Mapping[str, Any], *, warnings: Sequence[str] = ()) -> ProbeResult:
    """Turn ffprobe's ``-show_format -show_streams`` JSON into a ``ProbeResult`` (pure).

    With ``-count_packets`` output (``nb_read_packets``) a file whose video stream holds clearly fewer
    packets than duration × frame rate is reported as truncated; ``warnings`` (ffprobe's stderr lines) tell
    whether ffprobe itself noticed the file ending early, which lowers the shortfall needed.
    """
    fmt = data.get("format")
    fmt = fmt if isinstance(fmt, dict) else {}
    raw_streams = data.get("streams")
    streams = [s for s in raw_streams if isinstance(s, dict)] if isinstance(raw_streams, list) else []
    if not streams:
        return ProbeResult(error="no audio or video streams found")
    container = str(fmt["format_name"]).split(",")[0] if fmt.get("format_name") else None
    duration = _float(fmt.get("duration"))
    # Cover art is stored as a one-frame "video" stream; it is not the video.
    videos = [s for s in streams if s.get("codec_type") == "video" and not _flag(s, "attached_pic")]
    video = videos[0] if videos else None
    if duration is None and video is not None:
        duration = _stream_duration(video)
    bitrate = _int(fmt.get("bit_rate"))
    size = _int(fmt.get("size"))
    if bitrate is None and size and duration:
        bitrate = int(size * 8 / duration)
    fps = None
    if video is not None:
        fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    audio = tuple(
        AudioStream(
            index=_int(s.get("index")) or 0,
            codec=s.get("codec_name"),
            language=_tag(s, "language"),
            channels=_int(s.get("channels")),
            channel_layout=s.get("channel_layout"),
            title=_tag(s, "title"),
            default=_flag(s, "default"),
            forced=_flag(s, "forced"),
        )
        for s in streams
        if s.get("codec_type") == "audio"
    )
    subtitles = tuple(
        SubtitleStream(
            index=_int(s.get("index")) or 0,
            codec=s.get("codec_name"),
            language=_tag(s, "language"),
            title=_tag(s, "title"),
            default=_flag(s, "default"),
            forced=_flag(s, "forced"),
        )
        for s in streams
        if s.get("codec_type") == "subtitle"
    )
    error = _truncation(video, duration, fps, warnings) if video else "no video stream (audio or data only)"
    return ProbeResult(
        container=container,
        duration_s=round(duration, 3) if duration is not None else None,
        bitrate_kbps=bitrate // 1000 if bitrate is not None else None,
        video_codec=video.get("codec_name") if video is not None else None,
        width=_int(video.get("width")) if video is not None else None,
        height=_int(video.get("height")) if video is not None else None,
        fps=round(fps, 3) if fps is not None else None,
        pix_fmt=video.get("pix_fmt") if video is not None else None,
        bit_depth=_bit_depth(video) if video is not None else None,
        audio=audio,
        subtitles=subtitles,
        error=error,
    )


def _truncation(
    video: Mapping[str, Any], duration: float | None, fps: float | None, warnings: Sequence[str]
) -> str | None:
    """A "truncated" error when the counted video packets fall clearly short of duration × fps."""
    packets = _int(video.get("nb_read_packets"))
    seconds = _stream_duration(video) or duration
    if packets is None or not seconds or not fps:
        return None
    expected = seconds * fps
    missing = expected - packets
    noticed = any(_CUT_SHORT.search(w) for w in warnings)
    # Under a second (or 2 %) of frames may be missing from any healthy file: rounding, a trailing gap.
    if missing <= max(fps, expected * 0.02):
        return None
    if not noticed and packets >= expected * _SILENT_SHORTFALL:
        return None
    present = packets / fps
    return (
        f"truncated: only {packets} of about {round(expected)} video frames are present "
        f"({present:.1f} s of {seconds:.1f} s)"
    )


def tool_version(argv0: str) -> str | None:
    """The first line of a tool's version output (``-version`` for ff*, else ``--version``); None if unusable."""
    try:
        exe = resolve_tool(argv0)
    except ToolNotFound:
        return None
    name = os.path.basename(exe).lower()
    flag = "-version" if name.startswith("ff") else "--version"
    try:
        result = run_quick([exe, flag], timeout_s=10.0, tail_lines=500)
    except ToolNotFound:
        return None
    if result.returncode != 0 or result.killed_by is not None:
        return None
    for line in result.stdout_tail:
        text = line.strip()
        if text:
            # ffmpeg's first line goes on with a copyright notice; the version is what doctor wants.
            return text.split(" Copyright", 1)[0]
    return None
