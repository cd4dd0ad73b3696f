"""The headless engine: the worker pool and its event sinks (never imports Textual)."""

from __future__ import annotations

from amphigory_tui.pool.pool import WorkerPool, WorkerSnapshot
from amphigory_tui.pool.sink import EventSink, FanoutSink, ListSink, LoggingSink, NullSink

__all__ = ["EventSink", "FanoutSink", "ListSink", "LoggingSink", "NullSink", "WorkerPool", "WorkerSnapshot"]
