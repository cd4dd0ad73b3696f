"""Workers registered in the database: one row per claim loop of every amphigory process."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A snapshot of one row of ``workers``."""

    id: str
    host: str
    pid: int
    state: str
    started_at: float
    last_seen: float
    current_job_id: int | None
    heartbeat_interval_s: float | None = None
    """How often the worker's own process beats; None when its version did not say."""


def new_worker_id(host: str | None = None, pid: int | None = None) -> str:
    """A fresh worker id ``host:pid:uuid`` (unique per claim loop, so ownership checks are exact)."""
    return f"{host or socket.gethostname()}:{pid or os.getpid()}:{uuid.uuid4().hex[:12]}"


def parse_worker_id(worker_id: str) -> tuple[str, int] | None:
    """The ``(host, pid)`` of a worker id, or None when it is not in ``host:pid:uuid`` form."""
    host, sep, _uuid = worker_id.rpartition(":")
    if not sep:
        return None
    host, sep, pid = host.rpartition(":")
    if not sep or not pid.isdigit():
        return None
    return host, int(pid)
