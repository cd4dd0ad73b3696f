"""The scanner's test library (real clips made by ffmpeg once per session), stores, and a counting prober.

The library has one "unreadable" file and one unreadable folder (mode 000). We run as root, and root ignores mode
bits (CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH), so the test that needs them unreadable runs ``amphigory scan`` under
``setpriv`` with those two capabilities dropped from its bounding and inheritable sets: a root process without them
gets EACCES like anyone else. In-process tests read them as root can (they see an ordinary clip there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from amphigory_tui.config import Settings
from amphigory_tui.domain.media import MediaFile, ProbeResult
from amphigory_tui.services.probe import ProbePool
from amphigory_tui.store import MediaFilter, Store, open_store
from tests.media import make_clip, make_truncated

HOSTILE_NAME = 'Tom\'s "Movie" – Café 日本語 $(touch pwned) `id` & ; [x].mkv'

BIG = "Movies/Big Movie (2020)/Big Movie (2020).mkv"
SAMPLE = "Movies/Big Movie (2020)/Big Movie (2020)-sample.mkv"
NFO = "Movies/Big Movie (2020)/Big Movie (2020).nfo"
MPEG2 = "TV/Old Show/Season 01/Old Show - S01E01.mpg"
HEVC = "Already HEVC/Already HEVC.mkv"
AVI = "Legacy/legacy_xvid.avi"
SCOPE = "Scope/Wide Film (2019).mkv"
HOSTILE = f"Weird/{HOSTILE_NAME}"
DEEP = "Collection/Sub/Deeper/Deepest/deep movie.MP4"
EMPTY = "Broken/empty.mkv"
TRUNCATED = "Broken/truncated.mkv"
TEXT = "Broken/not_a_video.mkv"
UNREADABLE = "Locked/unreadable.mkv"
CLOSED_DIR = "Locked/closed"
IN_CLOSED_DIR = "Locked/closed/hidden.mkv"

MEDIA = (BIG, SAMPLE, MPEG2, HEVC, AVI, SCOPE, HOSTILE, DEEP, EMPTY, TRUNCATED, TEXT, UNREADABLE)
"""Every media file a scan as root finds (the file in the closed folder too, as root)."""
ALL_AS_ROOT = (*MEDIA, IN_CLOSED_DIR)
"""As root (in-process) the closed folder is readable too."""


def rows(store: Store) -> dict[str, MediaFile]:
    """Every media row (missing ones too), by path."""
    return {m.path: m for m in store.media.list_media(MediaFilter(include_missing=True))}


DROP_DAC = ["--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search"]


@pytest.fixture(scope="session")
def library_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pristine library; tests copy it (``library``) before changing anything."""
    d = tmp_path_factory.mktemp("scanlib") / "library"
    make_clip(d / BIG, seconds=1, width=1920, height=1080, bitrate="8M")
    shutil.copy(d / BIG, d / SAMPLE)
    (d / NFO).write_text("<movie/>\n", encoding="utf-8")
    make_clip(d / MPEG2, seconds=1, width=720, height=480, vcodec="mpeg2video", acodec="mp2", bitrate="5M")
    make_clip(d / HEVC, seconds=1, vcodec="libx265")
    make_clip(d / AVI, seconds=1, width=640, height=352, vcodec="mpeg4", acodec="libmp3lame", bitrate="2M")
    make_clip(d / SCOPE, seconds=1, width=1920, height=800, bitrate="8M")
    small = make_clip(d / HOSTILE, seconds=1)
    make_clip(d / DEEP, seconds=1, width=854, height=480)
    (d / EMPTY).parent.mkdir(parents=True, exist_ok=True)
    (d / EMPTY).write_bytes(b"")
    make_truncated(d / BIG, d / TRUNCATED)
    (d / TEXT).write_text("this is not a video\n" * 50, encoding="utf-8")
    (d / "Extras").mkdir()
    (d / "Extras/readme.txt").write_text("not media\n", encoding="utf-8")
    (d / UNREADABLE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(small, d / UNREADABLE)
    (d / CLOSED_DIR).mkdir()
    shutil.copy(small, d / IN_CLOSED_DIR)
    os.chmod(d / UNREADABLE, 0)
    os.chmod(d / CLOSED_DIR, 0)
    return d


@pytest.fixture
def library(library_src: Path, tmp_path: Path) -> Path:
    """A private copy of the library (modes kept) that a test may change."""
    dest = tmp_path / "library"
    shutil.copytree(library_src, dest, symlinks=True)
    return dest


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite store."""
    s = open_store(Settings(), url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield s
    s.close()


@pytest.fixture(scope="session")
def pool() -> Iterator[ProbePool]:
    """One real probe pool for the session's in-process scans; 2 workers × depth 2 = at most 4 files in flight,
    which the cancel/resume tests count on (the walk waits while 4 probes are out)."""
    with ProbePool(2, 20.0, depth=2) as p:
        yield p


class CountingProber:
    """Wraps a prober: remembers every probed path; ``after_each`` may act (e.g. cancel) after each result."""

    def __init__(self, inner: ProbePool, after_each: Callable[[int], None] | None = None) -> None:
        self.inner = inner
        self.paths: list[str] = []
        self.after_each = after_each
        self.lock = threading.Lock()

    def probe_many(
        self, paths: Iterable[str], cancel: threading.Event | None = None
    ) -> Iterator[tuple[str, ProbeResult]]:
        """Delegate, counting."""
        for path, result in self.inner.probe_many(paths, cancel):
            with self.lock:
                self.paths.append(path)
            if self.after_each is not None:
                self.after_each(len(self.paths))
            yield path, result

    @property
    def count(self) -> int:
        """How many files were probed."""
        return len(self.paths)


@pytest.fixture
def counting(pool: ProbePool) -> CountingProber:
    """A counting wrapper around the session pool."""
    return CountingProber(pool)


def make_config(tmp_path: Path, **scanner: object) -> Path:
    """A config file with its own database and ``[scanner]`` overrides."""
    lines = ["[database]", f'url = "sqlite:///{tmp_path / "db.sqlite"}"', "[scanner]"]
    for key, value in scanner.items():
        lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def amphigory_argv(config: Path, *args: str, drop_dac: bool = False) -> list[str]:
    """The argv of a real ``python -m amphigory_tui`` (optionally without root's file-permission override)."""
    argv = [sys.executable, "-m", "amphigory_tui", "--config", str(config), *args]
    return ["setpriv", *DROP_DAC, *argv] if drop_dac else argv


def run_amphigory(
    config: Path, *args: str, drop_dac: bool = False, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    return subprocess.run(
        amphigory_argv(config, *args, drop_dac=drop_dac),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def settings_with(**values: object) -> Settings:
    """Default settings with some dotted keys changed (``scanner__batch_size=5``)."""
    s = Settings()
    for key, value in values.items():
        s = s.with_value(key.replace("__", "."), value)
    return s
