"""Where the pool's events go: the ``EventSink`` protocol and the sinks that need no UI.

The pool never imports Textual: the TUI passes a sink that posts messages (``post_message`` is thread-safe), the
headless worker passes ``LoggingSink``, tests pass ``ListSink``. ``emit`` is called from the pool's event loop and
must not block: no I/O beyond a log line, no database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol, TypeVar

from amphigory_tui.domain.events import Event, JobChanged, JobProgress, LogRecord, WorkerBeat

__all__ = ["EventSink", "FanoutSink", "ListSink", "LoggingSink", "NullSink"]

E = TypeVar("E")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class EventSink(Protocol):
    """Receives the pool's events; ``emit`` must be thread-safe, quick and never raise."""

    def emit(self, event: Event) -> None:
        """Take one event."""
        ...


class NullSink:
    """Drops every event (benchmarks)."""

    def emit(self, event: Event) -> None:
        """Ignore ``event``."""


class LoggingSink:
    """Writes events to a ``logging`` logger: job changes and log lines at their level, progress at debug."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("amphigory.pool")

    def emit(self, event: Event) -> None:
        """Log one event."""
        log = self.logger
        if isinstance(event, LogRecord):
            prefix = f"job {event.job_id}: " if event.job_id is not None else ""
            log.log(_LEVELS.get(event.level, logging.INFO), "%s%s", prefix, event.message)
        elif isinstance(event, JobChanged):
            stage = f" ({event.stage.value})" if event.stage else ""
            message = f": {event.message}" if event.message else ""
            log.info("job %s %s%s%s", event.job_id, event.status.value, stage, message)
        elif not log.isEnabledFor(logging.DEBUG):
            return
        elif isinstance(event, JobProgress):
            log.debug("job %s %s %.1f%%", event.job_id, event.stage.value, event.percent)
        elif isinstance(event, WorkerBeat):
            log.debug("worker %s %s job=%s", event.worker_id, event.state, event.job_id)


class ListSink:
    """Keeps every event in a list (tests); safe to read from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def emit(self, event: Event) -> None:
        """Append ``event``."""
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[Event]:
        """A copy of the events so far, oldest first."""
        with self._lock:
            return list(self._events)

    def of_type(self, kind: type[E]) -> list[E]:
        """The events of one class."""
        return [e for e in self.events if isinstance(e, kind)]

    def clear(self) -> None:
        """Forget the events so far."""
        with self._lock:
            self._events.clear()


class FanoutSink:
    """Sends each event to several sinks; one failing sink does not starve the others."""

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self.sinks = tuple(sinks)
        self._logger = logging.getLogger("amphigory.pool")

    def emit(self, event: Event) -> None:
        """Pass ``event`` to every sink."""
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:  # a broken UI bridge must never stop the workers
                self._logger.exception("event sink %r failed", sink)
