"""One long-lived thread for the pool's blocking store calls.

``anyio.to_thread.run_sync`` costs ~150 µs a call here (capacity limiter, context copy, cancel-scope bookkeeping);
a thread fed by a queue that wakes the event loop with ``call_soon_threadsafe`` costs ~85 µs. The pool makes one
store call per job (complete + next claim), so on a no-op job that was a sixth of the time (bench/pool_noop.py).
That call runs on the event loop itself when SQLite's writer is free (``WorkerPool._hot``); it comes here when the
writer is busy, and so do the heartbeats, log flushes and control polls. Calls run one at a time, in order — as the
store's single writer connection serialises writes anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

_Item = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class StoreThread:
    """Runs blocking calls in one daemon thread and awaits them from asyncio (other backends: a worker thread)."""

    def __init__(self, name: str = "amphigory-store") -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the thread and return its result (or raise its exception).

        Like ``to_thread.run_sync``, a caller cancelled meanwhile still waits for the call to end: a write the
        store may have committed is never abandoned half-known.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): anyio's own thread hand-off
            return await anyio.to_thread.run_sync(fn)
        future: asyncio.Future[T] = loop.create_future()
        self._ensure_started()
        self._queue.put((fn, loop, future))
        with anyio.CancelScope(shield=True):
            result = await future
        return result

    def close(self) -> None:
        """Let the thread finish the calls already queued, then end."""
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread = None

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, loop, future = item
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:  # handed to the caller, whatever it is
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
