"""The store calls the pool added (complete_and_claim, heartbeat_many, pending_later, append_many,
record_transcoded), on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from amphigory_tui.config import JobsSettings, Settings
from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.errors import StaleLease
from amphigory_tui.domain.events import LogRecord
from amphigory_tui.domain.jobs import JobStatus, Progress
from amphigory_tui.domain.media import Decision, ProbeResult
from amphigory_tui.store import MediaRecord, Store, WriterBusy, open_store
from amphigory_tui.store.jobs import Completion


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store on each engine with a fixed clock."""
    url = (
        f"sqlite:///{tmp_path / 'a.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("fresh_postgres_url"))
    )
    settings = Settings(jobs=JobsSettings(max_retries=3, retry_delay_s=30.0, retry_backoff=4.0))
    opened = open_store(settings, clock=FixedClock(), url=url)
    yield opened
    opened.close()


def test_complete_and_claim_is_complete_plus_claim(store: Store) -> None:
    """Same row as complete(), attempt closed, and the next job claimed in the same commit."""
    first = store.jobs.create("/l/a.mkv")
    second = store.jobs.create("/l/b.mkv")
    assert store.jobs.claim("h:1:w") is not None
    nxt = store.jobs.complete_and_claim(
        first.id, "h:1:w", output_path="/l/a2.mkv", output_size=10, duration_s=2.0, encode_time_s=1.5, avg_fps=48.0
    )
    assert nxt is not None and nxt.id == second.id and nxt.status is JobStatus.RUNNING and nxt.attempts == 1
    done = store.jobs.get(first.id)
    assert done.status is JobStatus.COMPLETED and done.worker_id is None and done.progress_percent == 100.0
    assert (done.output_path, done.output_size, done.duration_s, done.encode_time_s, done.avg_fps) == (
        "/l/a2.mkv",
        10,
        2.0,
        1.5,
        48.0,
    )
    assert [a.outcome for a in store.jobs.attempts(first.id)] == ["completed"]
    # Without output facts the job's own output_path stays; nothing left to claim → None.
    assert store.jobs.complete_and_claim(second.id, "h:1:w") is None
    assert store.jobs.get(second.id).status is JobStatus.COMPLETED
    # A stale owner changes nothing.
    third = store.jobs.create("/l/c.mkv")
    assert store.jobs.claim("h:1:w") is not None
    with pytest.raises(StaleLease):
        store.jobs.complete_and_claim(third.id, "h:2:other")
    assert store.jobs.get(third.id).status is JobStatus.RUNNING
    assert store.jobs.complete_and_claim(third.id, "h:1:w", claim_next=False) is None


def test_heartbeat_many_reports_lost_leases_and_beats_workers(store: Store) -> None:
    """One call: progress of owned jobs written, jobs owned by someone else reported, workers' last_seen set."""
    a = store.jobs.create("/l/a.mkv")
    b = store.jobs.create("/l/b.mkv")
    assert store.jobs.claim("h:1:w1") is not None and store.jobs.claim("h:1:w2") is not None
    store.workers.register("h:1:w1", "h", 1)
    lost = store.jobs.heartbeat_many(
        [(a.id, "h:1:w1", Progress(42.0, 30.0, 31.0, 9.0)), (b.id, "h:1:nope", None)],
        [("h:1:w1", "busy", a.id)],
    )
    assert lost == {b.id}
    beat = store.jobs.get(a.id)
    assert (beat.progress_percent, beat.fps, beat.avg_fps, beat.eta_s) == (42.0, 30.0, 31.0, 9.0)
    (worker,) = store.workers.list_workers()
    assert worker.state == "busy" and worker.current_job_id == a.id


def test_pending_later_counts_retries_and_dependencies(store: Store, tmp_path: Path) -> None:
    """Waiting for a retry delay or a live dependency counts; claimable or blocked-forever jobs do not."""
    assert store.jobs.pending_later() == 0
    a = store.jobs.create("/l/a.mkv")
    store.jobs.create("/l/b.mkv", depends_on=a.id)
    assert store.jobs.pending_later() == 1  # b waits for a
    assert store.jobs.claim("h:1:w") is not None
    store.jobs.fail(a.id, "h:1:w", "boom")  # retry in 30 s: a waits for its delay, b for a
    assert store.jobs.pending_later() == 2


def test_append_many_and_record_transcoded(store: Store) -> None:
    """Log lines in one transaction keep their times; a transcoded file's row moves to its new path."""
    store.log.append_many(
        [
            (LogRecord("info", "one", None, 5.0), "x", None),
            (LogRecord("error", "two", None, None), "y", {"k": [1, 2]}),
        ]
    )
    lines = [r for _i, r in store.log.tail()]
    assert [(r.message, r.level) for r in lines] == [("one", "info"), ("two", "error")]
    assert lines[0].created_at == 5.0
    probe = ProbeResult(container="mov", duration_s=2.0, video_codec="h264", width=320, height=180)
    old = MediaRecord("/l/m.mp4", "/l", 100, 1, probe, Decision(True, "h264 → hevc", 40, 30))
    stale = MediaRecord("/l/m.mkv", "/l", 5, 1, probe, Decision(False, "already hevc"))
    ids = store.media.upsert([old, stale])
    new_probe = ProbeResult(container="matroska", duration_s=2.0, video_codec="hevc", width=320, height=180)
    store.media.record_transcoded(ids["/l/m.mp4"], "/l/m.mkv", 60, 2, new_probe, Decision(False, "transcoded to hevc"))
    moved = store.media.get(ids["/l/m.mp4"])
    assert moved is not None and moved.path == "/l/m.mkv" and moved.size_bytes == 60
    assert moved.probe.video_codec == "hevc" and not moved.should_transcode and moved.reason == "transcoded to hevc"
    assert store.media.get(ids["/l/m.mkv"]) is None  # the stale row for that path is gone


def test_claim_and_complete_without_wait(store: Store) -> None:
    """wait=False: on SQLite the same claim and completion as with waiting; on PostgreSQL (network round trips,
    never run on the pool's event loop) WriterBusy, with nothing changed."""
    first = store.jobs.create("/l/a.mkv")
    second = store.jobs.create("/l/b.mkv")
    if not store.engines.is_sqlite:
        with pytest.raises(WriterBusy):
            store.jobs.claim("h:1:w", wait=False)
        assert store.jobs.get(first.id).status is JobStatus.QUEUED
        assert store.jobs.claim("h:1:w") is not None
        with pytest.raises(WriterBusy):
            store.jobs.complete_and_claim_many([Completion(first.id, "h:1:w")], wait=False)
        assert store.jobs.get(first.id).status is JobStatus.RUNNING
        return
    claimed = store.jobs.claim("h:1:w", wait=False)
    assert claimed is not None and claimed.id == first.id
    (nxt,) = store.jobs.complete_and_claim_many([Completion(first.id, "h:1:w")], wait=False)
    assert isinstance(nxt, type(claimed)) and nxt.id == second.id and nxt.status is JobStatus.RUNNING
    assert store.jobs.get(first.id).status is JobStatus.COMPLETED
