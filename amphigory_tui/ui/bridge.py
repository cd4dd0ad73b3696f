"""The UI's EventSink: pool and scanner events become Textual messages, progress coalesced per job.

``emit`` may be called from any thread (the pool's task, a tool-reader thread, the scanner's thread):
``post_message`` is thread-safe. Progress events arrive many times a second per job; instead of one message each,
the latest progress per job waits in a dict and one ``ProgressFlush`` message drains it, so a burst from four jobs
costs one UI update.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from textual.app import App

from amphigory_tui.domain.events import Event, JobChanged, JobProgress, LogRecord, ScanProgress, WorkerBeat
from amphigory_tui.ui.messages import JobStatusChanged, LogAppended, ProgressFlush, ScanProgressed, WorkerBeaten

MAX_PENDING_LOG = 2000


class UiSink:
    """An ``EventSink`` posting to a Textual app."""

    def __init__(self, app: App[Any]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._progress: dict[int, JobProgress] = {}
        self._flush_posted = False
        self._log: list[LogRecord] = []
        self._log_posted = False

    def emit(self, event: Event) -> None:
        """Turn one domain event into a message for the app (thread-safe)."""
        if isinstance(event, JobProgress):
            with self._lock:
                self._progress[event.job_id] = event
                post = not self._flush_posted
                self._flush_posted = True
            if post:
                self._app.post_message(ProgressFlush())
        elif isinstance(event, JobChanged):
            self._app.post_message(JobStatusChanged(event))
        elif isinstance(event, WorkerBeat):
            self._app.post_message(WorkerBeaten(event))
        elif isinstance(event, LogRecord):
            self.emit_log(event)
        elif isinstance(event, ScanProgress):
            self._app.post_message(ScanProgressed(event))

    def emit_log(self, record: LogRecord) -> None:
        """Queue a log record for the Log tab (batched like progress)."""
        with self._lock:
            if len(self._log) < MAX_PENDING_LOG:
                self._log.append(record)
            post = not self._log_posted
            self._log_posted = True
        if post:
            self._app.post_message(LogAppended([]))

    def drain_progress(self) -> dict[int, JobProgress]:
        """The latest progress of each job since the last drain (call on the UI thread)."""
        with self._lock:
            out, self._progress = self._progress, {}
            self._flush_posted = False
        return out

    def drain_log(self) -> list[LogRecord]:
        """Log records queued since the last drain."""
        with self._lock:
            out, self._log = self._log, []
            self._log_posted = False
        return out


class UiLogHandler(logging.Handler):
    """Sends this process's own ``logging`` records to the Log tab."""

    def __init__(self, sink: UiSink, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        """Forward one record (never raises: logging must not break the app)."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in someone's log call
            message = str(record.msg)
        self._sink.emit_log(LogRecord(level=record.levelname.lower(), message=message, created_at=record.created))
