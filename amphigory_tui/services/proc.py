"""The one way amphigory runs an external tool: argv lists, own process group, both pipes read, clean kills.

Every child (HandBrakeCLI, ffprobe, makemkvcon…) goes through ``run_tool`` (async) or ``run_quick`` (sync,
short calls such as ``--version``). Both refuse a string command line, so no shell ever sees a file name.
The child runs in its own session (``start_new_session=True``) so one ``killpg`` reaches it and every
grandchild, and a Ctrl-C in the terminal reaches amphigory only, which then decides how to stop its tools.
Output is read from stdout and stderr concurrently (a child blocked on a full stderr pipe would otherwise
never finish) in 64 KiB chunks and split on both ``\\n`` and ``\\r``, because HandBrakeCLI writes its
progress records with ``\\r`` only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream, Process

from amphigory_tui.domain.errors import ToolNotFound

__all__ = [
    "LineCallback",
    "ProcessHandle",
    "ToolResult",
    "is_same_process",
    "kill_leftover",
    "process_start_ticks",
    "resolve_tool",
    "run_quick",
    "run_tool",
]

LineCallback = Callable[[str, str], None]
"""``on_line(stream, line)``: ``stream`` is ``"stdout"`` or ``"stderr"``; ``line`` has no ``\\r``/``\\n``."""

_CHUNK = 64 * 1024
# A "line" longer than this without any separator is passed on in pieces, so a tool printing binary junk
# cannot make us buffer without bound.
_MAX_LINE = 1024 * 1024
_SEPARATORS = re.compile(rb"[\r\n]")
# After the tool itself exits, how long grandchildren still holding its pipes get before they are killed.
_DRAIN_S = 1.0
_POLL_S = 0.05
_ENDING_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGQUIT, signal.SIGHUP})


@dataclass(frozen=True, slots=True)
class ToolResult:
    """How one run of an external tool ended.

    ``returncode`` is negative (``-N``) when the process died from signal N. ``killed_by`` is set only when
    amphigory itself asked the process to end (the reason given to ``terminate``/``send``, or the signal
    name): callers use it to tell "we stopped it (stall, pause, cancel, timeout)" from "it crashed".
    """

    argv: tuple[str, ...]
    returncode: int
    stdout_tail: tuple[str, ...]
    stderr_tail: tuple[str, ...]
    duration_s: float
    killed_by: str | None = None
    kept_lines: tuple[str, ...] = ()
    """Lines of either stream that matched ``run_tool``'s ``keep_pattern`` (the last ``tail_lines`` of them)."""

    @property
    def ok(self) -> bool:
        """Whether the tool exited with code 0 on its own."""
        return self.returncode == 0 and self.killed_by is None

    @property
    def tool(self) -> str:
        """The base name of the program that ran."""
        return os.path.basename(self.argv[0]) if self.argv else ""

    @property
    def signal_number(self) -> int | None:
        """The signal that ended the process, if one did."""
        return -self.returncode if self.returncode < 0 else None

    @property
    def stderr_text(self) -> str:
        """The stderr tail as one string (for ``ToolFailed`` and logs)."""
        return "\n".join(self.stderr_tail)

    @property
    def stdout_text(self) -> str:
        """The stdout tail as one string."""
        return "\n".join(self.stdout_tail)


class ProcessHandle:
    """A running tool's process group: signal it, pause it, stop it, and remember what amphigory did to it."""

    def __init__(self, process: Process, argv: tuple[str, ...], cancel_signal: int = signal.SIGTERM) -> None:
        self._process = process
        self.argv = argv
        self.pid: int = process.pid
        # start_new_session=True makes the child a session and group leader: its pgid is its pid.
        self.pgid: int = process.pid
        self.start_ticks: int | None = process_start_ticks(process.pid)
        self.cancel_signal = cancel_signal
        self.killed_by: str | None = None
        """Why amphigory ended the process (``"stall"``, ``"cancel"``, ``"SIGTERM"``…), or None."""
        self.stopped = False
        """Whether the group is currently SIGSTOPped by us."""

    @property
    def returncode(self) -> int | None:
        """The exit code once the tool has exited (negative for a signal), else None."""
        return self._process.returncode

    @property
    def running(self) -> bool:
        """Whether the tool itself has not exited yet."""
        return self._process.returncode is None

    def send(self, sig: int, *, reason: str | None = None) -> bool:
        """Send ``sig`` to the whole process group; False when nothing was left to signal.

        A signal that normally ends a process records ``reason`` (or the signal's name) in ``killed_by``.
        """
        if sig in _ENDING_SIGNALS and self.killed_by is None and self.running:
            self.killed_by = reason or signal.Signals(sig).name
        return _signal_group(self.pgid, sig)

    def stop(self) -> bool:
        """Pause the tool and its children (SIGSTOP); the encode resumes with ``cont``."""
        sent = _signal_group(self.pgid, signal.SIGSTOP) if self.running else False
        self.stopped = self.stopped or sent
        return sent

    def cont(self) -> bool:
        """Resume a paused tool (SIGCONT)."""
        sent = _signal_group(self.pgid, signal.SIGCONT)
        self.stopped = False
        return sent

    def kill(self, *, reason: str | None = None) -> bool:
        """SIGKILL the whole group at once."""
        return self.send(signal.SIGKILL, reason=reason)

    async def terminate(self, grace_s: float = 8.0, *, reason: str | None = None, sig: int | None = None) -> None:
        """Ask the group to end (``sig``, default: the cancel signal), then SIGKILL it after ``grace_s``.

        Returns once the tool has exited and been reaped. Shielded: a cancelled caller still finishes the job.
        """
        with anyio.CancelScope(shield=True):
            await self._shutdown(grace_s, reason=reason, sig=sig)

    async def _shutdown(self, grace_s: float, *, reason: str | None, sig: int | None = None) -> None:
        """Signal, wait for the leader and the whole group, escalate to SIGKILL; always reaps the leader."""
        first = self.cancel_signal if sig is None else sig
        if self.running or _group_alive(self.pgid):
            self.send(first, reason=reason)
            # A stopped process keeps SIGTERM/SIGINT pending until it runs again.
            self.cont()
        with anyio.move_on_after(grace_s):
            await self._process.wait()
            while _group_alive(self.pgid):
                await anyio.sleep(_POLL_S)
        if self.running or _group_alive(self.pgid):
            self.send(signal.SIGKILL, reason=reason)
        await self._process.wait()

    def __repr__(self) -> str:
        return f"ProcessHandle(pid={self.pid}, argv0={self.argv[0]!r}, killed_by={self.killed_by!r})"


def _signal_group(pgid: int, sig: int) -> bool:
    """``killpg`` that treats an empty group as "nothing to do"."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is still in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # Something is in the group, but it may only be a zombie nobody reaps (pid 1 in some containers does not):
    # waiting for a zombie to go away would wait forever.
    return _group_has_live_members(pgid)


def _check_argv(argv: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    """An argv tuple of strings; a single string is refused because it would mean a shell."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("run a tool with an argument list, never a command string")
    args = tuple(os.fspath(a) for a in argv)
    if not args:
        raise ValueError("empty argument list")
    return args


class _LineSplitter:
    """Turns chunks of bytes into text lines split on ``\\r`` and ``\\n``; keeps the tail."""

    __slots__ = ("_buffer", "_keep", "_kept", "_on_line", "_stream", "tail")

    def __init__(
        self,
        stream: str,
        on_line: LineCallback | None,
        tail_lines: int,
        keep: re.Pattern[str] | None = None,
        kept: deque[str] | None = None,
    ) -> None:
        self._stream = stream
        self._on_line = on_line
        self._buffer = b""
        self._keep = keep
        self._kept = kept
        self.tail: deque[str] = deque(maxlen=max(tail_lines, 0))

    def feed(self, chunk: bytes) -> None:
        """Consume one chunk; emit every complete line."""
        data = self._buffer + chunk if self._buffer else chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if cut < 0:
            self._buffer = data
            if len(data) > _MAX_LINE:
                self.flush()
            return
        self._buffer = data[cut + 1 :]
        # UTF-8 continuation bytes never equal \r or \n, so splitting bytes cannot cut a character.
        for raw in _SEPARATORS.split(data[:cut]):
            if raw:
                self._emit(raw)

    def flush(self) -> None:
        """Emit what is left after the end of the stream."""
        if self._buffer:
            raw, self._buffer = self._buffer, b""
            self._emit(raw)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            return
        self.tail.append(line)
        if self._keep is not None and self._kept is not None and self._keep.search(line):
            self._kept.append(line)
        if self._on_line is not None:
            self._on_line(self._stream, line)


async def _pump(stream: ByteReceiveStream, splitter: _LineSplitter, done: anyio.Event) -> None:
    """Read one pipe to its end."""
    try:
        while True:
            try:
                chunk = await stream.receive(_CHUNK)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                break
            splitter.feed(chunk)
        splitter.flush()
    finally:
        done.set()


async def run_tool(
    argv: Sequence[str | os.PathLike[str]],
    *,
    on_line: LineCallback | None = None,
    on_start: Callable[[ProcessHandle], None] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    grace_s: float = 8.0,
    tail_lines: int = 50,
    cancel_signal: int = signal.SIGTERM,
    keep_pattern: re.Pattern[str] | None = None,
) -> ToolResult:
    """Run ``argv`` to its end, feeding each non-empty output line to ``on_line``; return how it ended.

    Args:
        argv: the program and its arguments (never a string: no shell is involved).
        on_line: called as ``on_line("stdout" | "stderr", line)`` for each line, split on ``\\n`` and ``\\r``.
        on_start: called once with the ``ProcessHandle`` right after the process starts (record its pid,
            keep the handle to pause or stop it).
        cwd: working directory of the child.
        env: the child's whole environment (None: inherit ours).
        grace_s: on cancellation, seconds between ``cancel_signal`` and SIGKILL.
        tail_lines: how many last lines of each stream the result keeps.
        cancel_signal: the polite signal sent on cancellation (HandBrakeCLI finalises its file on SIGINT).
        keep_pattern: lines matching it are kept in ``ToolResult.kept_lines`` even when they scrolled out of
            the tail (HandBrakeCLI prints "Invalid preset" and then 300 lines of preset list).

    Raises:
        ToolNotFound: the program does not exist or is not executable.
        anyio cancellation: re-raised after the whole process group is gone and the child reaped.
    """
    args = _check_argv(argv)
    started = time.monotonic()
    try:
        process = await anyio.open_process(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise ToolNotFound(args[0], "no such program") from None
    except PermissionError:
        raise ToolNotFound(args[0], "the file is not executable") from None
    handle = ProcessHandle(process, args, cancel_signal)
    assert process.stdout is not None and process.stderr is not None
    kept: deque[str] = deque(maxlen=max(tail_lines, 0))
    out = _LineSplitter("stdout", on_line, tail_lines, keep_pattern, kept)
    err = _LineSplitter("stderr", on_line, tail_lines, keep_pattern, kept)
    out_done, err_done = anyio.Event(), anyio.Event()
    try:
        if on_start is not None:
            on_start(handle)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_pump, process.stdout, out, out_done)
            tg.start_soon(_pump, process.stderr, err, err_done)
            await process.wait()
            # The tool has exited; its pipes close unless a grandchild still holds them. Give stragglers a
            # moment, then end them: a tool's leftovers must not outlive it.
            with anyio.move_on_after(_DRAIN_S):
                await out_done.wait()
                await err_done.wait()
            if not (out_done.is_set() and err_done.is_set()) and _group_alive(handle.pgid):
                _signal_group(handle.pgid, signal.SIGKILL)
                with anyio.move_on_after(_DRAIN_S):
                    await out_done.wait()
                    await err_done.wait()
                    # The pipes close while a killed process is still exiting: wait until it is really gone.
                    while _group_alive(handle.pgid):
                        await anyio.sleep(_POLL_S)
            tg.cancel_scope.cancel()
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await handle._shutdown(grace_s, reason="cancel")
            await process.aclose()
        # An error raised by on_line arrives wrapped by the task group; give the caller the error itself.
        if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            inner = exc.exceptions[0]
            if not isinstance(inner, anyio.get_cancelled_exc_class()):
                raise inner from None
        raise
    with anyio.CancelScope(shield=True):
        await process.aclose()
    returncode = process.returncode
    assert returncode is not None
    return ToolResult(
        argv=args,
        returncode=returncode,
        stdout_tail=tuple(out.tail),
        stderr_tail=tuple(err.tail),
        duration_s=time.monotonic() - started,
        killed_by=handle.killed_by,
        kept_lines=tuple(kept),
    )


def run_quick(argv: Sequence[str | os.PathLike[str]], timeout_s: float = 10.0, *, tail_lines: int = 50) -> ToolResult:
    """Run a short tool call synchronously (``--version`` for doctor); kill its group on timeout.

    Raises ``ToolNotFound`` when the program does not exist; a timeout gives ``killed_by="timeout"``.
    """
    args = _check_argv(argv)
    started = time.monotonic()
    try:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise ToolNotFound(args[0], "no such program") from None
    except PermissionError:
        raise ToolNotFound(args[0], "the file is not executable") from None
    killed_by = None
    try:
        stdout, stderr = popen.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        killed_by = "timeout"
        _signal_group(popen.pid, signal.SIGKILL)
        stdout, stderr = popen.communicate()
    except BaseException:
        _signal_group(popen.pid, signal.SIGKILL)
        popen.wait()
        raise
    out = _LineSplitter("stdout", None, tail_lines)
    err = _LineSplitter("stderr", None, tail_lines)
    out.feed(stdout)
    out.flush()
    err.feed(stderr)
    err.flush()
    return ToolResult(
        argv=args,
        returncode=popen.returncode,
        stdout_tail=tuple(out.tail),
        stderr_tail=tuple(err.tail),
        duration_s=time.monotonic() - started,
        killed_by=killed_by,
    )


def resolve_tool(name_or_path: str, *, package_hint: str = "", install_hint: str = "") -> str:
    """The absolute path of a tool given by name (looked up on PATH) or path; ``ToolNotFound`` with a hint
    (``install_hint`` verbatim, else "install it with: apt-get install <package_hint>")."""
    hint = install_hint or (f"install it with: apt-get install {package_hint}" if package_hint else "")
    if not name_or_path:
        raise ToolNotFound("(empty tool name)", hint)
    if os.sep in name_or_path:
        path = Path(name_or_path).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.absolute())
        if path.exists():
            raise ToolNotFound(name_or_path, "the file is not an executable program")
        raise ToolNotFound(name_or_path, hint)
    found = shutil.which(name_or_path)
    if found is None:
        raise ToolNotFound(name_or_path, hint)
    return os.path.abspath(found)


def _proc_stat_fields(pid: int) -> list[str] | None:
    """Fields 3… of ``/proc/<pid>/stat`` (after the command name, which may hold spaces and parentheses)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    end = raw.rfind(b")")
    if end < 0:
        return None
    return raw[end + 2 :].decode("ascii", errors="replace").split()


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); None if it is gone."""
    if pid <= 0:
        return None
    fields = _proc_stat_fields(pid)
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def is_same_process(pid: int | None, start_ticks: int | None) -> bool:
    """Whether ``pid`` is still the live process started at ``start_ticks`` (not recycled, not a zombie)."""
    if pid is None or start_ticks is None or pid <= 0:
        return False
    fields = _proc_stat_fields(pid)
    if fields is None or len(fields) < 20:
        return False
    # A zombie has exited already; only its exit status is left for its parent.
    return fields[0] not in ("Z", "X") and fields[19] == str(start_ticks)


def kill_leftover(pid: int, start_ticks: int, *, grace_s: float = 5.0, sig: int = signal.SIGTERM) -> bool:
    """End a tool left running by a dead amphigory (crash recovery): its group, TERM then KILL.

    Acts only if ``pid`` is still the same process (``start_ticks`` match), so a recycled pid is never hit.
    Returns True when something was signalled. Synchronous: it sleeps up to ``grace_s``.
    """
    if not is_same_process(pid, start_ticks):
        return False
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    # Our tools lead their own group; a pid in someone else's group is signalled alone, never that group.
    target_group = pgid == pid

    def _send(s: int) -> None:
        try:
            if target_group:
                os.killpg(pgid, s)
            else:
                os.kill(pid, s)
        except ProcessLookupError:
            pass

    _send(sig)
    _send(signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_same_process(pid, start_ticks) and not (target_group and _group_alive(pgid)):
            return True
        time.sleep(_POLL_S)
    _send(signal.SIGKILL)
    return True


def _group_has_live_members(pgid: int) -> bool:
    """Whether a non-zombie process is still in group ``pgid`` (scans /proc; for recovery only)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat_fields(int(entry.name))
        # fields[2] is field 5 (pgrp).
        if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False
