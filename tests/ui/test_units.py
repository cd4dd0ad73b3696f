"""The TUI's pure parts: the paged row store, the formatters, the bridge's coalescing, the poller's cursor."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.events import JobProgress, LogRecord
from amphigory_tui.domain.jobs import JobStatus, Stage
from amphigory_tui.ui import format as fmt
from amphigory_tui.ui.bridge import UiSink
from amphigory_tui.ui.messages import LogAppended, Polled, ProgressFlush
from amphigory_tui.ui.paging import PagedRows
from amphigory_tui.ui.palette import level_rank, normalize_level, status_style
from amphigory_tui.ui.poller import OVERLAP_S, Poller
from tests.ui.conftest import World


@dataclass(frozen=True)
class Item:
    """A row item."""

    id: int
    text: str = ""


def test_paged_rows_load_on_demand_and_stay_bounded() -> None:
    """Ids come first; items load by id; a pending id is not asked for twice; the cache keeps what is near."""
    rows: PagedRows[Item] = PagedRows(lambda item: item.id, max_cached=10)
    rows.set_ids(range(100, 200))
    assert len(rows) == 100 and rows.id_at(5) == 105 and rows.item_at(5) is None
    assert rows.missing(0, 4) == [100, 101, 102, 103]
    assert rows.missing(0, 6) == [104, 105]  # the first four are on their way
    assert rows.missing_any(0, 6) is False
    rows.put([Item(i) for i in range(100, 120)], keep=(0, 5))
    assert rows.item_at(3) == Item(103) and rows.item_at(10) is None
    assert rows.update(Item(103, "new")) and rows.get(103) == Item(103, "new")
    assert not rows.update(Item(150))
    assert rows.position(150) == 50 and rows.index_of(150) == 50 and rows.index_of(999) is None
    generation = rows.generation
    rows.set_ids([150, 103])
    assert rows.generation == generation + 1 and rows.position(103) == 1 and rows.item_at(1) == Item(103, "new")


def test_formatters() -> None:
    """Sizes in decimal units, durations, cut file names keep their end, control characters never break a row."""
    assert fmt.human_size(999) == "999 B" and fmt.human_size(1_500_000_000) == "1.5 GB"
    assert fmt.gigabytes(700_000_000) == "0.7"
    assert [fmt.duration(s) for s in (5, 125, 7440, 90000, None)] == ["5s", "2m05s", "2h04m", "1d01h", "—"]
    assert fmt.ellipsize("The Expanse/S02E03.mkv", 11) == "…S02E03.mkv"
    assert fmt.printable("a\nb\x1b[31m") == "a?b?[31m"
    bar = fmt.progress_bar(42.5, 10)
    assert [text for text, _ in bar] == ["████", "░░░░░░"]


def test_palette_levels_and_status_colours() -> None:
    """Level names are normalised and ranked; each status has a dark and a light colour."""
    assert normalize_level("WARN") == "warning" and level_rank("error") > level_rank("info")
    for status in JobStatus:
        assert status_style(status, True) != status_style(status, False) or status is JobStatus.CANCELED


class RecordingApp:
    """Stands in for the app: records what the bridge posts."""

    def __init__(self) -> None:
        self.posted: list[Any] = []
        self.lock = threading.Lock()

    def post_message(self, message: Any) -> bool:
        with self.lock:
            self.posted.append(message)
        return True


def test_bridge_coalesces_progress_per_job() -> None:
    """Thousands of progress events from several threads: one flush message, the latest event per job."""
    app = RecordingApp()
    sink = UiSink(app)  # type: ignore[arg-type]

    def report(job_id: int) -> None:
        for pct in range(1000):
            sink.emit(JobProgress(job_id, "w", Stage.TRANSCODE, float(pct)))

    threads = [threading.Thread(target=report, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(isinstance(m, ProgressFlush) for m in app.posted) == 1
    latest = sink.drain_progress()
    assert {job: event.percent for job, event in latest.items()} == {1: 999.0, 2: 999.0, 3: 999.0, 4: 999.0}
    sink.emit(LogRecord("info", "one"))
    sink.emit(LogRecord("info", "two"))
    assert sum(isinstance(m, LogAppended) for m in app.posted) == 1
    assert [r.message for r in sink.drain_log()] == ["one", "two"]


def test_poller_reads_changes_since_its_last_look(world: World) -> None:
    """Each round re-reads OVERLAP_S of the past, returns new log lines once, and reads the registry when asked."""
    posted: list[Polled] = []
    clock: FixedClock = world.clock
    poller = Poller(world.services.queries, clock, posted.append, 60)
    first = poller.poll_once()
    assert len(first.log) == 7 and first.workers is not None and len(first.workers) == 3
    assert first.changed == []  # the seed's last write was 5 s ago, beyond the overlap
    clock.advance(10)
    second = poller.poll_once()
    assert second.changed == [] and second.log == [] and second.workers is None
    world.services.actions.pause(world.ids.queued_tv)
    poller.want_workers = True
    third = poller.poll_once()
    assert [j.id for j in third.changed] == [world.ids.queued_tv]
    assert [r.message for _, r in third.log] == [f"Job {world.ids.queued_tv} pause requested: S01E02.mkv"]
    assert third.workers is not None
    assert poller.since == clock.now() - OVERLAP_S
