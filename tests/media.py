"""Tiny real media files made with ffmpeg at test time (seconds to make, kilobytes on disk)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

FFMPEG = shutil.which("ffmpeg") or "ffmpeg"


def make_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    width: int = 320,
    height: int = 180,
    fps: int = 24,
    vcodec: str = "libx264",
    acodec: str | None = "aac",
    audio_languages: Sequence[str] = ("eng",),
    bitrate: str | None = None,
    extra: Sequence[str] = (),
) -> Path:
    """Write a test-pattern clip with a sine tone per audio language; return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    argv += ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"]
    languages = list(audio_languages) if acodec else []
    for i, _ in enumerate(languages):
        argv += ["-f", "lavfi", "-i", f"sine=frequency={440 + 110 * i}:duration={seconds}"]
    argv += ["-map", "0:v"]
    for i, lang in enumerate(languages):
        argv += ["-map", f"{i + 1}:a", f"-metadata:s:a:{i}", f"language={lang}"]
    argv += ["-c:v", vcodec]
    if vcodec == "libx264":
        argv += ["-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    elif vcodec == "libx265":
        argv += ["-preset", "ultrafast", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p"]
    if bitrate:
        argv += ["-b:v", bitrate, "-minrate", bitrate, "-maxrate", bitrate, "-bufsize", "1M"]
    if languages:
        argv += ["-c:a", acodec or "aac", "-ac", "2"]
    argv += list(extra)
    argv += [f"file:{path}"]
    subprocess.run(argv, check=True, capture_output=True)
    return path


def make_truncated(source: Path, path: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``source`` (a file that still looks healthy to most tools)."""
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * fraction)])
    return path
