"""Fixtures of the pool tests: a library of tiny real clips, a SQLite store in tmp_path, fast settings, helpers."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from amphigory_tui.config import Settings, settings_from_mapping
from amphigory_tui.domain.jobs import Job, JobStatus
from amphigory_tui.pool import ListSink, WorkerPool
from amphigory_tui.store import Store, open_store
from tests.media import make_clip

HANDBRAKE = shutil.which("HandBrakeCLI") or "/usr/bin/HandBrakeCLI"
# A fast, small encode (TOOLS.md §7): 0.7 s for a 2 s clip.
FAST_ARGS = ["-e", "x264", "--encoder-preset", "ultrafast", "-q", "40", "-w", "320", "-l", "180"]


@dataclass(frozen=True)
class Clips:
    """Session-wide source clips; tests copy them into their own library."""

    plain: Path
    """2 s, 320×180, H.264 + one AAC track."""
    two_audio: Path
    """2 s, 320×180, two audio tracks (eng, fra)."""
    low_bitrate: Path
    """2 s at 30 kbit/s: a normal encode comes out larger."""
    long: Path
    """6 s: long enough to act on mid-encode."""


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    """Make the source clips once."""
    base = tmp_path_factory.mktemp("clips")
    return Clips(
        plain=make_clip(base / "plain.mp4", seconds=2),
        two_audio=make_clip(base / "two_audio.mkv", seconds=2, audio_languages=("eng", "fra")),
        low_bitrate=make_clip(base / "low.mp4", seconds=2, bitrate="30k"),
        long=make_clip(base / "long.mp4", seconds=6),
    )


@dataclass
class Env:
    """One test's world: library, work dir, backup dir, database."""

    root: Path
    lib: Path
    work: Path
    backup: Path
    db_url: str
    stores: list[Store]

    def settings(self, **sections: dict[str, Any]) -> Settings:
        """Fast test settings; ``sections`` override whole keys per section (``transcode={...}``)."""
        data: dict[str, dict[str, Any]] = {
            "database": {"url": self.db_url},
            "paths": {"work_dir": str(self.work), "backup_dir": str(self.backup)},
            "workers": {"count": 1, "heartbeat_interval_s": 1, "stall_timeout_s": 30, "poll_interval_s": 0.1},
            "jobs": {"max_retries": 3, "retry_delay_s": 0, "retry_backoff": 1},
            "transcode": {"extra_args": FAST_ARGS},
        }
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        return settings_from_mapping(data)

    def store(self, settings: Settings) -> Store:
        """A store on this env's database (closed at teardown)."""
        opened = open_store(settings)
        self.stores.append(opened)
        return opened

    def add(self, clip: Path, name: str, store: Store, **kwargs: Any) -> tuple[Path, Job]:
        """Copy ``clip`` into the library as ``name`` and queue a job for it."""
        path = self.lib / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, path)
        st = path.stat()
        job = store.jobs.create(str(path), source_size=st.st_size, source_mtime_ns=st.st_mtime_ns, **kwargs)
        return path, job


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A fresh library and database."""
    root = tmp_path
    e = Env(
        root=root,
        lib=root / "lib",
        work=root / "work",
        backup=root / "backup",
        db_url=f"sqlite:///{root / 'amphigory.db'}",
        stores=[],
    )
    e.lib.mkdir()
    yield e
    for s in e.stores:
        s.close()


def make_script(path: Path, body: str) -> Path:
    """An executable Python script (a stand-in for HandBrakeCLI)."""
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


async def run_drain(pool: WorkerPool, timeout: float = 60.0) -> None:
    """Run a drain-mode pool to its end."""
    with anyio.fail_after(timeout):
        await pool.run()


async def run_until(
    pool: WorkerPool,
    condition: Callable[[], bool],
    *,
    timeout: float = 30.0,
    action: Callable[[], object] | None = None,
    then: Callable[[], bool] | None = None,
) -> None:
    """Run the pool until ``condition()``; call ``action()``; wait for ``then()`` (if given); shut down."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run)
        with anyio.fail_after(timeout):
            while not condition():
                await anyio.sleep(0.02)
            if action is not None:
                action()
            if then is not None:
                while not then():
                    await anyio.sleep(0.02)
            await pool.shutdown()


def status_is(store: Store, job_id: int, *statuses: JobStatus) -> Callable[[], bool]:
    """A condition: the job has one of ``statuses``."""
    return lambda: store.jobs.get(job_id).status in statuses


def child_pid(store: Store, job_id: int) -> Callable[[], bool]:
    """A condition: the job has recorded its child's pid."""
    return lambda: store.jobs.get(job_id).child_pid is not None


def pid_gone(pid: int) -> bool:
    """Whether no live process has ``pid`` (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def stop_process(pid: int) -> None:
    """SIGSTOP a tool (it makes no progress until continued or killed)."""
    os.kill(pid, signal.SIGSTOP)


def leftovers(env: Env) -> list[Path]:
    """Temp files anywhere: the work dir's contents and hidden ``.amphigory-*`` names in the library."""
    found = [p for p in env.work.rglob("*")] if env.work.exists() else []
    found += [p for p in env.lib.rglob(".amphigory-*")]
    return found


@pytest.fixture
def sink() -> ListSink:
    """Collects the pool's events."""
    return ListSink()
