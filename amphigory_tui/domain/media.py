"""Media files: what a probe found, and what the rules decided."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AudioStream:
    """One audio stream of a media file."""

    index: int
    codec: str | None
    language: str | None = None
    channels: int | None = None
    channel_layout: str | None = None
    title: str | None = None
    default: bool = False
    forced: bool = False


@dataclass(frozen=True, slots=True)
class SubtitleStream:
    """One subtitle stream of a media file."""

    index: int
    codec: str | None
    language: str | None = None
    title: str | None = None
    default: bool = False
    forced: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Facts read from a media file by PyAV or ffprobe; ``error`` is set when it cannot be read."""

    container: str | None = None
    duration_s: float | None = None
    bitrate_kbps: int | None = None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pix_fmt: str | None = None
    bit_depth: int | None = None
    audio: tuple[AudioStream, ...] = ()
    subtitles: tuple[SubtitleStream, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the probe succeeded."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class Decision:
    """The rules' verdict on one file, with a human-readable reason."""

    should_transcode: bool
    reason: str
    priority: int = 0
    est_savings_pct: int | None = None


@dataclass(frozen=True, slots=True)
class MediaFile:
    """A snapshot of one row of ``media_files``."""

    id: int
    path: str
    root: str
    size_bytes: int
    mtime_ns: int
    probe: ProbeResult = field(default_factory=ProbeResult)
    should_transcode: bool = False
    reason: str = ""
    priority: int = 0
    est_savings_pct: int | None = None
    missing: bool = False
    probed_at: float | None = None
    updated_at: float = 0.0

    @property
    def name(self) -> str:
        """The file's base name."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def probe_error(self) -> str | None:
        """Why the file could not be probed, if it could not."""
        return self.probe.error


@dataclass(frozen=True, slots=True)
class LibraryStats:
    """Counts for the Scan tab."""

    files: int
    need_transcoding: int
    already_target: int
    excluded: int
    probe_errors: int
    missing: int
    total_bytes: int
    est_saving_bytes: int
    last_scan_at: float | None
