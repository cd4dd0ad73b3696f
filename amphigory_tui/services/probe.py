"""Fast probing: PyAV in-process (``probe_file``) and a crash-isolated pool of probe processes (``ProbePool``).

Spawning ``ffprobe`` costs about 70–100 ms per file; opening a file with PyAV costs 1–3 ms.  libav runs in our
address space then, so a file that crashes or hangs it must only take down a worker process: ``ProbePool`` keeps a
few long-lived workers (forked from multiprocessing's fork server, which imports av once), replaces a worker that
dies or overruns ``timeout_s``, and records ``probe crashed …`` / ``probe timed out after N s`` for that one file.
Workers answer in small batches, so the parent wakes once per batch, not once per file (on 2 cores the parent's
wake-ups otherwise eat into the second worker); each worker publishes the id and start time of the file it is on in
shared memory, which is how the parent knows whom to blame and when a file overruns.

Truncated files (TOOLS.md §2: a file cut in half still reports its full duration, and most tools say it is fine) are
caught the way mediainfo does it, by comparing the size the container's own structure declares with the file's real
size: the Matroska/WebM Segment size, the MP4/MOV top-level box sizes, the AVI RIFF chunk sizes.  That costs one or a
few 16-byte reads, not a demux of the tail (which for Matroska without an index means reading the whole file).  A
Matroska file written to a pipe has no Segment size but may still carry the source's duration: there the timestamp
of the last block in the file's last 4 MiB is compared with that duration.  MPEG-PS/TS and Ogg need no check:
libavformat measures their duration from the last timestamps in the file.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import resource
import select
import signal
import stat
import struct
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

try:
    import av
    import av.error
    from av.stream import Disposition
    from av.video.format import VideoFormat
except ImportError as exc:  # the scanner falls back to ffprobe; the truncation checks below need no libav
    AV_IMPORT_ERROR: ImportError | None = exc
else:
    AV_IMPORT_ERROR = None

from amphigory_tui.config import ScannerSettings
from amphigory_tui.domain.errors import AmphigoryError
from amphigory_tui.domain.media import AudioStream, ProbeResult, SubtitleStream
from amphigory_tui.services.rules import NO_VIDEO_STREAM, canonical_codec, canonical_container

FAULTS_ENV = "AMPHIGORY_PROBE_FAULTS"
"""Set to ``1`` in the process that creates a ProbePool to arm the test faults below in its workers."""
CRASH_MARKER = "__probe_crash__"
"""With faults armed, a worker kills itself with SIGSEGV on a file whose name contains this."""
HANG_MARKER = "__probe_hang__"
"""With faults armed, a worker sleeps forever on a file whose name contains this."""

# skip_frame=nokey: find_stream_info decodes only key frames (H.264 1080p opens 3–4× faster, same facts);
# threads=1: parallelism comes from the worker processes, not from decoder threads.
_AV_OPTIONS = {"skip_frame": "nokey", "threads": "1"}
_STARTUP_TIMEOUT_S = 20.0
_DEPTH = 16  # requests in flight per worker; a worker answers in batches of half that
_FLUSH_S = 0.05  # but never sits on an answer longer than this (the scanner shows progress)
_READY = "ready"
_MAX_STARTUP_FAILURES = 3
_CLOSE_GRACE_S = 1.0
_CANCEL_SLICE_MS = 100  # with a cancel event, waits for answers are cut into slices this long
_PREFETCH_BYTES = 1 << 20  # a file's container header and first packets: about what a probe reads of it


# --------------------------------------------------------------------------------------------------- probe_file


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1  # pragma: no cover - macOS and Windows have no affinity call


def probe_file(path: str) -> ProbeResult:
    """Read a media file's facts with PyAV; never raises: problems come back as ``ProbeResult(error=…)``."""
    try:
        return _probe(path)
    except Exception as exc:  # one odd file must never stop a scan of 100,000
        return ProbeResult(error=f"probe failed ({type(exc).__name__}: {exc})")


def _probe(path: str) -> ProbeResult:
    """``probe_file`` without the safety net."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (a regular file ignores the flag).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return ProbeResult(error=_os_error(exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ProbeResult(error=f"not a regular file ({_file_kind(st.st_mode)})")
        if st.st_size == 0:
            return ProbeResult(error="empty file (0 bytes)")
        truncated = _truncation(fd, st.st_size)
    except OSError as exc:
        return ProbeResult(error=_os_error(exc))
    finally:
        os.close(fd)
    try:
        # "file:" stops libav from reading a name like "concat:a|b" or "http:x" as a protocol.
        container = av.open("file:" + path, options=_AV_OPTIONS, metadata_errors="replace")
    except av.error.PermissionError:
        return ProbeResult(error="permission denied")
    except av.error.FileNotFoundError:
        return ProbeResult(error="file not found")
    except av.error.FFmpegError as exc:
        return ProbeResult(error=truncated or f"not a media file ({_libav_reason(exc)})")
    except UnicodeError as exc:
        return ProbeResult(error=f"not a media file ({exc})")
    with container:
        return _facts(container, path, truncated)


def _facts(container: Any, path: str, truncated: str | None) -> ProbeResult:
    """Build the ProbeResult of an open PyAV input container."""
    duration = container.duration / 1_000_000 if container.duration else None
    bitrate = round(container.bit_rate / 1000) if container.bit_rate else None
    video: dict[str, Any] = {}
    audio: list[AudioStream] = []
    subtitles: list[SubtitleStream] = []
    for stream in container.streams:
        kind = stream.type
        flags = stream.disposition
        if kind == "video" and not video and not flags & (Disposition.attached_pic | Disposition.still_image):
            video = _video_facts(stream)
        elif kind == "audio":
            cc = stream.codec_context
            layout = getattr(cc, "layout", None)
            audio.append(
                AudioStream(
                    index=stream.index,
                    codec=_codec_name(stream),
                    language=_language(stream),
                    channels=getattr(cc, "channels", None) or None,
                    channel_layout=layout.name if layout is not None else None,
                    title=stream.metadata.get("title"),
                    default=bool(flags & Disposition.default),
                    forced=bool(flags & Disposition.forced),
                )
            )
        elif kind == "subtitle":
            subtitles.append(
                SubtitleStream(
                    index=stream.index,
                    codec=_codec_name(stream),
                    language=_language(stream),
                    title=stream.metadata.get("title"),
                    default=bool(flags & Disposition.default),
                    forced=bool(flags & Disposition.forced),
                )
            )
    error: str | None
    if not video:
        error = truncated or NO_VIDEO_STREAM
    elif video["video_codec"] is None:
        error = truncated or "unsupported video codec (libav has no decoder for it)"
    else:
        error = truncated
    return ProbeResult(
        container=canonical_container(container.format.name, path),
        duration_s=duration,
        bitrate_kbps=bitrate,
        audio=tuple(audio),
        subtitles=tuple(subtitles),
        error=error,
        **video,
    )


# Streams are typed Any below: the stubs say ``codec_context`` is never None, but it is None when the bundled libav
# has no decoder for the codec, and every read through it must survive that.


def _video_facts(stream: Any) -> dict[str, Any]:
    """Codec, size, frame rate, pixel format and bit depth of a video stream."""
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    pix_fmt = getattr(cc, "pix_fmt", None)
    return {
        "video_codec": _codec_name(stream),
        "width": getattr(cc, "width", 0) or None,
        "height": getattr(cc, "height", 0) or None,
        "fps": round(float(rate), 3) if rate else None,
        "pix_fmt": pix_fmt,
        "bit_depth": _bit_depth(pix_fmt),
    }


def _codec_name(stream: Any) -> str | None:
    """ffprobe's codec_name (``mp3``, not the decoder's ``mp3float``), normalised; None without a decoder."""
    if stream.codec_context is None:
        return None
    return canonical_codec(stream.codec_context.codec.canonical_name)


def _language(stream: Any) -> str | None:
    """The stream's language tag, if any."""
    lang = stream.metadata.get("language")
    return str(lang) if lang else None


def _bit_depth(pix_fmt: str | None) -> int | None:
    """Bits per sample of the first component of a pixel format (``yuv420p10le`` → 10)."""
    if not pix_fmt:
        return None
    try:
        return int(VideoFormat(pix_fmt).components[0].bits)
    except Exception:
        return None


def _os_error(exc: OSError) -> str:
    """A short reason for an OS error on the file itself."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "not a regular file (directory)"
    return f"cannot read file ({exc.strerror or exc})"


def _libav_reason(exc: av.error.FFmpegError) -> str:
    """libav's message without the file name it appends (``invalid data found when processing input``)."""
    text = str(exc.strerror or type(exc).__name__)
    return text[:1].lower() + text[1:]


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in a word."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


# --------------------------------------------------------------------------------------------------- truncation

_MKV_MAGIC = b"\x1a\x45\xdf\xa3"
_MP4_BOXES = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"sidx", b"moof", b"uuid", b"pdin"}
)
_MAX_BOXES = 100_000


def _truncation(fd: int, size: int) -> str | None:
    """``truncated: …`` when the container's own structure says the file should be longer, else None."""
    head = os.pread(fd, 16, 0)
    if head.startswith(_MKV_MAGIC):
        return _matroska_truncation(fd, size)
    found: tuple[str, int] | None = None
    if head.startswith(b"RIFF"):
        found = _riff_end(fd, size)
    elif head[4:8] in _MP4_BOXES:
        found = _mp4_end(fd, size)
    return _size_message(size, found)


def container_truncation(path: str) -> str | None:
    """``truncated: …`` when a file is shorter than its own Matroska/MP4/AVI structure declares, else None.

    Reads a few header bytes only and never calls libav: the pipeline runs it on every encode because a full disk
    makes HandBrakeCLI exit 0 with a file cut short whose duration ffprobe still reports in full (added for the
    worker pool's validation stage).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _truncation(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _size_message(size: int, found: tuple[str, int] | None) -> str | None:
    """The ``truncated`` message when a declared end lies past the real end."""
    if found is None or found[1] <= size:
        return None
    kind, declared = found
    return f"truncated: {size:,} of the {declared:,} bytes its {kind} header declares ({size * 100 // declared} %)"


def _vint(buf: bytes, pos: int, *, keep_marker: bool = False) -> tuple[int, int, bool] | None:
    """An EBML variable-size integer at ``pos``: (value, length, all-ones = unknown size); IDs keep the marker."""
    if pos >= len(buf) or buf[pos] == 0:
        return None
    length = 9 - buf[pos].bit_length()
    if pos + length > len(buf):
        return None
    value = buf[pos] if keep_marker else buf[pos] & ((1 << (8 - length)) - 1)
    for byte in buf[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, length, not keep_marker and value == (1 << (7 * length)) - 1


def _element(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """An EBML element header at ``pos``: (id, payload offset in ``buf``, payload size; -1 when unknown)."""
    ident = _vint(buf, pos, keep_marker=True)
    if ident is None or ident[1] > 4:
        return None
    size = _vint(buf, pos + ident[1])
    if size is None:
        return None
    return ident[0], pos + ident[1] + size[1], -1 if size[2] else size[0]


_EBML_SEGMENT = 0x18538067
_EBML_INFO = 0x1549A966
_EBML_TIMESTAMP_SCALE = 0x2AD7B1
_EBML_DURATION = 0x4489
_EBML_CLUSTER = 0x1F43B675
_EBML_CLUSTER_TIMESTAMP = 0xE7
_EBML_CRC32 = 0xBF
_EBML_SIMPLE_BLOCK = 0xA3
_EBML_BLOCK_GROUP = 0xA0
_EBML_BLOCK = 0xA1
_MKV_TAIL_BYTES = 4 * 1024 * 1024
_MKV_SLACK_S = 1.0  # the last block starts up to one frame (or one laced audio block) before the end


def _matroska_truncation(fd: int, size: int) -> str | None:
    """Segment size against the file size; for a segment of unknown size (streamed), the header's duration
    against the timestamp of the last block in the file's last 4 MiB."""
    header = _element(os.pread(fd, 64, 0), 0)
    if header is None or header[2] < 0:
        return None
    pos = header[1] + header[2]
    segment = _element(os.pread(fd, 16, pos), 0)
    if segment is None or segment[0] != _EBML_SEGMENT:
        return None
    data_start = pos + segment[1]
    if segment[2] >= 0:
        return _size_message(size, ("Matroska", data_start + segment[2]))
    info = _matroska_info(fd, data_start)
    if info is None:
        return None
    scale, duration_s = info
    tail_start = max(data_start, size - _MKV_TAIL_BYTES)
    last_s = _matroska_last_block_s(os.pread(fd, size - tail_start, tail_start), scale)
    if last_s is None or last_s >= duration_s - _MKV_SLACK_S:
        return None
    return f"truncated: its Matroska header says {duration_s:.1f} s but the data ends at {last_s:.1f} s"


def _matroska_info(fd: int, data_start: int) -> tuple[int, float] | None:
    """(TimestampScale in ns, Duration in s) from the Segment's Info element, if it has a duration."""
    pos = data_start
    for _ in range(16):  # Info sits among the first few top-level elements (SeekHead, Void, Info)
        found = _element(os.pread(fd, 16, pos), 0)
        if found is None or found[2] < 0 or found[0] == _EBML_CLUSTER:
            return None
        ident, offset, length = found
        if ident != _EBML_INFO:
            pos += offset + length
            continue
        payload = os.pread(fd, min(length, 65536), pos + offset)
        scale, duration = 1_000_000, 0.0
        child = 0
        while (element := _element(payload, child)) is not None and element[2] >= 0:
            cid, start, clen = element
            value = payload[start : start + clen]
            if cid == _EBML_TIMESTAMP_SCALE and value:
                scale = int.from_bytes(value, "big") or scale
            elif cid == _EBML_DURATION and len(value) in (4, 8):
                duration = float(struct.unpack(">f" if len(value) == 4 else ">d", value)[0])
            child = start + clen
        if not duration > 0:
            return None
        return scale, duration * scale / 1e9
    return None


def _matroska_last_block_s(tail: bytes, scale: int) -> float | None:
    """The latest block timestamp (s) in the last Cluster that starts inside ``tail``, if one can be found."""
    search_end = len(tail)
    cluster_id = _EBML_CLUSTER.to_bytes(4, "big")
    while (start := tail.rfind(cluster_id, 0, search_end)) >= 0:
        search_end = start
        cluster = _element(tail, start)
        if cluster is None:
            continue
        first = _element(tail, cluster[1])
        if first is not None and first[0] == _EBML_CRC32:
            first = _element(tail, first[1] + first[2])
        # A real Cluster opens with its Timestamp (after an optional CRC-32); four matching bytes inside
        # compressed video almost never do.
        if first is None or first[0] != _EBML_CLUSTER_TIMESTAMP or not 1 <= first[2] <= 8:
            continue
        base = int.from_bytes(tail[first[1] : first[1] + first[2]], "big")
        latest = base
        pos = first[1] + first[2]
        while (element := _element(tail, pos)) is not None and element[2] >= 0:
            ident, payload, length = element
            block = -1
            if ident == _EBML_SIMPLE_BLOCK:
                block = payload
            elif ident == _EBML_BLOCK_GROUP:
                inner = _element(tail, payload)
                if inner is not None and inner[0] == _EBML_BLOCK:
                    block = inner[1]
            if block >= 0:
                track = _vint(tail, block)
                if track is not None and block + track[1] + 2 <= len(tail):
                    relative = int.from_bytes(tail[block + track[1] : block + track[1] + 2], "big", signed=True)
                    latest = max(latest, base + relative)
            pos = payload + length
        return latest * scale / 1e9
    return None


def _mp4_end(fd: int, size: int) -> tuple[str, int] | None:
    """The end of the first top-level MP4/MOV box that runs past the end of the file, if any."""
    pos = 0
    for _ in range(_MAX_BOXES):
        if pos + 8 > size:
            return None
        hdr = os.pread(fd, 16, pos)
        box_size = int.from_bytes(hdr[:4], "big")
        kind = hdr[4:8]
        if len(kind) < 4 or not all(0x20 <= c < 0x7F for c in kind):
            return None  # not a box: trailing junk, nothing we can judge
        if box_size == 1:
            if len(hdr) < 16:
                return "MP4", pos + 16
            box_size = int.from_bytes(hdr[8:16], "big")
        elif box_size == 0:
            return None  # "extends to the end of the file" by definition
        if box_size < 8:
            return None
        if pos + box_size > size:
            return "MP4", pos + box_size
        pos += box_size
    return None


def _riff_end(fd: int, size: int) -> tuple[str, int] | None:
    """The end of the first RIFF chunk (AVI, then AVIX extensions) that runs past the end of the file, if any."""
    pos = 0
    while pos + 12 <= size:
        hdr = os.pread(fd, 12, pos)
        if not hdr.startswith(b"RIFF"):
            return None
        chunk = int.from_bytes(hdr[4:8], "little")
        if chunk in (0, 0xFFFFFFFF):
            return None  # written by a streaming muxer that never came back to fill it in
        end = pos + 8 + chunk
        if end > size:
            return "AVI", end
        pos = end + (chunk & 1)
    return None


# --------------------------------------------------------------------------------------------------- worker


def _worker_main(conn: Connection, progress: Any, faults: bool, batch: int) -> None:
    """A probe worker: answer lists of ``(id, path)`` with lists of ``(id, ProbeResult)`` until told to stop.

    Answers go back in batches (``batch`` results, or fewer when no more work is waiting or the oldest has
    waited ``_FLUSH_S``), so the parent wakes once per batch rather than once per file.  ``progress`` (shared
    memory: start time in ns, request id) tells the parent which file a crashed or stuck worker was on.
    """
    # Ctrl-C in a terminal reaches the whole process group: the parent decides, a worker must not die of it and
    # get the file it was probing blamed for a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a libav crash must not drop core files around
    # libav and its codecs may write to fd 2 directly; that would smear over the TUI.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    more = select.poll()
    more.register(conn.fileno(), select.POLLIN)
    answers: list[tuple[int, ProbeResult]] = []
    todo: deque[tuple[int, str]] = deque()
    oldest = 0.0
    try:
        conn.send(_READY)
        while True:
            if not todo:
                progress[1] = 0
                if answers and not more.poll(0):
                    conn.send(answers)
                    answers = []
            if not todo or more.poll(0):
                # Blocking only with nothing held back (answers went out when the input ran dry); a batch that
                # arrived while probing is taken at once, so its files' reads start before their turn comes.
                message = conn.recv()
                if message is None:
                    return
                for request_id, path in message:
                    progress[0] = time.monotonic_ns()  # a prefetch stuck on a dead mount is blamed on its file
                    progress[1] = request_id
                    _prefetch(path)
                todo.extend(message)
                continue
            request_id, path = todo.popleft()
            progress[0] = time.monotonic_ns()  # written before the id, so the parent never sees an old time
            progress[1] = request_id
            if faults:
                _inject_fault(path)
            answers.append((request_id, probe_file(path)))
            if len(answers) == 1:
                oldest = time.monotonic()
            if len(answers) >= batch or time.monotonic() - oldest >= _FLUSH_S:
                conn.send(answers)
                answers = []
    except (EOFError, OSError):
        return  # the parent went away


def _prefetch(path: str) -> None:
    """Start reading the head of a file the worker will probe soon (posix_fadvise WILLNEED returns at once).

    A probe of a file not in the page cache waits for the disk or NAS at every read; with the heads of the next
    files already on their way, that wait overlaps with probing the current one (bench/probe.py: cold files).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # NONBLOCK: a FIFO must not wait
    except OSError:
        return  # the probe itself reports it
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.posix_fadvise(fd, 0, _PREFETCH_BYTES, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _inject_fault(path: str) -> None:
    """Test hook (armed by AMPHIGORY_PROBE_FAULTS=1 in the pool's creator): crash or hang on marked names."""
    name = os.path.basename(path)
    if CRASH_MARKER in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if HANG_MARKER in name:
        while True:
            time.sleep(3600)


# --------------------------------------------------------------------------------------------------- pool


@dataclass(slots=True)
class _Request:
    """One path on its way through a worker."""

    rid: int
    path: str
    target: str
    orphan: bool = False  # the caller stopped iterating: drop the answer when it comes


@dataclass(slots=True)
class _Worker:
    """A worker process, its pipe, its shared progress and the requests it holds, oldest first."""

    process: BaseProcess
    conn: Connection
    progress: Any  # shared int64[2]: start of the current file (monotonic ns), its request id (0: none)
    spawned_at: float
    queue: deque[_Request] = field(default_factory=deque)
    ready: bool = False
    last_activity: float = 0.0
    broken: bool = False

    def current(self) -> tuple[int, float]:
        """(request id, start time in monotonic seconds) of the file the worker is on; id 0 when between files."""
        rid = int(self.progress[1])  # read the id first: its start time was written before it
        return rid, self.progress[0] / 1e9


def _context() -> ForkServerContext:
    """The fork-server context: workers fork from a clean single-threaded server that has imported av once."""
    ctx = multiprocessing.get_context("forkserver")
    # Forking the caller itself is unsafe (the TUI has threads).  The server preloads this module (so a new worker
    # costs a fork, not an interpreter start plus ``import av``) and the caller's main module, which every child
    # would otherwise import again (a main script must use the ``if __name__ == "__main__"`` guard).
    ctx.set_forkserver_preload(["__main__", __name__])
    return ctx


def _stop_workers(workers: list[_Worker]) -> None:
    """Ask idle workers to exit, kill busy, starting or stubborn ones, and reap them all."""
    for w in workers:
        # A worker still starting would have to finish its start-up before it reads the request to stop (on a
        # loaded machine that is most of the grace period); it holds nothing, so it is killed.
        if w.queue or w.broken or not w.ready:
            _kill(w)
        else:
            try:
                w.conn.send(None)
            except OSError:
                _kill(w)
    deadline = time.monotonic() + _CLOSE_GRACE_S
    for w in workers:
        w.process.join(max(0.0, deadline - time.monotonic()))
        if w.process.is_alive():
            _kill(w)
            w.process.join(_CLOSE_GRACE_S)
        w.conn.close()
    workers.clear()


def _kill(w: _Worker) -> None:
    """SIGKILL a worker (it may be stuck inside libav, where nothing else reaches it)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        w.process.kill()


def _describe_exit(exitcode: int | None) -> str:
    """``killed by SIGSEGV`` / ``exit code 3``."""
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class ProbePool:
    """Long-lived probe worker processes; a crash or hang costs one worker and one file, never the scan.

    Synchronous and meant for one thread (the scanner's): ``probe_many`` streams results with at most
    ``workers × depth`` paths in flight, so it can be fed 100,000 paths lazily.
    """

    def __init__(self, workers: int = 0, timeout_s: float = 30.0, *, depth: int = _DEPTH) -> None:
        if AV_IMPORT_ERROR is not None:
            raise AmphigoryError(f"PyAV cannot be imported ({AV_IMPORT_ERROR})")
        self.size = workers if workers > 0 else available_cpus()
        self.timeout_s = timeout_s
        self._depth = max(1, depth)
        self._ctx = _context()
        self._faults = os.environ.get(FAULTS_ENV) == "1"
        self._workers: list[_Worker] = []
        self._backlog: deque[_Request] = deque()
        self._next_id = 0
        self._startup_failures = 0
        self._streaming = False
        # One poll object for the pool's life: building a selector per wait would cost more than the IPC.
        self._poller = select.poll()
        self._by_fd: dict[int, _Worker] = {}
        self.restarts = 0
        """Workers replaced after a crash or a timeout."""
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)
        for _ in range(self.size):
            self._workers.append(self._spawn())

    @classmethod
    def from_settings(cls, scanner: ScannerSettings) -> ProbePool:
        """A pool sized and timed by ``[scanner] probe_workers`` and ``probe_timeout_s``."""
        return cls(scanner.probe_workers, scanner.probe_timeout_s)

    def __enter__(self) -> ProbePool:
        """The pool itself; its workers are already running."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the pool."""
        self.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran."""
        return not self._finalizer.alive

    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def close(self) -> None:
        """Stop every worker and reap it; idempotent."""
        self._finalizer()

    def probe(self, path: str) -> ProbeResult:
        """Probe one file in a worker."""
        for _, result in self.probe_many([path]):
            return result
        raise AssertionError("unreachable: probe_many yields one result per path")  # pragma: no cover

    def probe_many(
        self, paths: Iterable[str], cancel: threading.Event | None = None
    ) -> Iterator[tuple[str, ProbeResult]]:
        """Yield ``(path, result)`` for every path, in completion order, pulling paths only as workers free up.

        Once ``cancel`` is set it stops within about ``_CANCEL_SLICE_MS``: no more paths are pulled, files still
        in flight get no result (the scanner checkpoints only what it received) and their workers are retired
        (the next call starts new ones), so one stuck inside libav costs neither the wait for ``timeout_s`` nor
        the time of a ``close()`` that follows.
        """
        if self.closed:
            raise AmphigoryError("the probe pool is closed")
        if self._streaming:
            # Two interleaved streams would take each other's answers: refuse rather than hang.
            raise AmphigoryError("the probe pool is already streaming results to another caller")
        self._streaming = True
        self._top_up()  # workers a cancel retired are replaced now, when there is work for them
        source = iter(paths)
        exhausted = False
        mine: dict[int, _Request] = {}
        slice_ms = None if cancel is None else _CANCEL_SLICE_MS
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    self._recycle_busy(mine)
                    return
                batches: dict[int, list[_Request]] = {}
                while not exhausted or self._backlog:
                    worker = self._free_worker()
                    if worker is None:
                        break
                    if self._backlog:
                        request = self._backlog.popleft()
                    else:
                        try:
                            path = next(source)
                        except StopIteration:
                            exhausted = True
                            continue
                        request = self._new_request(path)
                        mine[request.rid] = request
                    worker.queue.append(request)
                    batches.setdefault(id(worker), []).append(request)
                for worker in self._workers:
                    if id(worker) in batches:
                        self._send(worker, batches[id(worker)])
                if not mine:
                    return
                for request, result in self._pump(slice_ms):
                    if mine.pop(request.rid, None) is not None:
                        yield request.path, result
        finally:
            # The caller may stop early: answers still on their way are dropped when they arrive.
            for request in mine.values():
                request.orphan = True
            self._backlog = deque(r for r in self._backlog if not r.orphan)
            self._streaming = False

    # ------------------------------------------------------------------ internals

    def _new_request(self, path: str) -> _Request:
        """A request; the worker gets an absolute path (the fork server's cwd is not ours)."""
        self._next_id += 1
        target = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
        return _Request(self._next_id, path, target)

    def _top_up(self) -> None:
        """Start workers until the pool has ``size`` of them again."""
        while len(self._workers) < self.size:
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        """Start one worker process."""
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        progress = self._ctx.RawArray("q", 2)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_end, progress, self._faults, max(1, self._depth // 2)),
            name="amphigory-probe",
            daemon=True,
        )
        process.start()
        child_end.close()  # so the worker's death shows up as EOF here
        now = time.monotonic()
        worker = _Worker(process=process, conn=parent_end, progress=progress, spawned_at=now, last_activity=now)
        for fd in (parent_end.fileno(), process.sentinel):
            self._poller.register(fd, select.POLLIN)
            self._by_fd[fd] = worker
        return worker

    def _free_worker(self) -> _Worker | None:
        """The least-loaded worker that can take another request."""
        best: _Worker | None = None
        for w in self._workers:
            if w.broken or len(w.queue) >= self._depth:
                continue
            if best is None or len(w.queue) < len(best.queue):
                best = w
        return best

    def _send(self, w: _Worker, requests: list[_Request]) -> None:
        """Hand requests (already at the end of the worker's queue) over; on a dead pipe they go back."""
        try:
            w.conn.send([(r.rid, r.target) for r in requests])
        except OSError:
            w.broken = True
            for _ in requests:
                w.queue.pop()
            self._backlog.extendleft(reversed(requests))
            return
        w.last_activity = time.monotonic()

    def _pump(self, max_wait_ms: int | None = None) -> list[tuple[_Request, ProbeResult]]:
        """Wait for answers, deaths or the next deadline (at most ``max_wait_ms``); return the answered requests."""
        deadline = min((self._deadline(w) for w in self._workers if w.queue or not w.ready), default=None)
        if any(w.broken for w in self._workers):
            timeout_ms = 0
        elif deadline is None:
            timeout_ms = -1
        else:
            timeout_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
        if max_wait_ms is not None and (timeout_ms < 0 or timeout_ms > max_wait_ms):
            timeout_ms = max_wait_ms
        readable: list[_Worker] = []
        exited: list[_Worker] = []
        for fd, _event in self._poller.poll(timeout_ms):
            w = self._by_fd.get(fd)
            if w is None:
                continue
            target = readable if fd == w.conn.fileno() else exited
            if w not in target:
                target.append(w)
        done: list[tuple[_Request, ProbeResult]] = []
        for w in readable:
            if w not in exited and not self._receive(w, done):
                exited.append(w)
        for w in exited:
            # It may have answered before it died: collect that first.
            with contextlib.suppress(EOFError, OSError):
                while w.conn.poll() and self._receive(w, done):
                    pass
            self._replace(w, done, None)
        for w in [w for w in self._workers if w.broken]:
            self._replace(w, done, None)
        now = time.monotonic()
        for w in [w for w in self._workers if (w.queue or not w.ready) and now >= self._deadline(w)]:
            self._replace(w, done, f"probe timed out after {self.timeout_s:g} s")
        return done

    def _deadline(self, w: _Worker) -> float:
        """When the worker's current file (or its start-up) overruns."""
        if not w.ready:
            return w.spawned_at + max(_STARTUP_TIMEOUT_S, self.timeout_s)
        rid, started = w.current()
        return (started if rid else w.last_activity) + self.timeout_s

    def _receive(self, w: _Worker, done: list[tuple[_Request, ProbeResult]]) -> bool:
        """Read one message from a worker; False when its pipe is closed (the worker is gone)."""
        try:
            message = w.conn.recv()
        except (EOFError, OSError):
            return False
        w.last_activity = time.monotonic()
        if message == _READY:
            w.ready = True
            return True
        for request_id, result in message:
            request = w.queue.popleft()
            if request.rid != request_id:  # pragma: no cover - the protocol is strictly in order
                raise AmphigoryError(f"probe worker answered {request_id} instead of {request.rid}")
            if not request.orphan:
                done.append((request, result))
        self._startup_failures = 0
        return True

    def _replace(self, w: _Worker, done: list[tuple[_Request, ProbeResult]], timed_out: str | None) -> None:
        """Kill and reap a dead or overrunning worker, blame the file it was on, requeue the rest, start another.

        Files it finished but had not reported yet are probed again: cheaper than trusting a dying process.
        """
        rid, _started = w.current()
        exitcode = self._retire(w)
        retry = list(w.queue)
        culprit = next((r for r in retry if rid and r.rid == rid), None) if w.ready else None
        if culprit is None:
            # It died (or stalled) outside any file: nothing to blame; many of those in a row is fatal.
            self._startup_failures += 1
        else:
            retry.remove(culprit)
            reason = timed_out or f"probe crashed ({_describe_exit(exitcode)})"
            if not culprit.orphan:
                done.append((culprit, ProbeResult(error=reason)))
        self._backlog.extendleft(reversed([r for r in retry if not r.orphan]))
        if self._startup_failures >= _MAX_STARTUP_FAILURES:
            raise AmphigoryError(f"probe workers keep dying outside any file ({_describe_exit(exitcode)})")
        self.restarts += 1
        self._workers.append(self._spawn())

    def _retire(self, w: _Worker) -> int | None:
        """Kill and reap a worker, forget its pipe and sentinel; its exit code."""
        _kill(w)
        w.process.join(_CLOSE_GRACE_S)
        for fd in (w.conn.fileno(), w.process.sentinel):
            self._poller.unregister(fd)
            self._by_fd.pop(fd, None)
        w.conn.close()
        self._workers.remove(w)
        return w.process.exitcode

    def _recycle_busy(self, mine: dict[int, _Request]) -> None:
        """After a cancel: retire every worker still holding the canceled stream's files.

        Their answers would be dropped anyway, and one may be stuck inside libav until ``timeout_s``.  No
        replacement is started here: after a cancel the caller usually closes the pool (Ctrl+C), and a worker
        spawned just to be stopped again is what made closing slow; the next ``probe_many`` tops the pool up.
        Other requests they held (none while one stream runs at a time) go back to the backlog.
        """
        for w in [w for w in self._workers if any(r.rid in mine for r in w.queue)]:
            self._retire(w)
            for request in w.queue:
                if request.rid in mine:
                    request.orphan = True
            self._backlog.extendleft(reversed([r for r in w.queue if not r.orphan]))
