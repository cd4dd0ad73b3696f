"""WorkerStore: the ``workers`` registry every amphigory process writes, so every other one can see it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import cast

from sqlalchemy import Table, delete, select, update

from amphigory_tui.domain.clock import Clock
from amphigory_tui.domain.workers import WorkerInfo
from amphigory_tui.store.convert import worker_from_row
from amphigory_tui.store.engine import Engines
from amphigory_tui.store.orm import WorkerRow

W = cast(Table, WorkerRow.__table__)


class WorkerStore:
    """Register, beat, list and prune workers."""

    def __init__(self, engines: Engines, clock: Clock) -> None:
        self._db = engines
        self._clock = clock

    def register(self, worker_id: str, host: str, pid: int, *, heartbeat_interval_s: float | None = None) -> WorkerInfo:
        """Add a worker row (idle) that beats every ``heartbeat_interval_s``."""
        now = self._clock.now()
        info = WorkerInfo(
            id=worker_id,
            host=host,
            pid=pid,
            state="idle",
            started_at=now,
            last_seen=now,
            current_job_id=None,
            heartbeat_interval_s=heartbeat_interval_s,
        )
        with self._db.write() as conn:
            conn.execute(delete(W).where(W.c.id == worker_id))
            conn.execute(W.insert().values(asdict(info)))
        return info

    def beat(self, worker_id: str, state: str, current_job_id: int | None) -> None:
        """Update one worker's state and ``last_seen``."""
        with self._db.write() as conn:
            conn.execute(
                update(W)
                .where(W.c.id == worker_id)
                .values(state=state, current_job_id=current_job_id, last_seen=self._clock.now())
            )

    def beat_many(self, beats: Sequence[tuple[str, str, int | None]]) -> None:
        """Update several workers of this process in one transaction: ``(id, state, job)``."""
        if not beats:
            return
        now = self._clock.now()
        with self._db.write() as conn:
            for worker_id, state, job_id in beats:
                conn.execute(
                    update(W).where(W.c.id == worker_id).values(state=state, current_job_id=job_id, last_seen=now)
                )

    def unregister(self, worker_ids: Sequence[str]) -> None:
        """Remove workers that stopped cleanly."""
        if worker_ids:
            with self._db.write() as conn:
                conn.execute(delete(W).where(W.c.id.in_(list(worker_ids))))

    def list_workers(self) -> list[WorkerInfo]:
        """Every registered worker, of every process."""
        with self._db.read() as conn:
            rows = conn.execute(select(W).order_by(W.c.host, W.c.pid, W.c.started_at, W.c.id)).mappings().all()
        return [worker_from_row(r) for r in rows]

    def prune(self, worker_ids: Sequence[str]) -> int:
        """Delete the rows of workers known to be dead."""
        if not worker_ids:
            return 0
        with self._db.write() as conn:
            return int(conn.execute(delete(W).where(W.c.id.in_(list(worker_ids)))).rowcount or 0)
