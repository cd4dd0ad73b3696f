"""End to end: the real `amphigory` in tmux on a generated library, driven by keys, with the real HandBrakeCLI.

Press 1 and `s` (scan), wait for the scan; press 2 and `a`, see "Queued 2 jobs"; watch the jobs reach
completed on screen and in the database; `q` quits (nothing is running by then).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amphigory_tui.config import load_settings
from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.store import open_store
from tests.media import make_clip

TMUX = shutil.which("tmux") or "tmux"
AMPHIGORY = str(Path(sys.executable).with_name("amphigory"))
FAST = ["-e", "x264", "--encoder-preset", "ultrafast", "-q", "40", "-w", "320", "-l", "180"]


class Tmux:
    """One tmux server of our own (its own socket), one session, 120×40."""

    def __init__(self, env: dict[str, str]) -> None:
        self.socket = f"amphigory-e2e-{uuid.uuid4().hex[:8]}"
        self.env = env

    def run(self, *args: str) -> str:
        """A tmux command (argument list, never a shell); its stdout."""
        done = subprocess.run(
            [TMUX, "-L", self.socket, *args], env=self.env, capture_output=True, text=True, timeout=20, check=False
        )
        return done.stdout

    def start(self, *argv: str) -> None:
        """Start the session running ``argv``."""
        self.run("new-session", "-d", "-x", "120", "-y", "40", "-s", "amph", *argv)

    def keys(self, *keys: str) -> None:
        """Type keys into the session."""
        for key in keys:
            self.run("send-keys", "-t", "amph", key)
            time.sleep(0.15)

    def screen(self) -> str:
        """What the session shows now."""
        return self.run("capture-pane", "-p", "-t", "amph")

    def wait_for(self, what: Callable[[str], bool], timeout: float, label: str) -> str:
        """Capture the pane until ``what`` holds; fail with the screens seen (toasts vanish) and the Log tab."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            screen = self.screen()
            if what(screen):
                return screen
            if not seen or seen[-1] != screen:
                seen.append(screen)
            time.sleep(0.2)
        self.keys("4")
        log = self.screen()
        shown = "\n----\n".join(seen[-4:])
        raise AssertionError(f"timed out waiting for {label}; the last screens:\n{shown}\nthe Log tab:\n{log}")

    def alive(self) -> bool:
        """Whether the session still exists."""
        return (
            subprocess.run(
                [TMUX, "-L", self.socket, "has-session", "-t", "amph"], env=self.env, capture_output=True, check=False
            ).returncode
            == 0
        )

    def kill(self) -> None:
        """Stop the server (and the app, if it still runs)."""
        self.run("kill-server")


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """Two 2-second H.264 clips, a movie and an episode."""
    lib = tmp_path / "lib"
    make_clip(lib / "movies" / "Alpha (2001).mp4", seconds=2, width=640, height=360, bitrate="2M")
    make_clip(lib / "tv" / "Show" / "S01E01.mp4", seconds=2, width=640, height=360, bitrate="2M")
    return lib


@pytest.fixture
def tmux(tmp_path: Path, library: Path) -> Iterator[Tmux]:
    """A tmux server whose environment points amphigory at a config in tmp_path."""
    config = tmp_path / "config.toml"
    extra = ", ".join(f'"{a}"' for a in FAST)
    config.write_text(
        f"""
[database]
url = "sqlite:///{tmp_path / "amphigory.db"}"

[library]
roots = ["{library}"]

[paths]
work_dir = "{tmp_path / "work"}"

[workers]
count = 1
heartbeat_interval_s = 1
poll_interval_s = 0.2

[rules]
min_expected_savings_pct = 0

[transcode]
extra_args = [{extra}]

[ui]
poll_interval_s = 0.3
""",
        encoding="utf-8",
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "AMPHIGORY_CONFIG": str(config),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }
    session = Tmux(env)
    try:
        yield session
    finally:
        session.kill()


@pytest.mark.slow
def test_scan_queue_and_transcode_in_tmux(tmux: Tmux, tmp_path: Path) -> None:
    """The whole loop through the keyboard, checked on screen and in the database."""
    tmux.start(AMPHIGORY)
    tmux.wait_for(lambda s: "2 Queue" in s and "need transcoding" in s, 20, "the first screen")
    tmux.keys("1", "s")
    tmux.wait_for(lambda s: "Scan complete" in s and "2 files" in s, 60, "the scan to finish")
    tmux.keys("2", "a")
    tmux.wait_for(lambda s: "Queued 2 jobs" in s, 15, '"Queued 2 jobs"')
    screen = tmux.wait_for(
        lambda s: s.count("completed") >= 2 and "0 queued · 0 running · 0 failed" in s, 90, "both jobs to complete"
    )
    assert "Show/S01E01.mp4" in screen and "Alpha (2001).mp4" in screen

    settings = load_settings(tmp_path / "config.toml")
    store = open_store(settings, migrate=False)
    try:
        jobs = store.jobs.list_jobs()
        assert [j.status for j in jobs] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
        assert all(j.output_size and j.source_size and j.output_size < j.source_size for j in jobs)
    finally:
        store.close()

    tmux.keys("q")
    time.sleep(0.5)
    if "Quit amphigory?" in tmux.screen():
        # The pool may still be tidying up after the last job (its worker holds the job until then).
        tmux.keys("y")
    deadline = time.monotonic() + 15
    while tmux.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tmux.alive(), "amphigory did not quit on q; the screen:\n" + tmux.screen()
