"""The CLI skeleton: version, db upgrade, queue, jobs, job actions, doctor."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from amphigory_tui import __version__
from amphigory_tui.config import Settings
from amphigory_tui.domain.media import Decision, ProbeResult
from amphigory_tui.store import MediaRecord, open_store


def amphigory(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess."""
    argv = [sys.executable, "-m", "amphigory_tui"]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60)


def make_config(tmp_path: Path) -> Path:
    """A config with its own SQLite database."""
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "db.sqlite"}"\n')
    return path


def test_version() -> None:
    """--version prints the package version."""
    result = amphigory("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_db_upgrade_then_queue_and_list(tmp_path: Path) -> None:
    """`db upgrade` migrates; `queue` prints "Queued N jobs" and is idempotent; `jobs --json` lists them."""
    config = make_config(tmp_path)
    assert amphigory("db", "upgrade", config=config).returncode == 0
    store = open_store(Settings(), url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.media.upsert(
        [
            MediaRecord(
                f"/lib/m{i}.mkv", "/lib", 10_000 + i, 1, ProbeResult(video_codec="h264"), Decision(True, "h264")
            )
            for i in range(3)
        ]
    )
    store.close()
    first = amphigory("queue", config=config)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Queued 3 jobs"
    second = amphigory("queue", config=config)
    assert second.stdout.strip() == "Queued 0 jobs — all candidates already queued"
    listed = json.loads(amphigory("jobs", "--json", config=config).stdout)
    assert sorted(j["input_path"] for j in listed) == ["/lib/m0.mkv", "/lib/m1.mkv", "/lib/m2.mkv"]
    assert {j["status"] for j in listed} == {"queued"}


def test_job_actions_and_errors(tmp_path: Path) -> None:
    """`job pause/resume/cancel/retry/priority` change the store; a bad id is one line with exit 1."""
    config = make_config(tmp_path)
    store = open_store(Settings(), url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    job = store.jobs.create("/lib/x.mkv")
    store.close()
    assert amphigory("job", "pause", str(job.id), config=config).stdout.strip() == f"job {job.id}: paused"
    assert amphigory("job", "resume", str(job.id), config=config).stdout.strip() == f"job {job.id}: queued"
    assert amphigory("job", "priority", str(job.id), "90", config=config).stdout.strip() == f"job {job.id}: priority 90"
    assert amphigory("job", "cancel", str(job.id), config=config).stdout.strip() == f"job {job.id}: canceled"
    resumed = amphigory("job", "resume", str(job.id), config=config)
    assert resumed.returncode == 1
    assert resumed.stderr.strip() == f"amphigory: job {job.id} cannot go from canceled to queued"
    assert amphigory("job", "retry", str(job.id), config=config).stdout.strip() == f"job {job.id}: queued"
    missing = amphigory("job", "pause", "999", config=config)
    assert missing.returncode == 1 and missing.stderr.strip() == "amphigory: job 999 does not exist"
    usage = amphigory("job", "priority", str(job.id), "101", config=config)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_doctor_reports_tools_and_database(tmp_path: Path) -> None:
    """doctor finds HandBrakeCLI and ffprobe, and names an unmigrated database with the fix."""
    config = make_config(tmp_path)
    before = amphigory("doctor", config=config)
    assert before.returncode == 1
    assert "HandBrake 1." in before.stdout
    assert "run: amphigory db upgrade" in before.stdout
    amphigory("db", "upgrade", config=config)
    after = amphigory("doctor", config=config)
    assert after.returncode == 0, after.stdout
    assert "[ok  ] database" in after.stdout


def test_doctor_names_a_missing_tool(tmp_path: Path) -> None:
    """A missing HandBrakeCLI is named with how to install it."""
    config = make_config(tmp_path)
    config.write_text(config.read_text() + '[tools]\nhandbrake = "HandBrakeCLI-not-here"\n')
    amphigory("db", "upgrade", config=config)
    result = amphigory("doctor", config=config)
    assert result.returncode == 1
    assert "HandBrakeCLI-not-here was not found; install it with: apt-get install handbrake-cli" in result.stdout


def test_a_database_from_a_newer_version_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A revision this version does not know (a newer amphigory migrated it): exit 1, one line naming the database."""
    config = make_config(tmp_path)
    assert amphigory("db", "upgrade", config=config).returncode == 0
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    result = amphigory("jobs", config=config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert "db.sqlite" in result.stderr and "'9999'" in result.stderr and "newer version" in result.stderr
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("9999",)
