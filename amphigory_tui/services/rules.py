"""The transcode rules: a probe result plus the ``[rules]`` settings become a Decision with a reason.

``decide()`` is pure and cheap (no I/O, compiled patterns cached): ``scan --reevaluate`` runs it over every row.
Checks, in order (the first that applies gives the reason):

1. ``excluded by pattern *sample*``: a glob of ``rules.exclude_patterns`` matches the base name or the full path,
   case-insensitively (``*`` also crosses ``/``, so ``*sample*`` excludes a ``Samples/`` folder too).
2. ``below min size 100 MB``: ``size_bytes < rules.min_size_mb`` megabytes (1 MB = 1,000,000 bytes, as file
   managers and HandBrake print them).  These two need no probe, so the scanner may skip probing such files.
3. ``no video stream`` (also when the probe said so), or ``probe error: <why>``: never transcoded.
4. ``already hevc``: the source codec already is ``rules.target_codec`` (names normalised by ``canonical_codec``).
5. ``expected saving 8 % < min 10 %`` when the estimate is below ``rules.min_expected_savings_pct``, else
   ``h264 1080p → hevc, est. −38 %`` and ``should_transcode``.

Savings estimate (from the Go tool's ``EstimateTranscodingSavings``, with its gaps fixed)::

    total_in   = container bitrate (kbps), or size_bytes × 8 / duration when the container does not say
    audio_in   = Σ audio streams: channels × (500 kbps lossless | 250 dts | 96 other lossy), at most 90 % of total
    video_in   = total_in − audio_in           (audio is assumed copied: the estimate stays conservative)
    video_out  = max(video_in × factor(source → target), floor(resolution, fps) × efficiency(target))
    saving %   = ⌊(1 − (audio_in + video_out) / total_in) × 100⌋, never below 0

``factor(source → hevc)`` keeps the Go tool's values: h264 0.65, mpeg2video 0.45, mpeg4 0.55, vp9 0.95, vp8 0.65,
anything unknown 0.60; added: mpeg1video 0.40, vc1/wmv3 0.60, msmpeg4*/wmv1/wmv2 0.55, theora 0.55, intra-frame
codecs (mjpeg, prores, dnxhd, ffv1, rawvideo…) 0.15, av1 1.33.  For another target it is multiplied by the target's
bits relative to HEVC: hevc 1.0, av1 0.75, vp9 1.05, h264 1.54.  The HEVC floor (kbps) replaces the Go tool's
by-width table with the resolution bucket below: 2160p 8000, 1440p 5000, 1080p 3000, 720p 1500, SD 800 ×
pixels / (720 × 480) but at least 200; × 1.5 above 32 fps.  Without any bitrate the saving is unknown: the file is
transcoded with ``saving unknown`` in the reason (the Go tool assumed 30 %).

Resolution bucket: the larger of the width bucket (≥ 3200 → 2160p, ≥ 2240 → 1440p, ≥ 1600 → 1080p, ≥ 1100 → 720p,
else SD) and the height bucket (≥ 1800, ≥ 1260, ≥ 900, ≥ 620), so 1920×800 scope and 1440×1080 anamorphic both count
as 1080p.  SD files are labelled by their height (``480p``, ``576p``).

Priority (0–100, higher first) = resolution points + size points, where resolution points are 2160p 50, 1440p 45,
1080p 40, 720p 25, SD 10, unknown 0 and size points = 50 × clamp(log2(size / 64 MiB) / 10, 0, 1) rounded: 5 points
per doubling from 64 MiB (0) to 64 GiB (50): 1 GiB = 20, 4 GiB = 30, 16 GiB = 40.  Files that are not transcoded get
priority 0.
"""

from __future__ import annotations

import fnmatch
import math
import re
from functools import lru_cache

from amphigory_tui.config import RulesSettings
from amphigory_tui.domain.media import AudioStream, Decision, ProbeResult

NO_VIDEO_STREAM = "no video stream"
"""The probe error (and decision reason) of a file without any video stream."""

_ALIASES: dict[str, str] = {
    "h265": "hevc",
    "hev1": "hevc",
    "hvc1": "hevc",
    "x265": "hevc",
    "libx265": "hevc",
    "avc": "h264",
    "avc1": "h264",
    "x264": "h264",
    "libx264": "h264",
    "mpeg2": "mpeg2video",
    "mpeg1": "mpeg1video",
    "xvid": "mpeg4",
    "divx": "mpeg4",
    "dx50": "mpeg4",
    "fmp4": "mpeg4",
    "vp09": "vp9",
    "libvpx-vp9": "vp9",
    "vp08": "vp8",
    "libvpx": "vp8",
    "av01": "av1",
    "libdav1d": "av1",
    "libaom-av1": "av1",
    "wvc1": "vc1",
}

# Bits the source needs relative to HEVC at equal quality, inverted: output HEVC kbps per source kbps.
_TO_HEVC: dict[str, float] = {
    "h264": 0.65,
    "mpeg2video": 0.45,
    "mpeg1video": 0.40,
    "mpeg4": 0.55,
    "msmpeg4v1": 0.55,
    "msmpeg4v2": 0.55,
    "msmpeg4v3": 0.55,
    "wmv1": 0.55,
    "wmv2": 0.55,
    "wmv3": 0.60,
    "vc1": 0.60,
    "theora": 0.55,
    "vp8": 0.65,
    "vp9": 0.95,
    "av1": 1.33,
    "hevc": 1.0,
    "mjpeg": 0.15,
    "prores": 0.15,
    "dnxhd": 0.15,
    "ffv1": 0.15,
    "huffyuv": 0.15,
    "rawvideo": 0.15,
}
_UNKNOWN_TO_HEVC = 0.60

# Bits the target needs relative to HEVC.
_TARGET_EFFICIENCY: dict[str, float] = {"hevc": 1.0, "av1": 0.75, "vp9": 1.05, "h264": 1.54}

_LOSSLESS_AUDIO = frozenset({"truehd", "mlp", "flac", "alac", "wavpack", "tta", "ape"})

_MIN_SIZE_UNIT = 1_000_000
_SIZE_ZERO_POINTS = 64 * 1024 * 1024


def canonical_codec(name: str | None) -> str | None:
    """The usual ffprobe name of a codec (``h265``/``hvc1`` → ``hevc``, ``avc1`` → ``h264``, ``xvid`` → ``mpeg4``)."""
    if not name:
        return None
    low = name.strip().lower()
    return _ALIASES.get(low, low)


def canonical_container(format_name: str, path: str) -> str:
    """libav's demuxer name, narrowed by the file's extension when it lists several.

    ``matroska,webm`` → ``matroska`` for .mkv and ``webm`` for .webm; ``mov,mp4,m4a,3gp,3g2,mj2`` → ``mp4`` for
    .mp4 and ``mov`` otherwise (.mov, .m4v); ``mpegts``, ``avi``, ``mpeg`` stay as they are.
    """
    names = format_name.split(",")
    dot = path.rfind(".")
    ext = path[dot + 1 :].lower() if dot > path.rfind("/") else ""
    return ext if ext and ext in names else names[0]


# (label, min width, min height, priority points, HEVC floor kbps), largest first.
_BUCKETS: tuple[tuple[str, int, int, int, int], ...] = (
    ("2160p", 3200, 1800, 50, 8000),
    ("1440p", 2240, 1260, 45, 5000),
    ("1080p", 1600, 900, 40, 3000),
    ("720p", 1100, 620, 25, 1500),
)
_SD_POINTS = 10
_SD_FLOOR_KBPS = 800
_SD_REFERENCE_PIXELS = 720 * 480
_SD_MIN_FLOOR_KBPS = 200
_HIGH_FPS = 32.0
_HIGH_FPS_FACTOR = 1.5


def _bucket(width: int | None, height: int | None) -> int:
    """Index into ``_BUCKETS`` (len = SD, -1 = unknown) from the larger of the width and height buckets."""
    w, h = width or 0, height or 0
    if w <= 0 and h <= 0:
        return -1
    for i, (_label, min_w, min_h, _points, _floor) in enumerate(_BUCKETS):
        if w >= min_w or h >= min_h:
            return i
    return len(_BUCKETS)


def resolution_label(width: int | None, height: int | None) -> str | None:
    """``2160p``/``1440p``/``1080p``/``720p``, or ``<height>p`` for SD; None when unknown."""
    b = _bucket(width, height)
    if b < 0:
        return None
    if b < len(_BUCKETS):
        return _BUCKETS[b][0]
    return f"{height or width}p"


def priority(width: int | None, height: int | None, size_bytes: int) -> int:
    """Queue priority 0–100: higher resolution and bigger files first (formula in the module docstring)."""
    b = _bucket(width, height)
    res_points = 0 if b < 0 else (_BUCKETS[b][3] if b < len(_BUCKETS) else _SD_POINTS)
    if size_bytes <= _SIZE_ZERO_POINTS:
        size_points = 0
    else:
        size_points = round(50 * min(1.0, math.log2(size_bytes / _SIZE_ZERO_POINTS) / 10))
    return max(0, min(100, res_points + size_points))


def _floor_kbps(width: int | None, height: int | None, fps: float | None) -> float:
    """The lowest HEVC video bitrate that keeps the quality of a source this size."""
    b = _bucket(width, height)
    if 0 <= b < len(_BUCKETS):
        floor = float(_BUCKETS[b][4])
    else:
        pixels = (width or 0) * (height or 0)
        floor = max(_SD_MIN_FLOOR_KBPS, _SD_FLOOR_KBPS * pixels / _SD_REFERENCE_PIXELS)
    if fps is not None and fps > _HIGH_FPS:
        floor *= _HIGH_FPS_FACTOR
    return floor


def _audio_kbps(streams: tuple[AudioStream, ...]) -> float:
    """A rough bitrate of the audio streams, which are assumed to be copied unchanged."""
    total = 0.0
    for stream in streams:
        codec = canonical_codec(stream.codec) or ""
        channels = stream.channels or 2
        if codec in _LOSSLESS_AUDIO or codec.startswith("pcm_"):
            per_channel = 500.0
        elif codec == "dts":
            per_channel = 250.0
        else:
            per_channel = 96.0
        total += channels * per_channel
    return total


def estimate_savings_pct(probe: ProbeResult, size_bytes: int, target_codec: str = "hevc") -> int | None:
    """Expected size reduction in percent (0–99) when transcoding to ``target_codec``; None without a bitrate."""
    total = float(probe.bitrate_kbps or 0)
    if total <= 0 and probe.duration_s and probe.duration_s > 0 and size_bytes > 0:
        total = size_bytes * 8 / probe.duration_s / 1000
    if total <= 0:
        return None
    target = canonical_codec(target_codec) or "hevc"
    efficiency = _TARGET_EFFICIENCY.get(target, 1.0)
    source = canonical_codec(probe.video_codec) or ""
    factor = _TO_HEVC.get(source, _UNKNOWN_TO_HEVC) * efficiency
    audio = min(_audio_kbps(probe.audio), 0.9 * total)
    video_in = total - audio
    video_out = max(video_in * factor, _floor_kbps(probe.width, probe.height, probe.fps) * efficiency)
    saving = (1.0 - (audio + video_out) / total) * 100.0
    return max(0, math.floor(saving))


@lru_cache(maxsize=64)
def _exclude_matcher(patterns: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Compiled case-insensitive globs (cached: the settings rarely change)."""
    return tuple((p, re.compile(fnmatch.translate(p.lower()))) for p in patterns if p)


def excluded_by(path: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that matches the base name or the full path (case-insensitively), or None."""
    if not patterns:
        return None
    low = path.lower()
    name = low.rsplit("/", 1)[-1]
    for pattern, regex in _exclude_matcher(tuple(patterns)):
        if regex.match(name) or regex.match(low):
            return pattern
    return None


def decide(path: str, size_bytes: int, probe: ProbeResult, rules: RulesSettings) -> Decision:
    """The verdict on one file: whether to transcode it, why, its priority and expected saving."""
    pattern = excluded_by(path, rules.exclude_patterns)
    if pattern is not None:
        return Decision(False, f"excluded by pattern {pattern}")
    if rules.min_size_mb > 0 and size_bytes < rules.min_size_mb * _MIN_SIZE_UNIT:
        return Decision(False, f"below min size {rules.min_size_mb:g} MB")
    if probe.error is not None:
        if probe.error.startswith(NO_VIDEO_STREAM):  # ffprobe.py adds detail: "no video stream (audio only)"
            return Decision(False, NO_VIDEO_STREAM)
        return Decision(False, f"probe error: {probe.error}")
    source = canonical_codec(probe.video_codec)
    if source is None:
        return Decision(False, NO_VIDEO_STREAM)
    target = canonical_codec(rules.target_codec) or "hevc"
    if source == target:
        return Decision(False, f"already {target}")
    label = resolution_label(probe.width, probe.height)
    what = f"{source} {label}" if label else source
    pct = estimate_savings_pct(probe, size_bytes, target)
    prio = priority(probe.width, probe.height, size_bytes)
    if pct is None:
        return Decision(True, f"{what} → {target}, saving unknown", prio, None)
    minimum = rules.min_expected_savings_pct
    if pct < minimum:
        return Decision(False, f"expected saving {pct} % < min {minimum:g} %", 0, pct)
    if pct <= 0:
        return Decision(False, "no expected saving", 0, pct)
    return Decision(True, f"{what} → {target}, est. −{pct} %", prio, pct)
