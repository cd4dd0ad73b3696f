"""Stop signals: SIGINT, SIGTERM and SIGHUP pause running work; a second one skips the grace period.

Used by ``amphigory worker`` (``pool/headless.py``) and reusable by the TUI: ``watch_stop_signals`` runs in a task
group and calls ``on_stop(graceful)`` — ``True`` for the first signal (stop claiming, terminate tools with a grace
period, pause their jobs without using an attempt), ``False`` for every later one (SIGKILL the tools at once).

The shutdown race: under systemd's default ``KillMode=control-group`` (or ``docker stop``, or a ``kill`` of the
whole process group) HandBrakeCLI receives the same SIGTERM as amphigory, and it dies within milliseconds
(TOOLS.md §4: SIGTERM → exit 143, 0-byte output), often before amphigory's own handler has run. Seen from the
pipeline that looks like "the encoder crashed". ``outside_stop_signal`` recognises such a death and
``await_stop(event, SIGNAL_RACE_S)`` waits a moment for the shutdown to begin: if it does, the job is paused, not
failed. A tool killed by a stop signal while no shutdown follows is a genuine failure (retried as usual).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus

from amphigory_tui.services.proc import ToolResult

__all__ = [
    "SIGNAL_RACE_S",
    "STOP_SIGNALS",
    "StopState",
    "await_stop",
    "outside_stop_exit",
    "outside_stop_signal",
    "watch_stop_signals",
]

log = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""The signals that stop amphigory gracefully (SIGHUP: the SSH session or terminal went away)."""

SIGNAL_RACE_S = 1.5
"""How long a tool's unexplained death by a stop signal waits for amphigory's own shutdown to show up."""

# HandBrakeCLI handles SIGINT itself: it exits 1 with this line instead of dying from the signal.
_HANDLED_SIGNAL = re.compile(r"Signal (\d+) received, terminating")
_OUTSIDE = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL})


@dataclass
class StopState:
    """The stop signals this process received: how many, which, and when the first one came."""

    count: int = 0
    first_signal: int | None = None
    first_at: float | None = None
    """``time.monotonic()`` of the first stop signal."""
    event: threading.Event = field(default_factory=threading.Event)
    """Set by the first stop signal (readable from worker threads)."""

    @property
    def stopping(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.count > 0

    def record(self, signum: int) -> bool:
        """Count one signal; True when it is the first (graceful stop), False for a later one (hurry)."""
        self.count += 1
        if self.count == 1:
            self.first_signal = signum
            self.first_at = time.monotonic()
            self.event.set()
        return self.count == 1


async def watch_stop_signals(
    on_stop: Callable[[bool], Awaitable[None] | None],
    *,
    state: StopState | None = None,
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Receive stop signals until cancelled; ``on_stop(True)`` for the first, ``on_stop(False)`` for later ones.

    Run it in the same task group as the pool (``tg.start`` returns once the receiver is in place) and cancel it
    once the pool has stopped. While it runs, the default actions of these signals (dying at once) are replaced by
    this graceful path. A ``state`` that already saw a signal (counted by an earlier handler before this receiver
    took over) gets its ``on_stop(True)`` at once.
    """
    current = state if state is not None else StopState()
    with anyio.open_signal_receiver(*signals) as received:
        task_status.started()
        if current.stopping:
            result = on_stop(True)
            if result is not None:
                await result
        async for signum in received:
            graceful = current.record(signum)
            name = signal.Signals(signum).name
            if graceful:
                log.warning("%s received: pausing running jobs and stopping (send it again to hurry)", name)
            else:
                log.warning("%s received again: killing running tools now", name)
            result = on_stop(graceful)
            if result is not None:
                await result


def outside_stop_signal(result: ToolResult) -> int | None:
    """The stop signal that ended a tool when amphigory did not send it (else None).

    Covers a death by SIGTERM/SIGINT/SIGHUP/SIGKILL and HandBrakeCLI's own SIGINT/SIGTERM handling ("Signal 2
    received, terminating", exit 1). A tool amphigory stopped itself has ``killed_by`` set and is not counted.
    """
    if result.killed_by is not None:
        return None
    number = result.signal_number
    if number is not None:
        return number if number in _OUTSIDE else None
    for line in reversed(result.stderr_tail):
        match = _HANDLED_SIGNAL.search(line)
        if match and int(match.group(1)) in _OUTSIDE:
            return int(match.group(1))
    return None


def outside_stop_exit(returncode: int | None, killed_by: str | None) -> bool:
    """Whether a child's exit looks like a stop signal amphigory did not send (from a ``ProcessHandle``).

    A death by SIGTERM/SIGINT/SIGHUP/SIGKILL, or exit code 1, which is how HandBrakeCLI reports "canceled" after
    handling SIGINT/SIGTERM itself. Only a hint: the caller still waits for its own shutdown to confirm it.
    """
    if killed_by is not None or returncode is None:
        return False
    return returncode == 1 or (returncode < 0 and -returncode in _OUTSIDE)


async def await_stop(event: threading.Event, timeout_s: float = SIGNAL_RACE_S) -> bool:
    """Wait up to ``timeout_s`` for ``event`` (a stop request) without blocking the event loop; whether it came."""
    deadline = time.monotonic() + timeout_s
    while not event.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await anyio.sleep(min(0.02, remaining))
    return True
