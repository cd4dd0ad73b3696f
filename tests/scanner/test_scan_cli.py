"""`amphigory scan` as a real subprocess: decisions and reasons on the real library (file permissions enforced),
argument errors, --queue, --reevaluate, Ctrl+C with a checkpoint, and kill -9 followed by a resumed scan."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from amphigory_tui.config import Settings
from amphigory_tui.domain.media import MediaFile
from amphigory_tui.services.probe import FAULTS_ENV, HANG_MARKER
from amphigory_tui.services.queries import LAST_SCAN_KEY
from amphigory_tui.services.scanner import CHECKPOINT_KEY, Checkpoint
from amphigory_tui.services.walk import sort_key
from amphigory_tui.store import MediaFilter, Store, open_store
from tests.media import make_clip
from tests.scanner.conftest import (
    AVI,
    BIG,
    CLOSED_DIR,
    DEEP,
    EMPTY,
    HEVC,
    HOSTILE,
    MEDIA,
    MPEG2,
    SAMPLE,
    SCOPE,
    TEXT,
    TRUNCATED,
    UNREADABLE,
    amphigory_argv,
    make_config,
    run_amphigory,
)


def open_db(tmp_path: Path) -> Store:
    """The store the CLI wrote to."""
    return open_store(Settings(), url=f"sqlite:///{tmp_path / 'db.sqlite'}")


def state(tmp_path: Path, key: str) -> str | None:
    """A system_state value, read with plain sqlite3 (safe to poll while the CLI writes)."""
    db = tmp_path / "db.sqlite"
    if not db.exists():
        return None
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            row = conn.execute("SELECT value FROM system_state WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None  # not migrated yet
    return row[0] if row else None


def summary_counts(stdout: str) -> dict[str, int]:
    """The summary table: label -> number (``probe errors 4 (1 new)`` gives "probe errors" 4, "new probe errors" 1)."""
    counts: dict[str, int] = {}
    for m in re.finditer(r"^  ([a-z ]+?)\s+([\d,]+)(?: \(([\d,]+) new\))?$", stdout, re.MULTILINE):
        counts[m.group(1).strip()] = int(m.group(2).replace(",", ""))
        if m.group(3) is not None:
            counts[f"new {m.group(1).strip()}"] = int(m.group(3).replace(",", ""))
    return counts


def test_scan_records_every_decision_with_its_reason(library: Path, tmp_path: Path) -> None:
    """The full library as a non-privileged root would see it: facts, decisions, reasons, errors, summary."""
    config = make_config(tmp_path)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = run_amphigory(config, "scan", str(library), drop_dac=True, cwd=workdir)
    assert result.returncode == 0, result.stderr
    counts = summary_counts(result.stdout)
    assert counts["files"] == len(MEDIA)
    assert counts["added"] == len(MEDIA)
    assert counts["probe errors"] == 4  # empty, text, truncated, permission denied
    assert counts["unreadable"] == 1  # the closed folder
    assert f"cannot read folder {library / CLOSED_DIR}: Permission denied" in result.stdout
    assert "Traceback" not in result.stderr

    store = open_db(tmp_path)
    media = {m.path: m for m in store.media.list_media(MediaFilter(include_missing=True))}
    assert set(media) == {str(library / p) for p in MEDIA}

    def row(rel: str) -> MediaFile:
        return media[str(library / rel)]

    big = row(BIG)
    assert (big.probe.container, big.probe.video_codec, big.probe.width, big.probe.height) == (
        "matroska",
        "h264",
        1920,
        1080,
    )
    assert big.probe.audio and big.probe.audio[0].codec == "aac" and big.probe.audio[0].language == "eng"
    assert big.should_transcode and re.fullmatch(r"h264 1080p → hevc, est\. −\d+ %", big.reason)
    assert (row(SAMPLE).should_transcode, row(SAMPLE).reason) == (False, "excluded by pattern *sample*")
    mpg = row(MPEG2)
    assert (mpg.probe.video_codec, mpg.probe.audio[0].codec) == ("mpeg2video", "mp2")
    assert mpg.should_transcode and re.fullmatch(r"mpeg2video 480p → hevc, est\. −\d+ %", mpg.reason)
    assert (row(HEVC).should_transcode, row(HEVC).reason) == (False, "already hevc")
    avi = row(AVI)
    assert (avi.probe.container, avi.probe.video_codec, avi.probe.audio[0].codec) == ("avi", "mpeg4", "mp3")
    assert avi.reason.startswith("mpeg4 352p → hevc")
    scope = row(SCOPE)
    assert (scope.probe.width, scope.probe.height) == (1920, 800)
    assert scope.reason.startswith("h264 1080p → hevc")  # the larger of the width/height buckets
    assert scope.priority == big.priority > mpg.priority > 0
    assert row(DEEP).probe.video_codec == "h264"
    assert row(HOSTILE).probe.video_codec == "h264"
    for rel, reason in (
        (EMPTY, "probe error: empty file (0 bytes)"),
        (TEXT, "probe error: not a media file"),
        (TRUNCATED, "probe error: truncated"),
        (UNREADABLE, "probe error: permission denied"),
    ):
        assert row(rel).reason.startswith(reason), row(rel).reason
        assert row(rel).probe_error is not None and not row(rel).should_transcode
    assert counts["need transcoding"] == sum(m.should_transcode for m in media.values())

    # Broken files are never queued.
    store.jobs.queue_for_transcoding()
    queued = {j.input_path for j in store.jobs.list_jobs()}
    assert queued == {p for p, m in media.items() if m.should_transcode}
    assert not queued & {str(library / p) for p in (EMPTY, TEXT, TRUNCATED, UNREADABLE, SAMPLE, HEVC)}
    assert store.state.get(CHECKPOINT_KEY) is None
    assert store.state.get(LAST_SCAN_KEY) is not None
    store.close()
    # The hostile name ran nothing.
    assert not list(workdir.iterdir())
    assert not list(library.rglob("pwned"))


def test_queue_and_reevaluate_options(library: Path, tmp_path: Path) -> None:
    """--queue queues the candidates after the scan; --reevaluate re-decides without probing."""
    config = make_config(tmp_path)
    scanned = run_amphigory(config, "scan", "--queue", str(library))
    assert scanned.returncode == 0, scanned.stderr
    need = summary_counts(scanned.stdout)["need transcoding"]
    assert f"Queued {need} jobs" in scanned.stdout
    rescan = run_amphigory(config, "scan", str(library))
    counts = summary_counts(rescan.stdout)
    # Nothing probed, but the library's probe errors are still counted and listed, in path order.
    assert (counts["probe errors"], counts["new probe errors"], counts["unchanged"]) == (3, 0, counts["files"])
    listed = [line[4:].split(": ", 1)[0] for line in rescan.stdout.splitlines() if line.startswith("  ! ")]
    assert listed == sorted(str(library / p) for p in (EMPTY, TEXT, TRUNCATED))
    config.write_text(config.read_text() + "[rules]\nmin_size_mb = 100000\n", encoding="utf-8")
    again = run_amphigory(config, "scan", "--reevaluate", str(library))
    assert again.returncode == 0, again.stderr
    assert re.search(r"Re-evaluation done: \d+ files in [\d.]+ s; 0 need transcoding", again.stdout)
    assert f"Canceled {need} queued jobs whose files no longer need transcoding" in again.stdout
    store = open_db(tmp_path)
    assert store.media.get_by_path(str(library / BIG)).reason == "below min size 100000 MB"  # type: ignore[union-attr]
    store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["relative/dir"], "library root 'relative/dir' is a relative path; give an absolute path"),
        (["/no/such/library"], "library root /no/such/library does not exist"),
        ([], "no library roots: pass ROOT arguments or set [library] roots in the config file"),
        (["--reevaluate", "--watch", "/"], "--reevaluate and --watch cannot be used together"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    """Relative, missing or no roots, and conflicting options: one clear line, exit code 2."""
    result = run_amphigory(make_config(tmp_path), "scan", *args)
    assert result.returncode == 2
    assert result.stderr.strip() == f"amphigory: {message}"


def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """A file given as a root."""
    f = tmp_path / "movie.mkv"
    f.write_bytes(b"x")
    result = run_amphigory(make_config(tmp_path), "scan", str(f))
    assert (result.returncode, result.stderr.strip()) == (2, f"amphigory: library root {f} is not a directory")


# --------------------------------------------------------------------------------------------------- interruption


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree of 300 cheap real clips in 15 folders, then four files that hang the probe (with faults armed)."""
    root = tmp_path_factory.mktemp("bigtree") / "lib"
    clip = make_clip(root / "a00/clip000.mkv", seconds=0.2, width=64, height=64, acodec=None)
    data = clip.read_bytes()
    for i in range(300):
        path = root / f"a{i // 20:02d}/clip{i:03d}.mkv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "zz").mkdir()
    for i in range(4):
        (root / f"zz/{HANG_MARKER}{i}.mkv").write_bytes(data)
    return root


def _wait_for_checkpoint(proc: subprocess.Popen[str], tmp_path: Path) -> Checkpoint:
    """Poll the database until the scan has committed a checkpoint past at least one file."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = state(tmp_path, CHECKPOINT_KEY)
        cp = Checkpoint.from_json(text) if text else None
        # (A first checkpoint may have no `last` yet: files done out of order while the first is still probed.)
        if cp is not None and cp.last is not None:
            return cp
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("no checkpoint within 30 s")


def _rows(tmp_path: Path) -> dict[str, float]:
    """path -> probed_at of every recorded file."""
    with sqlite3.connect(tmp_path / "db.sqlite", timeout=5) as conn:
        return dict(conn.execute("SELECT path, probed_at FROM media_files").fetchall())


def test_kill_9_mid_scan_then_the_rerun_resumes_and_probes_nothing_twice(big_tree: Path, tmp_path: Path) -> None:
    """SIGKILL after the first checkpoint; the rerun says it resumes, re-probes nothing recorded, completes."""
    config = make_config(tmp_path, batch_size=10, probe_workers=2, probe_timeout_s=1.0)
    proc = subprocess.Popen(
        amphigory_argv(config, "scan", str(big_tree)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, FAULTS_ENV: "1"},  # the zz/ files hang the probe: the scan cannot finish quickly
        start_new_session=True,
    )
    try:
        _wait_for_checkpoint(proc, tmp_path)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its fork server and probe workers: nothing runs on
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    cp = Checkpoint.from_json(state(tmp_path, CHECKPOINT_KEY) or "")
    assert cp is not None and cp.last is not None  # killed mid-scan: the checkpoint is there
    recorded = _rows(tmp_path)
    total = sum(1 for _ in big_tree.rglob("*.mkv"))
    assert 0 < len(recorded) < total
    assert all(p in recorded for p in map(str, big_tree.rglob("*.mkv")) if sort_key(p) <= sort_key(cp.last))

    result = run_amphigory(config, "scan", str(big_tree))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"resuming interrupted scan from {cp.last}\n")
    final = _rows(tmp_path)
    assert set(final) == set(map(str, big_tree.rglob("*.mkv")))
    assert {p: final[p] for p in recorded} == recorded  # probed_at unchanged: nothing recorded was probed again
    assert summary_counts(result.stdout)["files"] == total  # every file counted once across both runs
    assert state(tmp_path, CHECKPOINT_KEY) is None
    assert state(tmp_path, LAST_SCAN_KEY) is not None


def test_ctrl_c_stops_with_a_checkpoint_and_exit_130(big_tree: Path, tmp_path: Path) -> None:
    """SIGINT mid-scan: "Scan canceled", the checkpoint stays, exit 130; the next scan resumes from it."""
    config = make_config(tmp_path, batch_size=10, probe_workers=2, probe_timeout_s=1.0)
    proc = subprocess.Popen(
        amphigory_argv(config, "scan", str(big_tree)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, FAULTS_ENV: "1"},
        start_new_session=True,
    )
    try:
        _wait_for_checkpoint(proc, tmp_path)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Scan canceled after" in stdout and "run `amphigory scan` again to resume" in stdout
    assert "Traceback" not in stderr
    cp = Checkpoint.from_json(state(tmp_path, CHECKPOINT_KEY) or "")
    assert cp is not None and cp.last is not None
    assert state(tmp_path, LAST_SCAN_KEY) is None
    recorded = _rows(tmp_path)
    assert all(p in recorded for p in map(str, big_tree.rglob("*.mkv")) if sort_key(p) <= sort_key(cp.last))
    resumed = run_amphigory(config, "scan", str(big_tree))
    assert resumed.stdout.startswith(f"resuming interrupted scan from {cp.last}\n")
    assert summary_counts(resumed.stdout)["files"] == sum(1 for _ in big_tree.rglob("*.mkv"))
