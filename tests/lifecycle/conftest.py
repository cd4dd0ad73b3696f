"""Fixtures of the lifecycle tests: a real SQLite database, a work dir, a fixed clock, lock holders."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from amphigory_tui import paths
from amphigory_tui.config import DatabaseSettings, JobsSettings, PathsSettings, Settings, WorkersSettings
from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.services.runtime import Services, open_services

STALL_TIMEOUT_S = 60


def lifecycle_settings(tmp_path: Path, **workers: object) -> Settings:
    """Settings on a temp SQLite file and a temp work dir."""
    return Settings(
        database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'db' / 'amphigory.db'}"),
        paths=PathsSettings(work_dir=str(tmp_path / "work")),
        workers=WorkersSettings(
            heartbeat_interval_s=5, stall_timeout_s=int(workers.pop("stall_timeout_s", STALL_TIMEOUT_S)), **workers
        ),  # type: ignore[arg-type]
        jobs=JobsSettings(max_retries=3, retry_delay_s=0.0),
    )


@pytest.fixture
def clock() -> FixedClock:
    """A clock that moves only when the test says so."""
    return FixedClock()


@pytest.fixture
def services(tmp_path: Path, clock: FixedClock) -> Iterator[Services]:
    """Opened services on a fresh database, with the work dir created."""
    settings = lifecycle_settings(tmp_path)
    settings.work_dir.mkdir(parents=True)
    opened = open_services(settings, clock=clock)
    try:
        yield opened
    finally:
        opened.close()


class Holder:
    """A real process holding a ProcessLock (and optionally a child tool in its own group) until killed."""

    def __init__(self, lock_dir: Path, *, child: bool = False) -> None:
        code = textwrap.dedent(
            f"""
            import subprocess, sys, time
            from pathlib import Path
            from amphigory_tui.services.locks import ProcessLock
            lock = ProcessLock.acquire(Path({str(lock_dir)!r}))
            line = lock.key
            if {child!r}:
                tool = subprocess.Popen(["sleep", "120"], start_new_session=True)
                line += " " + str(tool.pid)
            print(line, flush=True)
            time.sleep(120)
            """
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
        )
        assert self.process.stdout is not None
        words = self.process.stdout.readline().split()
        self.key = words[0]
        self.child_pid = int(words[1]) if len(words) > 1 else None

    def worker_id(self, n: int = 1) -> str:
        """A worker id of this process's claim loop ``n``."""
        return f"{self.key}.{n}"

    def kill(self) -> None:
        """``kill -9`` the holder (its child tool, if any, keeps running)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def cleanup(self) -> None:
        """End the holder and its child (test teardown)."""
        self.kill()
        if self.child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child_pid, signal.SIGKILL)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    """Start lock holders with ``holders.append(Holder(...))``; all are killed at the end."""
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.cleanup()


@pytest.fixture
def lock_dir() -> Path:
    """This test's lock directory (the isolated user data dir's)."""
    return paths.lock_dir()
