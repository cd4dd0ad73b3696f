"""run_tool and friends against real child processes: splitting, both pipes, process groups, signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from amphigory_tui.domain.errors import ToolNotFound
from amphigory_tui.services.proc import (
    ProcessHandle,
    is_same_process,
    kill_leftover,
    process_start_ticks,
    resolve_tool,
    run_quick,
    run_tool,
)

PY = sys.executable


@pytest.fixture
def anyio_backend() -> str:
    """Run these async tests on asyncio."""
    return "asyncio"


def script(code: str) -> list[str]:
    """argv running a small Python program."""
    return [PY, "-c", textwrap.dedent(code)]


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process from /proc, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()[0]


@pytest.mark.anyio
async def test_splits_carriage_return_only_records_and_mixed_endings() -> None:
    lines: list[tuple[str, str]] = []
    child = script(
        r"""
        import sys, time
        for i in range(5):
            sys.stdout.write(f"Encoding: task 1 of 1, {i * 20}.00 %\r")
        sys.stdout.flush()
        sys.stdout.write("half a rec")
        sys.stdout.flush()
        time.sleep(0.1)
        sys.stdout.write("ord\r\nwindows\r\n\r\r\nunix\nno newline at the end")
        sys.stdout.flush()
        # one UTF-8 character cut in two by the pipe
        b = "café\n".encode()
        sys.stderr.buffer.write(b[:4]); sys.stderr.flush(); time.sleep(0.1)
        sys.stderr.buffer.write(b[4:]); sys.stderr.flush()
        """
    )
    result = await run_tool(child, on_line=lambda stream, line: lines.append((stream, line)))
    assert result.returncode == 0
    assert result.killed_by is None
    out = [line for stream, line in lines if stream == "stdout"]
    assert out == [
        "Encoding: task 1 of 1, 0.00 %",
        "Encoding: task 1 of 1, 20.00 %",
        "Encoding: task 1 of 1, 40.00 %",
        "Encoding: task 1 of 1, 60.00 %",
        "Encoding: task 1 of 1, 80.00 %",
        "half a record",
        "windows",
        "unix",
        "no newline at the end",
    ]
    assert [line for stream, line in lines if stream == "stderr"] == ["café"]
    assert result.stdout_tail[-1] == "no newline at the end"
    assert result.stderr_tail == ("café",)


@pytest.mark.anyio
async def test_reads_both_pipes_without_deadlock_and_keeps_tails() -> None:
    # 1 MB on stderr alone fills the 64 KiB pipe sixteen times over: a reader of stdout only would hang.
    child = script(
        """
        import sys
        for i in range(20000):
            sys.stderr.write(f"err {i:05d} " + "x" * 40 + "\\n")
            if i % 100 == 0:
                sys.stdout.write(f"out {i}\\n")
        sys.exit(3)
        """
    )
    counts = {"stdout": 0, "stderr": 0}

    def count(stream: str, line: str) -> None:
        counts[stream] += 1

    result = await run_tool(child, on_line=count, tail_lines=5)
    assert result.returncode == 3
    assert counts == {"stdout": 200, "stderr": 20000}
    assert len(result.stderr_tail) == 5
    assert result.stderr_tail[-1].startswith("err 19999 ")
    assert result.stdout_tail[-1] == "out 19900"
    assert result.duration_s > 0


@pytest.mark.anyio
async def test_keep_pattern_keeps_lines_that_scrolled_out_of_the_tail() -> None:
    child = script(
        """
        import sys
        print("Invalid preset Nope", file=sys.stderr)
        for i in range(300):
            print(f"    preset {i}", file=sys.stderr)
        sys.exit(2)
        """
    )
    result = await run_tool(child, tail_lines=10, keep_pattern=re.compile("Invalid preset"))
    assert result.kept_lines == ("Invalid preset Nope",)
    assert "Invalid preset Nope" not in result.stderr_tail


@pytest.mark.anyio
async def test_hostile_arguments_reach_the_child_verbatim(tmp_path: Path) -> None:
    hostile = ["$(touch pwned)", "`touch pwned`", "a'b\"c", "-i danger", "; rm -rf x &", "new\nline", "*"]
    lines: list[str] = []
    child = script("import sys, json; print(json.dumps(sys.argv[1:]))") + hostile
    result = await run_tool(child, cwd=tmp_path, on_line=lambda s, line: lines.append(line))
    assert result.returncode == 0
    assert json.loads(lines[0]) == hostile
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.anyio
async def test_a_command_string_is_refused() -> None:
    with pytest.raises(TypeError):
        await run_tool("echo $(touch pwned)")


@pytest.mark.anyio
async def test_cancel_kills_the_whole_group_and_reaps_the_child() -> None:
    child = script(
        """
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild", grandchild.pid, flush=True)
        time.sleep(60)
        """
    )
    handles: list[ProcessHandle] = []
    grandchild: list[int] = []
    with anyio.CancelScope() as scope:

        def on_line(stream: str, line: str) -> None:
            if line.startswith("grandchild "):
                grandchild.append(int(line.split()[1]))
                scope.cancel()

        await run_tool(child, on_line=on_line, on_start=handles.append, grace_s=5.0)
    assert scope.cancelled_caught
    handle = handles[0]
    assert handle.pgid == handle.pid
    assert handle.start_ticks is not None
    assert handle.killed_by == "cancel"
    assert handle.returncode == -signal.SIGTERM
    # The child is reaped (no zombie left in /proc) and the grandchild is dead too.
    assert proc_state(handle.pid) is None
    grand_ticks = process_start_ticks(grandchild[0])
    assert not is_same_process(grandchild[0], grand_ticks)
    assert proc_state(grandchild[0]) in (None, "Z")


@pytest.mark.anyio
async def test_grace_then_sigkill_for_children_that_ignore_sigterm() -> None:
    # The child ignores SIGTERM, and so does its grandchild: both must be SIGKILLed after the grace period.
    child = script(
        """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
            "time.sleep(60)"])
        print("grandchild", grandchild.pid, flush=True)
        time.sleep(60)
        """
    )
    handles: list[ProcessHandle] = []
    grandchild: list[int] = []
    ready = anyio.Event()

    def on_line(stream: str, line: str) -> None:
        if line.startswith("grandchild "):
            grandchild.append(int(line.split()[1]))
        if line == "ready":
            ready.set()

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_when_ready() -> None:
                await ready.wait()
                scope.cancel()

            tg.start_soon(cancel_when_ready)
            await run_tool(child, on_line=on_line, on_start=handles.append, grace_s=0.5)
    handle = handles[0]
    assert handle.returncode == -signal.SIGKILL
    assert handle.killed_by == "cancel"
    assert proc_state(handle.pid) is None
    assert proc_state(grandchild[0]) in (None, "Z")


@pytest.mark.anyio
async def test_terminate_from_another_task_reports_our_reason() -> None:
    handles: list[ProcessHandle] = []
    started = anyio.Event()

    def on_start(handle: ProcessHandle) -> None:
        handles.append(handle)

    def on_line(stream: str, line: str) -> None:
        started.set()

    result = None
    async with anyio.create_task_group() as tg:

        async def stall_killer() -> None:
            await started.wait()
            await handles[0].terminate(grace_s=5.0, reason="stall")

        tg.start_soon(stall_killer)
        result = await run_tool(
            script("import time; print('working', flush=True); time.sleep(60)"), on_line=on_line, on_start=on_start
        )
    assert result is not None
    assert result.killed_by == "stall"
    assert result.returncode == -signal.SIGTERM
    assert not result.ok


@pytest.mark.anyio
async def test_stop_and_cont_pause_the_process_group() -> None:
    handles: list[ProcessHandle] = []
    states: list[str | None] = []
    flags: list[bool] = []
    ready = anyio.Event()
    child = script("import time; print('ready', flush=True); time.sleep(60)")
    async with anyio.create_task_group() as tg:

        async def pauser() -> None:
            await ready.wait()
            handle = handles[0]
            assert handle.stop()
            flags.append(handle.stopped)
            for _ in range(100):
                if proc_state(handle.pid) == "T":
                    break
                await anyio.sleep(0.02)
            states.append(proc_state(handle.pid))
            assert handle.cont()
            flags.append(handle.stopped)
            for _ in range(100):
                if proc_state(handle.pid) != "T":
                    break
                await anyio.sleep(0.02)
            states.append(proc_state(handle.pid))
            # Pausing is not killing: killed_by stays empty until we end it.
            assert handle.killed_by is None
            handle.kill(reason="user cancel")

        tg.start_soon(pauser)
        result = await run_tool(
            child,
            on_line=lambda s, line: ready.set(),
            on_start=handles.append,
        )
    assert flags == [True, False]
    assert states[0] == "T"
    assert states[1] in ("S", "R")
    assert result.killed_by == "user cancel"
    assert result.returncode == -signal.SIGKILL


@pytest.mark.anyio
async def test_terminate_of_a_stopped_process_still_ends_it() -> None:
    # A SIGSTOPped process keeps SIGTERM pending; terminate() must continue it so the signal lands.
    handles: list[ProcessHandle] = []
    ready = anyio.Event()
    async with anyio.create_task_group() as tg:

        async def stop_then_terminate() -> None:
            await ready.wait()
            handles[0].stop()
            await handles[0].terminate(grace_s=5.0, reason="pause")

        tg.start_soon(stop_then_terminate)
        result = await run_tool(
            script("import time; print('ready', flush=True); time.sleep(60)"),
            on_line=lambda s, line: ready.set(),
            on_start=handles.append,
        )
    assert result.returncode == -signal.SIGTERM
    assert result.killed_by == "pause"


@pytest.mark.anyio
async def test_an_error_in_on_line_propagates_and_the_child_is_killed() -> None:
    handles: list[ProcessHandle] = []

    def on_line(stream: str, line: str) -> None:
        raise RuntimeError(f"bad line {line}")

    with pytest.raises(RuntimeError, match="bad line hello"):
        await run_tool(
            script("import time; print('hello', flush=True); time.sleep(60)"),
            on_line=on_line,
            on_start=handles.append,
        )
    assert proc_state(handles[0].pid) is None


@pytest.mark.anyio
async def test_leftover_background_processes_are_killed_when_the_tool_exits() -> None:
    # The tool exits at once but leaves a grandchild holding its stdout: it must not outlive the tool.
    child = script(
        """
        import subprocess, sys
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild", p.pid, flush=True)
        """
    )
    pids: list[int] = []
    result = await run_tool(
        child, on_line=lambda s, line: pids.append(int(line.split()[1])) if line.startswith("grandchild") else None
    )
    assert result.returncode == 0
    assert result.killed_by is None
    assert proc_state(pids[0]) in (None, "Z")


@pytest.mark.anyio
async def test_missing_program_raises_tool_not_found() -> None:
    with pytest.raises(ToolNotFound, match="/no/such/HandBrakeCLI was not found"):
        await run_tool(["/no/such/HandBrakeCLI", "--version"])


def test_resolve_tool_gives_an_install_hint() -> None:
    with pytest.raises(ToolNotFound) as info:
        resolve_tool("no-such-tool-amphigory", package_hint="handbrake-cli")
    assert str(info.value) == "no-such-tool-amphigory was not found; install it with: apt-get install handbrake-cli"
    assert info.value.tool == "no-such-tool-amphigory"


def test_resolve_tool_finds_real_tools_by_name_and_path(tmp_path: Path) -> None:
    found = resolve_tool("HandBrakeCLI", package_hint="handbrake-cli")
    assert os.path.isabs(found)
    assert os.access(found, os.X_OK)
    assert resolve_tool(found) == found
    not_executable = tmp_path / "ffprobe"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(ToolNotFound, match="not an executable"):
        resolve_tool(str(not_executable), package_hint="ffmpeg")


def test_start_ticks_identify_a_process() -> None:
    ticks = process_start_ticks(os.getpid())
    assert isinstance(ticks, int)
    assert is_same_process(os.getpid(), ticks)
    assert not is_same_process(os.getpid(), ticks + 1)
    assert not is_same_process(os.getpid(), None)
    assert process_start_ticks(-1) is None


def test_start_ticks_of_a_gone_process_are_none() -> None:
    popen = subprocess.Popen([PY, "-c", "pass"])
    popen.wait()
    assert process_start_ticks(popen.pid) is None
    assert not is_same_process(popen.pid, 12345)


def test_kill_leftover_only_touches_the_recorded_process() -> None:
    popen = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        ticks = process_start_ticks(popen.pid)
        assert ticks is not None
        # A recycled pid (different start time) is left alone.
        assert kill_leftover(popen.pid, ticks + 1, grace_s=1.0) is False
        assert popen.poll() is None
        assert kill_leftover(popen.pid, ticks, grace_s=5.0) is True
        assert popen.wait(timeout=5) == -signal.SIGTERM
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()


def test_run_quick_returns_output_and_kills_on_timeout() -> None:
    result = run_quick([PY, "-c", "print('v1.2.3'); import sys; print('warn', file=sys.stderr)"], timeout_s=10)
    assert result.returncode == 0
    assert result.stdout_tail == ("v1.2.3",)
    assert result.stderr_tail == ("warn",)
    slow = run_quick([PY, "-c", "import time; print('start', flush=True); time.sleep(60)"], timeout_s=0.5)
    assert slow.killed_by == "timeout"
    assert slow.returncode == -signal.SIGKILL
    with pytest.raises(ToolNotFound):
        run_quick(["/no/such/tool"], timeout_s=1)
