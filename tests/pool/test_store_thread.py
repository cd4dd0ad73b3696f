"""The pool's store thread: results and exceptions come back, calls run in order, a cancel never abandons one."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest

from amphigory_tui.pool.store_thread import StoreThread


@pytest.mark.anyio
async def test_results_exceptions_and_order() -> None:
    """Each call's value or exception reaches its caller; calls run one at a time in submission order, off-loop."""
    runner = StoreThread()
    seen: list[int] = []
    main = threading.get_ident()

    def record(i: int) -> int:
        assert threading.get_ident() != main
        seen.append(i)
        return i * 2

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(runner.call, lambda i=i: record(i))
    assert seen == list(range(20))
    assert await runner.call(lambda: record(21)) == 42

    def boom() -> None:
        raise KeyError("gone")

    with pytest.raises(KeyError, match="gone"):
        await runner.call(boom)
    runner.close()
    assert await runner.call(lambda: record(5)) == 10  # a closed runner starts a new thread when used again
    runner.close()


@pytest.mark.anyio
async def test_a_cancelled_caller_waits_for_its_call() -> None:
    """Cancelling the awaiting task does not abandon a running store call: it returns only after the call ended."""
    runner = StoreThread()
    started, release = threading.Event(), threading.Event()
    returned: list[str] = []

    def slow() -> str:
        started.set()
        release.wait(10)
        return "written"

    scope = anyio.CancelScope()

    async def caller() -> None:
        with scope:
            try:
                await runner.call(slow)
            finally:
                returned.append("ended" if release.is_set() else "abandoned")

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await anyio.to_thread.run_sync(started.wait, 10)
        scope.cancel()
        for _ in range(20):
            await anyio.lowlevel.checkpoint()  # give an abandoning caller every chance to return early
        assert returned == []
        release.set()
    assert returned == ["ended"]
    runner.close()
