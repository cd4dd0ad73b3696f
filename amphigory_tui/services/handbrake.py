"""HandBrakeCLI: choose a preset, build a safe argv, parse progress, turn a failure into one clear sentence.

Facts this module relies on (measured with HandBrakeCLI 1.6.1, see TOOLS.md §3–4): progress records go to
stdout separated by ``\\r`` only; ``--json`` prints multi-line ``Progress: {`` … ``}`` blocks instead, with
libdvdread banners interleaved; exit codes follow libhb (0 done, 1 canceled, 2 bad input, 3 cannot open the
output, 4 write/mux error, 5 read error); SIGINT finalises the partial file while SIGTERM leaves 0 bytes.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from amphigory_tui.config import TranscodeSettings
from amphigory_tui.domain.errors import JobError
from amphigory_tui.domain.jobs import Progress
from amphigory_tui.services.proc import LineCallback, ProcessHandle, ToolResult, run_tool

__all__ = [
    "FAILURE_LINES",
    "ProgressParser",
    "build_argv",
    "classify_failure",
    "pick_preset",
    "run_encode",
]

_CONTAINERS = {"mkv": "av_mkv", "mp4": "av_mp4"}

# Tiers: 0 = SD, 1 = 720p, 2 = 1080p, 3 = 2160p. A source is in the highest tier that either its line count
# (short side) or its width (long side) reaches, so letterboxed "scope" films land where their width says.
_LINE_LIMITS = (576, 720, 1088)  # 1088: H.264 1080p is often coded 1920x1088
_WIDTH_LIMITS = (1050, 1300, 2100)  # 1024x576 wide PAL is SD; 2048 DCI 2K is 1080p class


def pick_preset(width: int | None, height: int | None, transcode_settings: TranscodeSettings) -> str:
    """The configured preset for a source of ``width`` × ``height``.

    Rule: take the short side as the line count and the long side as the width (portrait video counts like
    landscape), and give each a tier: lines ≤ 576 SD, ≤ 720 720p, ≤ 1088 1080p, more 2160p; width ≤ 1050 SD,
    ≤ 1300 720p, ≤ 2100 1080p, more 2160p. The higher tier wins, so 1920×800 (scope) is 1080p, 1280×536 is
    720p, 720×576 and 854×480 are SD, 2048×858 is 1080p and 3840×1600 is 2160p. An unknown size gets the
    1080p preset (HandBrake presets never upscale, so it is safe for smaller sources too).
    """
    t = transcode_settings
    presets = (t.preset_sd, t.preset_720p, t.preset_1080p, t.preset_2160p)
    if not width or not height or width <= 0 or height <= 0:
        return presets[2]
    long_side, short_side = max(width, height), min(width, height)
    by_lines = next((i for i, limit in enumerate(_LINE_LIMITS) if short_side <= limit), 3)
    by_width = next((i for i, limit in enumerate(_WIDTH_LIMITS) if long_side <= limit), 3)
    return presets[max(by_lines, by_width)]


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name the same file (symlinks and hard links included)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def build_argv(
    handbrake: str,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    preset: str,
    preset_import_file: str = "",
    extra_args: Sequence[str] = (),
    container: str = "mkv",
) -> list[str]:
    """The HandBrakeCLI argument list for one encode (never a shell string).

    Paths are made absolute, so a file named ``-i danger.mkv`` can never be read as an option. Extra
    arguments come after the preset so they override it; an empty ``preset`` means HandBrake's own
    default settings (useful with ``extra_args`` alone). Raises ``JobError(permanent=True)`` when the output
    is the input (HandBrakeCLI would silently destroy it) or the container is unknown.
    """
    src = os.path.abspath(os.fspath(input_path))
    dst = os.path.abspath(os.fspath(output_path))
    if _same_file(src, dst):
        raise JobError(f"refusing to encode {src} onto itself: the output path is the input file", permanent=True)
    fmt = _CONTAINERS.get(container)
    if fmt is None:
        raise JobError(
            f"unknown output container {container!r} for {src}; allowed: {', '.join(_CONTAINERS)}", permanent=True
        )
    argv = [handbrake]
    if preset_import_file:
        argv += ["--preset-import-file", os.path.abspath(preset_import_file)]
    argv += ["-i", src, "-o", dst]
    if preset:
        argv += ["--preset", preset]
    argv += ["-f", fmt]
    argv += list(extra_args)
    return argv


_ENCODING = re.compile(
    r"Encoding: task (\d+) of (\d+), ([\d.]+) %"
    r"(?: \(([\d.]+) fps, avg ([\d.]+) fps, ETA (\d+)h(\d\d)m(\d\d)s\))?"
)
_JSON_START = re.compile(r"^(Version|Progress|JSON Title Set): \{$")


class ProgressParser:
    """Feed it HandBrakeCLI output lines; it returns a ``Progress`` whenever a line reports one.

    Understands the default ``Encoding: task N of M, P % (F fps, avg A fps, ETA HHhMMmSSs)`` records and the
    ``--json`` ``Progress: {`` … ``}`` blocks; every other line is ignored. With M tasks (2-pass encodes) the
    percent is overall: ``((N-1) + P/100) / M``; the ETA and fps are those of the current pass.
    """

    def __init__(self) -> None:
        self.last: Progress | None = None
        """The most recent progress parsed."""
        self.task: int = 0
        """The current task (pass) number, 1-based; 0 before the first record."""
        self.task_count: int = 0
        """How many tasks (passes) the encode has."""
        self.work_done_error: int | None = None
        """``WorkDone.Error`` of a ``--json`` run (equals the exit code), once seen."""
        self._block: list[str] | None = None
        self._block_kind = ""

    def feed(self, line: str) -> Progress | None:
        """Parse one line; return the new progress, or None when the line carries none."""
        if self._block is not None:
            return self._feed_block(line)
        if "Encoding: task" in line:
            return self._feed_record(line)
        if line.endswith(": {") and _JSON_START.match(line):
            self._block = ["{"]
            self._block_kind = line.split(":", 1)[0]
        return None

    def _feed_record(self, line: str) -> Progress | None:
        match = _ENCODING.search(line)
        if match is None:
            return None
        task, count, pct, fps, avg, hh, mm, ss = match.groups()
        eta = int(hh) * 3600 + int(mm) * 60 + int(ss) if hh is not None else None
        return self._update(
            int(task),
            int(count),
            float(pct) / 100.0,
            float(fps) if fps is not None else None,
            float(avg) if avg is not None else None,
            float(eta) if eta is not None else None,
        )

    def _feed_block(self, line: str) -> Progress | None:
        assert self._block is not None
        # Only lines that belong to the pretty-printed JSON are kept: libdvdread writes banners to stdout
        # between and around the blocks.
        stripped = line.strip()
        if line.startswith((" ", "\t")) or stripped in ("{", "}", "},", "]", "],"):
            self._block.append(line)
        if line != "}":
            return None
        text, kind = "\n".join(self._block), self._block_kind
        self._block, self._block_kind = None, ""
        if kind != "Progress":
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return self._from_json(data) if isinstance(data, dict) else None

    def _from_json(self, data: dict[str, Any]) -> Progress | None:
        state = data.get("State")
        if state == "WORKING":
            work = data.get("Working")
            if not isinstance(work, dict):
                return None
            try:
                task = int(work.get("Pass", 1))
                count = int(work.get("PassCount", 1))
                fraction = float(work.get("Progress", 0.0))
                known = int(work.get("Hours", -1)) >= 0
                fps = float(work.get("Rate", 0.0))
                avg = float(work.get("RateAvg", 0.0))
                eta = float(work.get("ETASeconds", 0))
            except (TypeError, ValueError):
                return None
            # Until HandBrake has measured a rate its Hours/Minutes/Seconds are -1 and Rate is 0.
            return self._update(
                task, count, fraction, fps if known else None, avg if known else None, eta if known else None
            )
        if state == "WORKDONE":
            done = data.get("WorkDone")
            if isinstance(done, dict) and isinstance(done.get("Error"), int):
                self.work_done_error = done["Error"]
                if done["Error"] == 0:
                    self.last = Progress(percent=100.0)
                    return self.last
        return None

    def _update(
        self, task: int, count: int, fraction: float, fps: float | None, avg: float | None, eta: float | None
    ) -> Progress:
        count = max(count, 1)
        task = min(max(task, 1), count)
        fraction = min(max(fraction, 0.0), 1.0)
        self.task, self.task_count = task, count
        percent = round(((task - 1) + fraction) / count * 100.0, 2)
        self.last = Progress(percent=percent, fps=fps, avg_fps=avg, eta_s=eta)
        return self.last


# "ERROR:" only at the start of a line (or after a timestamp): "udfread ERROR: ECMA 167…" is printed on every
# run with a plain file as input and means nothing.
_ERROR_LINE = r"(?:^|\] )ERROR:"
FAILURE_LINES = re.compile(
    _ERROR_LINE + r"|No title found|Invalid preset|No space left|Encode failed|Signal \d+ received"
    r"|Missing \w+ (?:device|file)"
)
"""HandBrakeCLI lines worth keeping for ``classify_failure`` even when they scroll out of the tail."""

# Lines HandBrakeCLI prints on every run, which say nothing about a failure.
_NOISE = ("HandBrake has exited.", "Cannot load libnvidia-encode.so.1")
_KEY_LINES = (
    re.compile("No space left"),
    re.compile("Invalid preset"),
    re.compile("No title found"),
    re.compile(_ERROR_LINE),
    re.compile("Encode failed"),
)
_ERRNO = re.compile(r"errno (-?\d+)")


def _argv_value(argv: Sequence[str], *names: str) -> str | None:
    """The value following the first of ``names`` in ``argv``."""
    for i, arg in enumerate(argv[:-1]):
        if arg in names:
            return argv[i + 1]
    return None


def _key_line(result: ToolResult) -> str:
    """The stderr line that best explains a failure: a known message, else the last meaningful line."""
    lines = [ln.strip() for ln in (*result.kept_lines, *result.stderr_tail)]
    meaningful = [ln for ln in lines if ln and ln not in _NOISE]
    for pattern in _KEY_LINES:
        for line in reversed(meaningful):
            if pattern.search(line):
                return line
    return meaningful[-1] if meaningful else ""


def classify_failure(result: ToolResult, *, tail_lines: int = 0) -> JobError:
    """One clear sentence about why an encode failed, and whether a retry can help (``permanent``).

    With ``tail_lines``, the last that many non-blank stderr lines follow the sentence, one per line: the first line
    stays the reason (what a one-line list shows), the rest is what HandBrakeCLI itself said.
    """
    error = _classify(result)
    lines = [ln.rstrip() for ln in result.stderr_tail if ln.strip()][-tail_lines:] if tail_lines > 0 else []
    if not lines:
        return error
    tail = "\n".join(lines)
    what = "line" if len(lines) == 1 else f"{len(lines)} lines"
    return JobError(f"{error}\nHandBrakeCLI stderr, last {what}:\n{tail}", permanent=error.permanent)


def _classify(result: ToolResult) -> JobError:
    """``classify_failure``'s one sentence."""
    source = _argv_value(result.argv, "-i", "--input") or "the input"
    output = _argv_value(result.argv, "-o", "--output") or "the output"
    line = _key_line(result)
    text = "\n".join((*result.kept_lines, *result.stderr_tail))
    detail = f" (HandBrakeCLI: {line})" if line else ""
    rc = result.returncode
    if result.killed_by is not None:
        return JobError(f"HandBrakeCLI was stopped by amphigory ({result.killed_by}) while encoding {source}")
    if rc < 0:
        sig = -rc
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = "unknown signal"
        return JobError(f"HandBrakeCLI crashed (signal {sig}, {name}) while encoding {source}{detail}")
    if "Invalid preset" in text:
        preset = _argv_value(result.argv, "--preset", "-Z") or "?"
        return JobError(
            f"HandBrakeCLI does not know the preset {preset!r} (see HandBrakeCLI --preset-list){detail}",
            permanent=True,
        )
    if rc == 2 or "No title found" in text:
        return JobError(_unreadable_input(source) + detail, permanent=True)
    if rc == 3:
        match = _ERRNO.search(line)
        why = os.strerror(abs(int(match.group(1)))) if match and int(match.group(1)) else ""
        reason = f": {why}" if why else ": its folder is missing, read-only or not writable"
        return JobError(f"HandBrakeCLI cannot write the output file {output}{reason}{detail}", permanent=True)
    if "No space left on device" in text:
        return JobError(f"disk full while writing {output}{detail}")
    if rc == 4:
        return JobError(f"HandBrakeCLI failed while writing {output} (error 4){detail}")
    if rc == 5:
        return JobError(f"HandBrakeCLI failed while reading {source} (error 5){detail}")
    if rc == 1:
        return JobError(f"HandBrakeCLI was interrupted (error 1, canceled) while encoding {source}{detail}")
    if rc == 0 and "Missing" in line:
        return JobError(f"HandBrakeCLI was called without an input or output{detail}", permanent=True)
    return JobError(f"HandBrakeCLI exited with code {rc} while encoding {source}{detail}")


def _unreadable_input(source: str) -> str:
    """Why HandBrakeCLI found no title in ``source``, in words."""
    path = Path(source)
    try:
        size = path.stat().st_size if path.is_file() else None
    except OSError:
        size = None
    if not path.exists():
        return f"the input file {source} does not exist"
    if size == 0:
        return f"the input file {source} is empty (0 bytes)"
    return f"HandBrakeCLI cannot decode {source}: it is not a video it can read, or it is damaged"


async def run_encode(
    argv: Sequence[str],
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[ProcessHandle], None] | None = None,
    on_line: LineCallback | None = None,
    grace_s: float = 8.0,
    cancel_signal: int = signal.SIGINT,
) -> ToolResult:
    """Run a HandBrakeCLI argv (from ``build_argv``), reporting each parsed ``Progress`` to ``on_progress``.

    Cancellation sends SIGINT first (HandBrake then exits within a second; SIGTERM would kill it instantly),
    SIGKILL after ``grace_s``. Lines that explain failures are kept for ``classify_failure``. The caller
    still checks the output: rc 0 does not prove success (truncated input, disk full at 5 MiB steps).
    """
    parser = ProgressParser()

    def _on_line(stream: str, line: str) -> None:
        if on_line is not None:
            on_line(stream, line)
        if stream == "stdout" and on_progress is not None:
            progress = parser.feed(line)
            if progress is not None:
                on_progress(progress)

    return await run_tool(
        argv,
        on_line=_on_line,
        on_start=on_start,
        grace_s=grace_s,
        cancel_signal=cancel_signal,
        keep_pattern=FAILURE_LINES,
    )
