"""Stop signals: first = graceful, second = hurry; a tool killed by the service manager's signal is recognised."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import anyio
import pytest

from amphigory_tui.services.proc import ProcessHandle, ToolResult, run_tool
from amphigory_tui.services.signals import StopState, await_stop, outside_stop_signal, watch_stop_signals
from tests.media import make_clip


def result(returncode: int, *, killed_by: str | None = None, stderr: tuple[str, ...] = ()) -> ToolResult:
    """A finished tool as ``run_tool`` reports it."""
    return ToolResult(("HandBrakeCLI",), returncode, (), stderr, 1.0, killed_by)


def test_deaths_by_a_stop_signal_we_did_not_send_are_recognised() -> None:
    """SIGTERM/SIGKILL/SIGHUP deaths and HandBrake's own SIGINT exit count; our own stops and crashes do not."""
    assert outside_stop_signal(result(-15)) == signal.SIGTERM
    assert outside_stop_signal(result(-9)) == signal.SIGKILL
    assert outside_stop_signal(result(-1)) == signal.SIGHUP
    handled = ("Signal 2 received, terminating - do it again in case it gets stuck",)
    assert outside_stop_signal(result(1, stderr=handled)) == signal.SIGINT
    assert outside_stop_signal(result(-15, killed_by="pause")) is None, "amphigory stopped it itself"
    assert outside_stop_signal(result(-11)) is None, "a segfault is a crash, not a stop"
    assert outside_stop_signal(result(1, stderr=("Encode failed (error 1).",))) is None
    assert outside_stop_signal(result(0)) is None


@pytest.mark.anyio
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_real_handbrake_killed_by_a_group_signal_is_an_outside_stop(tmp_path: Path, sig: int) -> None:
    """The service manager signals HandBrakeCLI directly (KillMode=control-group): SIGTERM kills it, SIGINT makes it
    exit 1; both are recognised as an outside stop, not a crash."""
    clip = make_clip(tmp_path / "in.mkv", seconds=8, width=640, height=360)
    handles: list[ProcessHandle] = []
    signalled = threading.Event()

    def on_line(stream: str, line: str) -> None:
        if stream == "stdout" and "Encoding:" in line and handles and not signalled.is_set():
            signalled.set()
            os.killpg(handles[0].pgid, sig)  # from "outside": not through the handle, so killed_by stays None

    argv = ["HandBrakeCLI", "-i", str(clip), "-o", str(tmp_path / "out.mkv"), "--preset", "Fast 480p30"]
    with anyio.fail_after(60):
        finished = await run_tool(argv, on_line=on_line, on_start=handles.append)
    assert signalled.is_set()
    assert finished.killed_by is None
    assert outside_stop_signal(finished) == sig


@pytest.mark.anyio
async def test_first_signal_is_graceful_and_the_second_hurries() -> None:
    """SIGHUP (an SSH session dropping) then SIGTERM: on_stop(True), then on_stop(False)."""
    calls: list[bool] = []
    state = StopState()
    async with anyio.create_task_group() as tg:

        async def on_stop(graceful: bool) -> None:
            calls.append(graceful)
            if len(calls) == 2:
                tg.cancel_scope.cancel()

        tg.start_soon(lambda: watch_stop_signals(on_stop, state=state))
        await anyio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGHUP)
        await anyio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)
        with anyio.fail_after(10):
            await anyio.sleep_forever()
    assert calls == [True, False]
    assert (state.count, state.first_signal, state.stopping) == (2, signal.SIGHUP, True)
    assert state.event.is_set()


@pytest.mark.anyio
async def test_await_stop_waits_only_as_long_as_asked() -> None:
    """A stop request arriving within the window is seen; none arriving means False after the window."""
    event = threading.Event()
    assert await await_stop(event, 0.05) is False
    threading.Timer(0.05, event.set).start()
    assert await await_stop(event, 5.0) is True
