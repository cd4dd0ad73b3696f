"""Without the PyAV probe pool the scanner probes with ffprobe (through run_tool), says so once, and records the
same facts and decisions: forced in-process (the pool cannot start) and in a real `amphigory scan` whose
interpreter cannot import av."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from amphigory_tui.config import ScannerSettings, Settings
from amphigory_tui.domain.errors import AmphigoryError
from amphigory_tui.services import probe
from amphigory_tui.services.ffprobe import FfprobeProber
from amphigory_tui.services.scanner import Scanner
from amphigory_tui.store import MediaFilter, Store, open_store
from tests.scanner.conftest import (
    AVI,
    BIG,
    EMPTY,
    HEVC,
    IN_CLOSED_DIR,
    MEDIA,
    MPEG2,
    SAMPLE,
    SCOPE,
    TEXT,
    TRUNCATED,
    make_config,
    settings_with,
)

ALL_AS_ROOT = (*MEDIA, IN_CLOSED_DIR)

# `python -m amphigory_tui` in an interpreter where `import av` fails, as on a machine without PyAV.
NO_AV = "import sys; sys.modules['av'] = None; from amphigory_tui.cli import main; main()"


def test_the_scanner_falls_back_to_ffprobe_when_the_pool_cannot_start(
    library: Path, store: Store, pool: probe.ProbePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One notice; every file recorded with the facts, names and reasons the PyAV pool gives."""

    def refuse(cls: type[probe.ProbePool], settings: ScannerSettings) -> probe.ProbePool:
        raise AmphigoryError("the fork server cannot start")

    monkeypatch.setattr(probe.ProbePool, "from_settings", classmethod(refuse))
    notes: list[str] = []
    with Scanner(store, settings_with(scanner__probe_workers=2), on_notice=notes.append) as scanner:
        summary = scanner.scan([str(library)])
        assert isinstance(scanner._prober, FfprobeProber)
    assert notes == [
        "the PyAV probe pool is unavailable (the fork server cannot start); probing with ffprobe instead (slower)"
    ]
    assert summary.notice == notes[0]
    assert (summary.seen, summary.added, summary.probe_errors) == (len(ALL_AS_ROOT), len(ALL_AS_ROOT), 3)
    got = {m.path: m for m in store.media.list_media(MediaFilter(include_missing=True))}
    for rel in (BIG, MPEG2, HEVC, AVI, SCOPE, SAMPLE):
        path = str(library / rel)
        expected = pool.probe(path)
        row = got[path]
        assert (row.probe.container, row.probe.video_codec, row.probe.width, row.probe.height) == (
            expected.container,
            expected.video_codec,
            expected.width,
            expected.height,
        ), rel
        assert [a.codec for a in row.probe.audio] == [a.codec for a in expected.audio], rel
        assert row.probe.error is None, rel
    assert re.fullmatch(r"h264 1080p → hevc, est\. −\d+ %", got[str(library / BIG)].reason)
    assert got[str(library / HEVC)].reason == "already hevc"
    assert got[str(library / EMPTY)].probe_error == "empty file (0 bytes)"
    assert (got[str(library / TEXT)].probe_error or "").startswith("not a media file")
    assert (got[str(library / TRUNCATED)].probe_error or "").startswith("truncated")  # the structure check


def test_the_ffprobe_prober_stops_soon_after_a_cancel(library: Path) -> None:
    """A cancel ends the stream without results for unfinished files, and no ffprobe is left running."""
    prober = FfprobeProber(2, 30.0)
    cancel = threading.Event()
    paths = [str(library / p) for p in (BIG, MPEG2, HEVC, AVI, SCOPE, SAMPLE)] * 5
    got = []
    for path, result in prober.probe_many(paths, cancel):
        got.append(path)
        assert result.error is None
        cancel.set()
    assert 1 <= len(got) < len(paths)
    children = subprocess.run(["pgrep", "-P", str(os.getpid()), "ffprobe"], capture_output=True, text=True)
    assert children.stdout == ""


def test_amphigory_scan_without_pyav_probes_with_ffprobe(library: Path, tmp_path: Path) -> None:
    """`import av` fails: one note on stderr, the scan completes with the usual summary and errors."""
    config = make_config(tmp_path, probe_workers=2)
    result = subprocess.run(
        [sys.executable, "-c", NO_AV, "--config", str(config), "scan", str(library)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "ffprobe" in line]
    assert len(notes) == 1 and notes[0].startswith("note: the PyAV probe pool is unavailable (PyAV cannot be imported")
    assert "Traceback" not in result.stderr
    assert f"Scan complete: {len(ALL_AS_ROOT)} files" in result.stdout
    assert re.search(r"^  probe errors\s+3 \(3 new\)$", result.stdout, re.MULTILINE)
    store = open_store(Settings(), url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        big = store.media.get_by_path(str(library / BIG))
        assert big is not None and big.probe.video_codec == "h264" and big.should_transcode
    finally:
        store.close()
