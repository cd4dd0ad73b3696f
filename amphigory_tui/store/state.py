"""StateStore and LogStore: small key/value facts and the processing log."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, select

from amphigory_tui.domain.clock import Clock
from amphigory_tui.domain.events import LogRecord
from amphigory_tui.store.engine import Engines
from amphigory_tui.store.orm import ProcessingLogRow, SystemStateRow

S = cast(Table, SystemStateRow.__table__)
L = cast(Table, ProcessingLogRow.__table__)


class StateStore:
    """``system_state``: scan checkpoint, last scan time and similar facts."""

    def __init__(self, engines: Engines, clock: Clock) -> None:
        self._db = engines
        self._clock = clock

    def get(self, key: str) -> str | None:
        """The value of ``key``, if set."""
        with self._db.read() as conn:
            return conn.execute(select(S.c.value).where(S.c.key == key)).scalar_one_or_none()

    def set(self, key: str, value: str) -> None:
        """Set ``key`` (insert or replace)."""
        with self._db.write() as conn:
            conn.execute(delete(S).where(S.c.key == key))
            conn.execute(S.insert().values(key=key, value=value, updated_at=self._clock.now()))

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        with self._db.write() as conn:
            conn.execute(delete(S).where(S.c.key == key))


class LogStore:
    """``processing_log``: what happened, for the Log tab and the job detail screen."""

    def __init__(self, engines: Engines, clock: Clock) -> None:
        self._db = engines
        self._clock = clock

    def append(
        self,
        message: str,
        *,
        level: str = "info",
        event_type: str = "",
        job_id: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Add one line."""
        with self._db.write() as conn:
            conn.execute(
                L.insert().values(
                    job_id=job_id,
                    level=level,
                    event_type=event_type,
                    message=message,
                    details_json=json.dumps(details, ensure_ascii=False) if details else None,
                    created_at=self._clock.now(),
                )
            )

    def append_many(self, entries: Sequence[tuple[LogRecord, str, dict[str, Any] | None]]) -> None:
        """Add many lines in one transaction: ``(record, event_type, details)``; a record's ``created_at`` is kept."""
        if not entries:
            return
        now = self._clock.now()
        rows = [
            {
                "job_id": record.job_id,
                "level": record.level,
                "event_type": event_type,
                "message": record.message,
                "details_json": json.dumps(details, ensure_ascii=False) if details else None,
                "created_at": record.created_at if record.created_at is not None else now,
            }
            for record, event_type, details in entries
        ]
        with self._db.write() as conn:
            conn.execute(L.insert(), rows)

    def tail(self, *, after_id: int = 0, limit: int = 500, job_id: int | None = None) -> list[tuple[int, LogRecord]]:
        """Lines newer than ``after_id`` (oldest first), at most ``limit`` of the newest."""
        query = select(L.c.id, L.c.level, L.c.message, L.c.job_id, L.c.created_at).where(L.c.id > after_id)
        if job_id is not None:
            query = query.where(L.c.job_id == job_id)
        query = query.order_by(L.c.id.desc()).limit(limit)
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        return [
            (row.id, LogRecord(level=row.level, message=row.message, job_id=row.job_id, created_at=row.created_at))
            for row in reversed(rows)
        ]
