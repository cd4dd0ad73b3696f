"""The stages of a transcode job: download, transcode, validate, upload — and the contract with the pool.

The pool (``pool/pool.py``) claims a job, builds a ``StageContext`` for it and calls a ``JobRunner``:
``run(ctx)`` does the work and returns a ``JobResult`` (or raises ``JobError`` / ``StopRequested``), the pool records
the outcome in the store, then calls ``finalize(ctx, result)`` after ``complete`` or ``cleanup(ctx)`` after anything
else. ``TranscodePipeline`` is the real runner; ``NoopRunner`` does nothing and starts no process (benchmarks).

Rules the transcode stages keep (TOOLS.md §3–4, reliability.md §1.10):

- The user's file is only read until the upload stage; every file we write starts in the job's lease directory
  ``work_dir/job-<id>/a<attempt>-<worker uuid>/`` (recorded as the job's ``temp_path`` before anything is written)
  or under a hidden temp name beside the destination (``services/replace.py``).
- HandBrakeCLI's exit code 0 proves nothing (truncated input and a full disk both exit 0): the output is probed and
  compared with the source (duration within max(1 s, 1 %), video present, every source audio stream present).
- The source's size and mtime are recorded when the attempt starts; if they differ at upload nothing is replaced.
- Failures are one sentence naming the file; ``permanent`` ones (undecodable input, "No title found", the same
  validation failure twice) fail at once, the rest retry with backoff.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import anyio

from amphigory_tui.config import Settings
from amphigory_tui.domain.errors import (
    AmphigoryError,
    InvalidTransition,
    JobError,
    JobNotFound,
    StaleLease,
    ToolNotFound,
)
from amphigory_tui.domain.jobs import Job, JobStatus, Progress, Stage
from amphigory_tui.domain.media import Decision, ProbeResult
from amphigory_tui.services.faults import pause_point
from amphigory_tui.services.ffprobe import ffprobe
from amphigory_tui.services.handbrake import build_argv, classify_failure, pick_preset, run_encode
from amphigory_tui.services.probe import container_truncation, probe_file
from amphigory_tui.services.proc import ProcessHandle, ToolResult, resolve_tool
from amphigory_tui.services.replace import (
    INTENT_NAME,
    CopyStopped,
    Intent,
    Placed,
    ReplaceOutcome,
    backup_path_for,
    check_destination,
    copy_file,
    find_intents,
    finish_or_rollback,
    kept_original_path,
    part_path_for,
    place,
    read_intent,
    target_path_for,
)
from amphigory_tui.store import Store

__all__ = [
    "DiskUsage",
    "JobResult",
    "JobRunner",
    "NoopRunner",
    "StageContext",
    "StopRequested",
    "TranscodePipeline",
    "job_dir",
    "lease_dir",
    "recover_replaces",
    "validation_problem",
]

logger = logging.getLogger(__name__)

STDERR_TAIL_LINES = 50
"""How many last stderr lines of a tool go to the processing log (and, on failure, into the job's error)."""

ENCODE_FACTS_NAME = "encode.json"
"""The encode's facts (duration, encode time, average fps) in the lease dir, written before the upload stage: a
replace that recovery finishes for a killed worker completes the job with them."""


class DiskUsage(NamedTuple):
    """What ``shutil.disk_usage`` returns (injectable for tests)."""

    total: int
    used: int
    free: int


class StopRequested(Exception):
    """The pool asked the job to stop (pause, cancel, stall, shutdown); the pool knows why and finishes it."""


@dataclass(frozen=True)
class JobResult:
    """What a finished job hands to ``JobStore.complete``."""

    output_path: str | None = None
    output_size: int | None = None
    duration_s: float | None = None
    encode_time_s: float | None = None
    avg_fps: float | None = None
    source_size: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


class StageContext(Protocol):
    """What a runner may do while the pool runs its job (implemented by the pool)."""

    job: Job
    """The job as claimed (``error_message`` is the previous attempt's error, if any)."""
    worker_id: str
    """The claim loop that owns the job (``host:pid:uuid``)."""
    stop_event: threading.Event
    """Set when the pool wants the job to stop; copy loops in threads check it."""

    async def set_stage(self, stage: Stage, **fields: Any) -> None:
        """Enter ``stage`` (written to the job with ``fields`` of ``JobStore.update_running``); progress restarts."""
        ...

    async def update(self, **fields: Any) -> None:
        """Write running-job fields (``JobStore.update_running``)."""
        ...

    def progress(self, progress: Progress) -> None:
        """Report the stage's progress (cheap; may be called from a worker thread)."""
        ...

    def activity(self) -> None:
        """The tool printed something (liveness for the stall watchdog before its first progress record)."""
        ...

    def attach_process(self, handle: ProcessHandle | None) -> None:
        """The stage's child process started (recorded on the job at once) or ended (None)."""
        ...

    def log(
        self, message: str, *, level: str = "info", event_type: str = "", details: dict[str, Any] | None = None
    ) -> None:
        """A line for the processing log and the Log tab, tagged with the job."""
        ...

    def critical(self) -> AbstractContextManager[None]:
        """A section the pool must not cancel (the library swap): stop requests only set ``stop_event``."""
        ...


class JobRunner(Protocol):
    """Runs one kind of job for the pool."""

    async def run(self, ctx: StageContext) -> JobResult:
        """Do the job's work; raise ``JobError`` on failure, ``StopRequested`` when ``ctx.stop_event`` asks."""
        ...

    async def finalize(self, ctx: StageContext, result: JobResult) -> None:
        """After the job was recorded completed: tidy up (never raises)."""
        ...

    async def cleanup(self, ctx: StageContext) -> None:
        """After a failure or a stop, before the job's new status is recorded: remove its temp files."""
        ...


class NoopRunner:
    """A job that does nothing and starts no process: measures the pool's own cost per job."""

    async def run(self, ctx: StageContext) -> JobResult:
        """Succeed at once."""
        return JobResult()

    async def finalize(self, ctx: StageContext, result: JobResult) -> None:
        """Nothing to tidy."""

    async def cleanup(self, ctx: StageContext) -> None:
        """Nothing to remove."""


# --------------------------------------------------------------------------------------------------- work dirs


def job_dir(work_dir: str | os.PathLike[str], job_id: int) -> Path:
    """``work_dir/job-<id>``: every attempt's lease directory of one job lives in it."""
    return Path(work_dir) / f"job-{job_id}"


def lease_dir(work_dir: str | os.PathLike[str], job: Job, worker_id: str) -> Path:
    """``work_dir/job-<id>/a<attempt>-<uuid>``: this attempt's own files (a stale owner never shares them)."""
    suffix = worker_id.rsplit(":", 1)[-1] or "w"
    safe = "".join(c for c in suffix if c.isalnum())[:32] or "w"
    return job_dir(work_dir, job.id) / f"a{job.attempts}-{safe}"


def _remove_tree(path: Path, *, keep: str | None = None) -> None:
    """Remove a lease directory (all but an unresolved intent record named ``keep``); ignore what is gone."""
    if not path.exists():
        return
    if keep and (path / keep).exists():
        # The encode's facts stay beside the intent: the recovery that settles it completes the job with them.
        for entry in path.iterdir():
            if entry.name not in (keep, ENCODE_FACTS_NAME):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
        return
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the job dir, when no other attempt's lease is left in it


def _size_text(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


# --------------------------------------------------------------------------------------------------- validation


def validation_problem(
    source: ProbeResult, output: ProbeResult, output_size: int, truncation: str | None = None
) -> str | None:
    """Why an encode is not acceptable, or None: complete, opens, has video, keeps every audio stream, same duration.

    The duration must be within max(1 s, 1 %) of the source's (a truncated input makes HandBrakeCLI exit 0 with a
    short file). ``truncation`` is ``container_truncation``'s finding: a full disk also exits 0, with a file cut
    short whose header still announces the full duration.
    """
    if output_size <= 0:
        return "the output is empty (0 bytes)"
    if truncation is not None:
        return f"the output is cut short ({truncation})"
    if output.error is not None and output.video_codec is None and "video" in output.error:
        return "the output has no video stream"
    if output.error is not None:
        return f"the output cannot be read ({output.error})"
    if output.video_codec is None:
        return "the output has no video stream"
    if len(output.audio) < len(source.audio):
        return f"the output has {len(output.audio)} audio streams, the source {len(source.audio)}"
    if source.duration_s:
        if output.duration_s is None:
            return f"the output has no duration (cut short?), the source lasts {source.duration_s:.2f} s"
        tolerance = max(1.0, 0.01 * source.duration_s)
        if abs(output.duration_s - source.duration_s) > tolerance:
            return f"the output lasts {output.duration_s:.2f} s, the source {source.duration_s:.2f} s"
    return None


# --------------------------------------------------------------------------------------------------- pipeline


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class TranscodePipeline:
    """The transcode job: download → transcode → validate → upload (a ``JobRunner``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        disk_usage: Callable[[str], DiskUsage] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.work_dir = settings.work_dir
        self._disk_usage = disk_usage or (lambda p: DiskUsage(*shutil.disk_usage(p)))

    # ------------------------------------------------------------------ runner protocol
    async def run(self, ctx: StageContext) -> JobResult:
        """All four stages; returns what ``complete`` records."""
        job = ctx.job
        tc = self.settings.transcode
        source = os.path.abspath(job.input_path)
        name = os.path.basename(source)
        target = os.path.abspath(job.output_path) if job.output_path else target_path_for(source, tc.output_container)
        lease = lease_dir(self.work_dir, job, ctx.worker_id)

        # Cheap checks first: no copying a 40 GB file for an encoder that is not installed.
        try:
            handbrake = resolve_tool(self.settings.tools.handbrake, package_hint="handbrake-cli")
        except ToolNotFound as exc:
            raise JobError(f"HandBrakeCLI not found ({exc}); cannot encode {source}") from None
        # Facts of the source as this attempt finds it: the upload compares against them.
        st = self._stat_source(source)
        check_destination(source, target, job.id)
        if tc.original_policy == "backup":
            self._check_backup_dir()
        # The lease dir is on the job before anything is written into it (recovery cleans what it names).
        await ctx.set_stage(
            Stage.DOWNLOAD,
            temp_path=str(lease),
            source_size=st.st_size,
            source_mtime_ns=st.st_mtime_ns,
            output_path=target,
        )
        ctx.log(f"attempt {job.attempts}/{job.max_retries}: {name} → {os.path.basename(target)}", event_type="start")
        local_input = await self._download(ctx, source, st, lease)

        # ---- transcode
        source_probe = await self._source_probe(job, st, local_input)
        if source_probe.error is not None:
            raise JobError(f"cannot decode {source}: {source_probe.error}", permanent=True)
        preset = job.preset or pick_preset(source_probe.width, source_probe.height, tc)
        output = lease / f"output.{tc.output_container}"
        argv = build_argv(
            handbrake,
            local_input,
            output,
            preset=preset,
            preset_import_file=tc.preset_import_file,
            # Every audio track is kept (HandBrake presets keep only the first): validation checks for them.
            extra_args=["--all-audio", *tc.extra_args],
            container=tc.output_container,
        )
        await ctx.set_stage(Stage.TRANSCODE, preset=preset)
        ctx.log(f"encoding with preset {preset!r}", event_type="transcode", details={"argv": argv})
        encode_started = time.monotonic()
        last: list[Progress] = []

        def on_progress(progress: Progress) -> None:
            last[:] = [progress]
            ctx.progress(progress)

        try:
            result = await run_encode(
                argv,
                on_progress=on_progress,
                on_start=ctx.attach_process,
                on_line=lambda _stream, _line: ctx.activity(),
                grace_s=self.settings.workers.kill_grace_s,
            )
        except ToolNotFound as exc:
            raise JobError(f"HandBrakeCLI not found ({exc}); cannot encode {source}") from None
        finally:
            ctx.attach_process(None)
        encode_time = time.monotonic() - encode_started
        self._check_stop(ctx)
        if not result.ok:
            # The error carries the stderr tail and the pool logs the error ("failed …", "attempt 1/3 failed …"):
            # no tail line of our own here, or a failure would put the same lines into the log twice.
            failure = classify_failure(result, tail_lines=STDERR_TAIL_LINES)
            # The reason names the user's file, not our copy of it; the tail below it stays as HandBrakeCLI wrote it.
            reason, newline, tail = str(failure).partition("\n")
            raise JobError(reason.replace(str(local_input), source) + newline + tail, permanent=failure.permanent)
        self._log_tail(ctx, result)

        # ---- validate
        await ctx.set_stage(Stage.VALIDATE)
        pause_point("validate", job.id)  # [lifecycle] test-only kill point (services/faults.py)
        out_probe, _out_size = await self._validate(ctx, source, source_probe, output, st.st_size)
        self._check_stop(ctx)

        # ---- upload
        avg = last[0].avg_fps if last and last[0].avg_fps else None
        if avg is None and out_probe.duration_s and out_probe.fps and encode_time > 0:
            avg = round(out_probe.duration_s * out_probe.fps / encode_time, 2)
        facts = _EncodeFacts(out_probe.duration_s, round(encode_time, 3), avg)
        await anyio.to_thread.run_sync(_write_encode_facts, lease, facts)
        await ctx.set_stage(Stage.UPLOAD)
        placed = await self._upload(ctx, source, target, output, lease, st)
        saved = f"{_size_text(st.st_size)} → {_size_text(placed.size)}"
        ctx.log(
            f"placed {os.path.basename(target)} ({saved}); original "
            + (f"moved to {placed.original_moved_to}" if placed.original_moved_to else "deleted"),
            event_type="upload",
        )
        return JobResult(
            output_path=target,
            output_size=placed.size,
            duration_s=facts.duration_s,
            encode_time_s=facts.encode_time_s,
            avg_fps=facts.avg_fps,
            source_size=st.st_size,
            details={"original": placed.original_moved_to, "codec": out_probe.video_codec},
        )

    async def finalize(self, ctx: StageContext, result: JobResult) -> None:
        """After ``complete``: drop the intent and the lease dir; make the library row describe the new file."""
        pause_point("finalize", ctx.job.id)  # [lifecycle] test-only kill point (services/faults.py)
        lease = lease_dir(self.work_dir, ctx.job, ctx.worker_id)
        await anyio.to_thread.run_sync(_remove_tree, lease)
        if ctx.job.media_file_id is None or result.output_path is None:
            return
        try:
            await self._record_new_file(ctx.job.media_file_id, result.output_path)
        except (AmphigoryError, OSError) as exc:
            ctx.log(f"could not re-probe {result.output_path}: {exc}", level="warning")

    async def cleanup(self, ctx: StageContext) -> None:
        """Remove this attempt's temp files (an unresolved replace intent stays for recovery)."""
        lease = lease_dir(self.work_dir, ctx.job, ctx.worker_id)
        await anyio.to_thread.run_sync(partial(_remove_tree, lease, keep=INTENT_NAME))

    # ------------------------------------------------------------------ stages
    def _stat_source(self, source: str) -> os.stat_result:
        try:
            st = os.stat(source)
            with open(source, "rb"):
                pass
        except FileNotFoundError:
            raise JobError(f"the input file {source} does not exist") from None
        except OSError as exc:
            raise JobError(f"the input file {source} cannot be read ({_os_reason(exc)})") from None
        if not os.path.isfile(source):
            raise JobError(f"the input {source} is not a regular file", permanent=True)
        return st

    def _check_backup_dir(self) -> None:
        backup = self.settings.paths.backup_dir
        try:
            os.makedirs(backup, exist_ok=True)
            probe = os.path.join(backup, f".amphigory-probe-{os.getpid()}")
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise JobError(f"the backup folder {backup} is not writable ({_os_reason(exc)})") from None

    async def _download(self, ctx: StageContext, source: str, st: os.stat_result, lease: Path) -> Path:
        """Copy the source into the lease dir (free space checked first); the copy is what gets encoded."""
        factor = self.settings.transcode.free_space_factor
        self.work_dir.mkdir(parents=True, exist_ok=True)
        free = self._disk_usage(str(self.work_dir)).free
        needed = int(st.st_size * factor)
        if free < needed:
            raise JobError(
                f"not enough free space in {self.work_dir} for {source}: {_size_text(free)} free, "
                f"{_size_text(needed)} needed ({factor:g}× its size)"
            )
        lease.mkdir(parents=True, exist_ok=True)
        suffix = Path(source).suffix.lower()
        local = lease / ("input" + (suffix if suffix[1:].isalnum() and len(suffix) <= 9 else ""))

        def on_bytes(done: int, total: int) -> None:
            ctx.progress(Progress(percent=round(done * 100.0 / total, 2) if total else 100.0))
            pause_point("download", ctx.job.id)  # [lifecycle] test-only kill point (services/faults.py)

        try:
            await anyio.to_thread.run_sync(
                partial(copy_file, source, str(local), on_bytes=on_bytes, stop=ctx.stop_event)
            )
        except CopyStopped:
            raise StopRequested() from None
        except FileNotFoundError:
            raise JobError(f"the input file {source} disappeared while it was being copied") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise JobError(f"disk full while copying {source} into {self.work_dir}") from None
            raise JobError(f"cannot copy {source} into {self.work_dir} ({_os_reason(exc)})") from None
        now = os.stat(source)
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise JobError(f"the source {source} changed while it was being copied (is it still being written?)")
        ctx.log(f"copied {_size_text(st.st_size)} into the work dir", event_type="download")
        return local

    async def _source_probe(self, job: Job, st: os.stat_result, local_input: Path) -> ProbeResult:
        """The scan's probe of the source when the file is unchanged since (no second probe), else ffprobe."""
        if job.media_file_id is not None:
            media = await anyio.to_thread.run_sync(self.store.media.get, job.media_file_id)
            if (
                media is not None
                and (media.size_bytes, media.mtime_ns) == (st.st_size, st.st_mtime_ns)
                and media.probe.ok
                and media.probe.video_codec is not None
                and media.probe.duration_s
            ):
                return media.probe
        return await self._probe(local_input)

    async def _probe(self, path: Path | str) -> ProbeResult:
        try:
            return await ffprobe(path, ffprobe=self.settings.tools.ffprobe)
        except ToolNotFound as exc:
            raise JobError(f"ffprobe not found ({exc}); cannot check {path}") from None

    async def _validate(
        self, ctx: StageContext, source: str, source_probe: ProbeResult, output: Path, source_size: int
    ) -> tuple[ProbeResult, int]:
        name = os.path.basename(source)
        try:
            out_size = output.stat().st_size
        except FileNotFoundError:
            raise JobError(f"HandBrakeCLI exited with code 0 but wrote no output for {source}") from None
        out_probe = await self._probe(output)
        ctx.activity()
        cut = await anyio.to_thread.run_sync(container_truncation, str(output))
        problem = validation_problem(source_probe, out_probe, out_size, cut)
        if problem is not None:
            if self._disk_nearly_full(output.parent):
                raise JobError(f"disk full while encoding {source} into {output.parent} (the output is cut: {problem})")
            message = f"validation failed for {name}: {problem}"
            # A deterministic encode that fails the same way twice will fail the same way every time.
            if ctx.job.error_message == message:
                raise JobError(message + " (the same as the previous attempt)", permanent=True)
            raise JobError(message)
        if self.settings.transcode.require_smaller and out_size >= source_size:
            raise JobError(
                f"the output ({_size_text(out_size)}) is not smaller than {name} ({_size_text(source_size)}); "
                "the original is kept",
                skip=True,
            )
        ctx.log(
            f"validated: {out_probe.video_codec}, {out_probe.duration_s} s, {len(out_probe.audio)} audio, "
            f"{_size_text(out_size)}",
            event_type="validate",
        )
        return out_probe, out_size

    def _disk_nearly_full(self, folder: Path) -> bool:
        try:
            return self._disk_usage(str(folder)).free < 1024 * 1024
        except OSError:
            return False

    async def _upload(
        self, ctx: StageContext, source: str, target: str, output: Path, lease: Path, st: os.stat_result
    ) -> Placed:
        tc = self.settings.transcode
        policy = tc.original_policy
        original_dest: str | None = None
        if policy == "keep":
            original_dest = kept_original_path(source)
        elif policy == "backup":
            original_dest = backup_path_for(source, self.settings.paths.backup_dir)
        intent = Intent(
            job_id=ctx.job.id,
            worker_id=ctx.worker_id,
            source=source,
            target=target,
            part=part_path_for(target, ctx.job.id, ctx.job.attempts),
            policy=policy,  # type: ignore[arg-type]
            original_dest=original_dest,
            source_size=st.st_size,
            source_mtime_ns=st.st_mtime_ns,
            path=str(lease / INTENT_NAME),
        )

        def on_bytes(done: int, total: int) -> None:
            ctx.progress(Progress(percent=round(done * 100.0 / total, 2) if total else 100.0))

        def still_ours() -> None:
            # A compare-and-set heartbeat right before the swap: a worker frozen past stall_timeout whose job
            # another machine took over learns it here, before it touches the library (it also renews the lease).
            if not self.store.jobs.heartbeat(ctx.job.id, ctx.worker_id):
                raise StaleLease(f"job {ctx.job.id}: another worker owns it now; the library was left alone")

        with ctx.critical():
            try:
                return await anyio.to_thread.run_sync(
                    partial(place, str(output), intent, stop=ctx.stop_event, on_bytes=on_bytes, confirm=still_ours)
                )
            except CopyStopped:
                raise StopRequested() from None
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise JobError(f"disk full while placing the new file for {source}") from None
                raise JobError(f"cannot place the new file for {source} ({_os_reason(exc)})") from None

    async def _record_new_file(self, media_id: int, path: str) -> None:
        # The library row gets what the scanner would record (PyAV, as the scan does; our own fresh output).
        await anyio.to_thread.run_sync(_record_new_file_sync, self.store, media_id, path)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_stop(ctx: StageContext) -> None:
        if ctx.stop_event.is_set():
            raise StopRequested()

    @staticmethod
    def _log_tail(ctx: StageContext, result: ToolResult) -> None:
        """After a successful run: the tool's last stderr lines, at info (a failure's error carries them instead)."""
        lines: Sequence[str] = result.stderr_tail[-STDERR_TAIL_LINES:]
        if not lines:
            return
        # Info: the pool keeps info and above, and the tail is how a user checks what the encoder said.
        ctx.log(
            f"{result.tool} exited with code {result.returncode}; last {len(lines)} lines of its stderr:\n"
            + "\n".join(lines),
            level="info",
            event_type="stderr",
            details={"returncode": result.returncode, "stderr_tail": list(lines)},
        )


# --------------------------------------------------------------------------------------------------- recovery


def recover_replaces(
    store: Store,
    settings: Settings,
    is_worker_alive: Callable[[str], bool],
) -> list[ReplaceOutcome]:
    """Settle every half-done replace of a dead worker (run at startup, BEFORE orphan recovery and temp cleanup).

    For each intent record under ``work_dir`` whose worker is dead: ``finish_or_rollback``; when the new file
    turned out to be in place, the job is recorded completed (as its dead owner would have, with the encode's facts
    from the lease dir) and its library row re-probed. A job already recorded completed (the crash came between
    ``complete`` and ``finalize``) has its library row re-probed too. A rolled-back job stays running-orphaned for
    the orphan recovery to requeue. Synchronous.
    """
    outcomes: list[ReplaceOutcome] = []
    for path in find_intents(settings.work_dir):
        try:
            intent = read_intent(path)
        except (OSError, ValueError) as exc:
            logger.warning("%s: unreadable replace intent left alone (%s)", path, exc)
            continue
        if is_worker_alive(intent.worker_id):
            continue
        facts = _read_encode_facts(path.parent)
        outcome = finish_or_rollback(path)
        outcomes.append(outcome)
        if not outcome.finished:
            continue
        probe = probe_file(outcome.target)
        try:
            job = store.jobs.complete(
                intent.job_id,
                intent.worker_id,
                output_path=outcome.target,
                output_size=outcome.new_size,
                duration_s=facts.duration_s if facts.duration_s is not None else probe.duration_s,
                encode_time_s=facts.encode_time_s,
                avg_fps=facts.avg_fps,
            )
        except (StaleLease, InvalidTransition):
            # Already recorded: completed before the crash (which then came before finalize re-probed the file),
            # or by someone else. The library row must describe the new file all the same.
            try:
                job = store.jobs.get(intent.job_id)
            except JobNotFound:
                continue
            if job.status is not JobStatus.COMPLETED:
                continue
        except JobNotFound:
            continue  # the job was deleted meanwhile: nothing to record
        if job.media_file_id is not None:
            try:
                _record_new_file_sync(store, job.media_file_id, outcome.target, probe)
            except (OSError, AmphigoryError) as exc:
                logger.warning("job %d: could not re-probe %s (%s)", job.id, outcome.target, exc)
    return outcomes


@dataclass(frozen=True)
class _EncodeFacts:
    """What ``complete`` records about an encode besides the output (None: not known)."""

    duration_s: float | None = None
    encode_time_s: float | None = None
    avg_fps: float | None = None


def _write_encode_facts(lease: Path, facts: _EncodeFacts) -> None:
    """Leave the encode's facts in the lease dir (temp name + rename: a crash never leaves half a record)."""
    tmp = lease / (ENCODE_FACTS_NAME + ".tmp")
    try:
        tmp.write_text(json.dumps(asdict(facts)), encoding="utf-8")
        os.replace(tmp, lease / ENCODE_FACTS_NAME)
    except OSError as exc:
        # Best effort: without them a completion that recovery records only lacks the timings.
        logger.warning("%s: could not write the encode's facts (%s)", lease, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _read_encode_facts(lease: Path) -> _EncodeFacts:
    """The facts ``_write_encode_facts`` left, or unknown ones (missing, unreadable, from another version)."""
    try:
        data = json.loads((lease / ENCODE_FACTS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _EncodeFacts()
    if not isinstance(data, dict):
        return _EncodeFacts()

    def number(key: str) -> float | None:
        value = data.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    return _EncodeFacts(number("duration_s"), number("encode_time_s"), number("avg_fps"))


def _record_new_file_sync(store: Store, media_id: int, path: str, probe: ProbeResult | None = None) -> None:
    probe = probe if probe is not None else probe_file(path)
    st = os.stat(path)
    decision = Decision(should_transcode=False, reason=f"transcoded to {probe.video_codec or '?'}")
    store.media.record_transcoded(media_id, path, st.st_size, st.st_mtime_ns, probe, decision)
