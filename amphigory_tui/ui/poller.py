"""The poller: one long-lived thread that asks the database what changed, and posts it to the app.

Every ``interval`` seconds (or at once when poked) it reads the jobs changed since its last look (by
``updated_at``, re-reading a little of the past because writers' clocks and commits are not in perfect step), new
processing-log lines, and — while the Workers tab shows, or every tenth round — the worker registry. One thread
for the app's life costs less than a thread worker per poll, and the database is never touched on the UI thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from amphigory_tui.domain.clock import Clock
from amphigory_tui.domain.errors import AmphigoryError
from amphigory_tui.domain.jobs import Job
from amphigory_tui.domain.workers import WorkerInfo
from amphigory_tui.services.queries import Queries
from amphigory_tui.ui.messages import Polled

log = logging.getLogger(__name__)

OVERLAP_S = 2.0
"""Each poll re-reads this much of the past: writers' clocks and commit order are not perfectly in step."""
CHANGED_LIMIT = 1000
WORKERS_EVERY = 10


class Poller:
    """Polls in its own daemon thread; ``post`` receives each ``Polled`` (Textual's post_message is thread-safe)."""

    def __init__(self, queries: Queries, clock: Clock, post: Callable[[Polled], object], interval_s: float) -> None:
        self._queries = queries
        self._clock = clock
        self._post = post
        self.interval_s = interval_s
        self.since = clock.now() - OVERLAP_S
        self.log_after = 0
        self.want_workers = False
        """Set while the Workers tab shows: the registry is then read every round."""
        self._round = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amphigory-poll", daemon=True)
        self._failing = False

    def start(self) -> None:
        """Start polling (the first round at once)."""
        self._wake.set()
        self._thread.start()

    def poke(self) -> None:
        """Poll now instead of at the next interval."""
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and wait for it briefly."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                polled = self.poll_once()
            except AmphigoryError as exc:
                # A locked or vanished database: say it once, keep trying.
                if not self._failing:
                    log.warning("polling the database failed: %s", exc)
                self._failing = True
                continue
            except Exception:
                log.exception("polling the database failed")
                continue
            self._failing = False
            self._post(polled)

    def poll_once(self) -> Polled:
        """One round: read, advance the cursors, return the message."""
        queries = self._queries
        polled_at = self._clock.now()
        changed = queries.jobs_changed_since(self.since)
        workers: list[WorkerInfo] | None = None
        worker_jobs: dict[int, Job] = {}
        if self.want_workers or self._round % WORKERS_EVERY == 0:
            workers = queries.workers()
            busy = sorted({w.current_job_id for w in workers if w.current_job_id})
            worker_jobs = {job.id: job for job in queries.jobs_by_ids(busy)} if busy else {}
        self._round += 1
        log_rows = queries.log_tail(after_id=self.log_after, limit=500)
        if log_rows:
            self.log_after = log_rows[-1][0]
        self.since = polled_at - OVERLAP_S
        return Polled(changed, workers, worker_jobs, log_rows, polled_at, len(changed) >= CHANGED_LIMIT)
