"""A small, fixed world for the TUI tests and snapshots: media files, jobs in every status, workers, log lines.

Built through the store's own operations (create, claim, fail, complete…) on a FixedClock, so every timestamp
and id is the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.jobs import Progress, Stage
from amphigory_tui.domain.media import AudioStream, Decision, ProbeResult
from amphigory_tui.store import MediaRecord, Store

MOVIES = "/library/movies"
TV = "/library/tv"

LOCAL_WORKER = "nas:4242:aaaaaaaaaaaa"
IDLE_WORKER = "nas:4242:bbbbbbbbbbbb"
STALE_WORKER = "box2:777:cccccccccccc"
MTIME = 1_700_000_000_000_000_000


@dataclass(frozen=True)
class Seeded:
    """Ids of the seeded jobs, by what they are."""

    failed: int
    skipped: int
    completed: int
    canceled: int
    paused: int
    running: int
    queued_tv: int
    queued_tv2: int

    @property
    def all(self) -> list[int]:
        """Every seeded job id."""
        return [
            self.failed,
            self.skipped,
            self.completed,
            self.canceled,
            self.paused,
            self.running,
            self.queued_tv,
            self.queued_tv2,
        ]


def _probe(codec: str = "h264", width: int = 1920, height: int = 1080, error: str | None = None) -> ProbeResult:
    if error:
        return ProbeResult(error=error)
    return ProbeResult(
        container="matroska",
        duration_s=5400.0,
        bitrate_kbps=8000,
        video_codec=codec,
        width=width,
        height=height,
        fps=23.976,
        audio=(AudioStream(index=1, codec="ac3", language="eng", channels=6),),
    )


def _record(path: str, size: int, decision: Decision, probe: ProbeResult | None = None) -> MediaRecord:
    root = MOVIES if path.startswith(MOVIES) else TV
    return MediaRecord(
        path=path, root=root, size_bytes=size, mtime_ns=MTIME, probe=probe or _probe(), decision=decision
    )


def _transcode(priority: int, pct: int = 45) -> Decision:
    return Decision(True, f"h264 1080p → hevc, est. −{pct} %", priority=priority, est_savings_pct=pct)


MEDIA = [
    (f"{MOVIES}/Alien (1979).mkv", 8_000_000_000, _transcode(80)),
    (f"{MOVIES}/Blade Runner (1982).mkv", 7_500_000_000, _transcode(70)),
    (f"{MOVIES}/Casablanca (1942).mp4", 3_200_000_000, _transcode(60)),
    (f"{TV}/Doctor Who/S01E01.mkv", 1_200_000_000, _transcode(50)),
    (f"{TV}/Doctor Who/S01E02.mkv", 1_100_000_000, _transcode(50)),
    (f"{TV}/The Expanse/S02E03.mkv", 1_500_000_000, _transcode(40)),
    (f"{TV}/Firefly/S01E01.mkv", 1_300_000_000, _transcode(45)),
    (f"{MOVIES}/Inception (2010).mkv", 9_100_000_000, _transcode(75)),
    (f"{MOVIES}/Fargo (1996).mkv", 4_000_000_000, Decision(False, "already hevc")),
    (f"{MOVIES}/sample-Gattaca.mkv", 40_000_000, Decision(False, "excluded by pattern '*sample*'")),
    (f"{MOVIES}/Heat (1995).avi", 2_000_000_000, Decision(False, "probe failed")),
]


def seed(store: Store, clock: FixedClock) -> Seeded:
    """Write the world; the clock ends 5 s after the busy worker's last heartbeat."""
    records = []
    for path, size, decision in MEDIA:
        probe = _probe("hevc") if "Fargo" in path else None
        if "Heat" in path:
            probe = _probe(error="Invalid data found when processing input")
        records.append(_record(path, size, decision, probe))
    ids = store.media.upsert(records)
    media = {path: ids[path] for path, _, _ in MEDIA}

    # Worker registry: one stalled (400 s), one late (65 s, more than two 30 s heartbeats), one busy and fresh.
    store.workers.register(STALE_WORKER, "box2", 777)
    clock.advance(335)
    store.workers.register(IDLE_WORKER, "nas", 4242)
    clock.advance(60)
    store.workers.register(LOCAL_WORKER, "nas", 4242)

    jobs = store.jobs

    def create(path: str, priority: int, size: int) -> int:
        return jobs.create(
            path, media_file_id=media.get(path), priority=priority, source_size=size, source_mtime_ns=MTIME
        ).id

    failed = create(f"{MOVIES}/Casablanca (1942).mp4", 60, 3_200_000_000)
    jobs.claim(LOCAL_WORKER)
    jobs.fail(failed, LOCAL_WORKER, "HandBrakeCLI exited with code 3: Encode failed (error 3)", permanent=True)
    skipped = create(f"{MOVIES}/Jaws (1975).mkv", 30, 2_500_000_000)
    jobs.claim(LOCAL_WORKER)
    jobs.skip(skipped, LOCAL_WORKER, "the output was larger than the source")
    completed = create(f"{TV}/Doctor Who/S01E01.mkv", 50, 1_200_000_000)
    jobs.claim(LOCAL_WORKER)
    clock.advance(1)
    jobs.complete(completed, LOCAL_WORKER, output_size=540_000_000, encode_time_s=812.0, avg_fps=41.5)
    canceled = create(f"{TV}/Doctor Who/S01E03.mkv", 50, 1_150_000_000)
    jobs.cancel(canceled)
    paused = create(f"{MOVIES}/Blade Runner (1982).mkv", 70, 7_500_000_000)
    jobs.pause(paused)
    running = create(f"{MOVIES}/Alien (1979).mkv", 80, 8_000_000_000)
    jobs.claim(LOCAL_WORKER)
    jobs.heartbeat(running, LOCAL_WORKER, Progress(42.5, fps=23.5, avg_fps=22.0, eta_s=754), stage=Stage.TRANSCODE)
    store.workers.beat(LOCAL_WORKER, "busy", running)
    queued_tv = create(f"{TV}/Doctor Who/S01E02.mkv", 50, 1_100_000_000)
    queued_tv2 = create(f"{TV}/The Expanse/S02E03.mkv", 40, 1_500_000_000)

    store.log.append("Scan complete: 11 files, 8 need transcoding", event_type="scan")
    store.log.append("Queued 3 jobs", event_type="queued")
    store.log.append("attempt 1/3: Casablanca (1942).mp4", job_id=failed)
    store.log.append("HandBrakeCLI exited with code 3: Encode failed", level="error", job_id=failed)
    store.log.append("the output was larger than the source; original kept", level="warning", job_id=skipped)
    store.log.append("encoding with preset 'H.265 MKV 1080p30'", job_id=running)
    store.log.append("probe workers started", level="debug")
    clock.advance(5)
    return Seeded(failed, skipped, completed, canceled, paused, running, queued_tv, queued_tv2)


def seed_candidates(store: Store) -> list[int]:
    """Only media files (no jobs): the transcode candidates among them are what ``a`` queues."""
    ids = store.media.upsert([_record(path, size, decision) for path, size, decision in MEDIA])
    return [ids[path] for path, _, _ in MEDIA]
