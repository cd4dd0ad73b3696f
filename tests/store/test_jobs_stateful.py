"""A hypothesis state machine drives JobStore through random sequences of every operation on a real database.

Workers claim, beat, finish, fail, pause and crash; the user pauses, resumes, cancels, kills, resubmits and
dismisses; stale workers replay old leases; the clock moves. After every step the invariants of the job model hold:

- running ⇔ an owner is set ⇔ exactly one open attempt (of that owner, numbered ``attempts``);
- ``attempts`` never decreases and equals the number of attempts in the history (a pause consumes none);
- 0 ≤ attempts ≤ max_retries;
- a terminal job changes status only through ``resubmit``;
- at most one live job per media file;
- a claim takes the best claimable job (never one with an unfinished upstream or a retry time still ahead),
  and returns nothing only when no job is claimable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.errors import InvalidTransition, StaleLease, UsageError
from amphigory_tui.domain.jobs import ALLOWED, LIVE, TERMINAL, Job, JobKind, JobStatus, PauseReason, Progress
from amphigory_tui.store import JobFilter, MediaStore
from amphigory_tui.store.engine import Engines, make_engines
from amphigory_tui.store.jobs import JobStore
from amphigory_tui.store.migrate import upgrade_to_head
from amphigory_tui.store.orm import Base
from tests.pg import PostgresServer
from tests.store.helpers import media_record

FILES = 4
MAX_JOBS = 8
PICK = st.integers(min_value=0, max_value=10_000)
OUTCOMES = ["heartbeat", "complete", "complete-and-claim", "fail", "fail-permanent", "pause", "user-pause", "skip"]
# Short retry delays, so that retries come due within a few clock steps and runs reach the last attempt often.
MAX_RETRIES = 3
RETRY_DELAY_S = 1.0
RETRY_BACKOFF = 2.0


class JobModel(RuleBasedStateMachine):
    """Random operations on one database; ``ENGINES`` is set by the test that runs the machine."""

    ENGINES: Engines

    def __init__(self) -> None:
        super().__init__()
        with self.ENGINES.write() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        self.clock = FixedClock()
        self.jobs = JobStore(
            self.ENGINES, self.clock, max_retries=MAX_RETRIES, retry_delay_s=RETRY_DELAY_S, retry_backoff=RETRY_BACKOFF
        )
        self.media = MediaStore(self.ENGINES, self.clock)
        self.media_ids: list[int] = []
        self.sizes: dict[str, int] = {}
        self.alive: list[str] = ["w0.0", "w1.0", "w2.0"]
        self.dead: set[str] = set()
        self.generation = 0
        self.prev: dict[int, Job] = {}
        self.resubmitted: set[int] = set()
        self.job_count = 0

    # ------------------------------------------------------------------ helpers
    def _all(self) -> list[Job]:
        return self.jobs.list_jobs(JobFilter(include_dismissed=True))

    def _pick(self, i: int, where: Callable[[Job], bool] = lambda job: True) -> Job | None:
        candidates = sorted((job for job in self._all() if where(job)), key=lambda job: job.id)
        return candidates[i % len(candidates)] if candidates else None

    def _claimable(self, jobs: list[Job]) -> list[Job]:
        by_id = {job.id: job for job in jobs}
        now = self.clock.now()
        return [
            job
            for job in jobs
            if job.status is JobStatus.QUEUED
            and (job.next_attempt_at is None or job.next_attempt_at <= now)
            and (job.depends_on is None or by_id[job.depends_on].status is JobStatus.COMPLETED)
        ]

    def _refused(self, job: Job, call: Callable[[], object], error: type[Exception]) -> None:
        """``call`` must raise ``error`` and leave the job exactly as it was."""
        before = self.jobs.get(job.id), self.jobs.attempts(job.id)
        with pytest.raises(error):
            call()
        assert (self.jobs.get(job.id), self.jobs.attempts(job.id)) == before

    # ------------------------------------------------------------------ setup
    @initialize(queue=st.booleans())
    def scan_files(self, queue: bool) -> None:
        """A few scanned files that need transcoding, queued at once or not."""
        records = [media_record(f"/library/file{i}.mkv", size=1_000 + i, priority=10 * i) for i in range(FILES)]
        ids = self.media.upsert(records)
        self.media_ids = [ids[r.path] for r in records]
        self.sizes = {r.path: r.size_bytes for r in records}
        if queue:
            assert self.jobs.queue_for_transcoding() == FILES

    # ------------------------------------------------------------------ enqueueing
    @precondition(lambda self: self.job_count < MAX_JOBS)
    @rule(how=st.sampled_from(["queue-all", "queue-some", "file", "downstream"]), i=PICK, priority=PICK)
    def enqueue(self, how: str, i: int, priority: int) -> None:
        """Jobs are added: "queue all" (with or without a limit), one file by hand, or a job waiting on another."""
        priority %= 101
        if how.startswith("queue"):
            limit = None if how == "queue-all" else i % 3
            queued = self.jobs.queue_for_transcoding(limit)
            assert queued >= 0 and (limit is None or queued <= limit)
        elif how == "file":
            media = self.media.get(self.media_ids[i % FILES])
            assert media is not None
            if any(j.media_file_id == media.id and j.status in LIVE for j in self._all()):
                with pytest.raises(UsageError):
                    self.jobs.create(media.path, media_file_id=media.id, priority=priority)
            else:
                size, mtime = media.size_bytes, media.mtime_ns
                job = self.jobs.create(
                    media.path, media_file_id=media.id, priority=priority, source_size=size, source_mtime_ns=mtime
                )
                assert job.status is JobStatus.QUEUED
        else:
            upstream = self._pick(i)
            if upstream is not None:
                path = f"/library/insert-{upstream.id}.mkv"
                self.jobs.create(path, kind=JobKind.INSERT, depends_on=upstream.id, priority=priority)

    @rule(i=PICK)
    def file_changes_on_disk(self, i: int) -> None:
        """A rescan finds a file with new content (so a failed one may be queued again)."""
        path = f"/library/file{i % FILES}.mkv"
        self.sizes[path] += 1
        self.media.upsert([media_record(path, size=self.sizes[path], priority=10 * (i % FILES))])

    # ------------------------------------------------------------------ the owners
    @rule(w=PICK, wait=st.booleans(), then=st.sampled_from(["keep", *OUTCOMES]))
    def claim(self, w: int, wait: bool, then: str) -> None:
        """A live worker claims, and maybe at once beats, finishes, fails, pauses or skips the job.

        With ``wait``, an idle worker waits (the clock runs) until the earliest retry is due, as the pool does.
        """
        claimed = self._claim(self.alive[w % len(self.alive)], wait)
        if claimed is not None and then != "keep":
            self._act(claimed, then)

    @rule(w=PICK)
    def fail_until_it_gives_up(self, w: int) -> None:
        """A poison file: claimed and failed again and again (waiting out each retry) until it fails for good."""
        worker = self.alive[w % len(self.alive)]
        for _ in range(MAX_RETRIES + 1):
            claimed = self._claim(worker, wait=True)
            if claimed is None:
                return
            if self._act(claimed, "fail").status is JobStatus.FAILED:
                return

    def _claim(self, worker: str, wait: bool) -> Job | None:
        """Claim as ``worker``: the best claimable job, or nothing only when nothing is claimable."""
        before = self._all()
        claimable = self._claimable(before)
        if not claimable and wait:
            due = [j.next_attempt_at for j in before if j.status is JobStatus.QUEUED and j.next_attempt_at]
            if due:
                self.clock.advance(max(min(due) - self.clock.now(), 0.0))
                claimable = self._claimable(before)
        claimed = self.jobs.claim(worker)
        self._check_claim(claimable, claimed, worker)
        return claimed

    def _check_claim(self, claimable: list[Job], claimed: Job | None, worker: str) -> None:
        """``claimed`` is the best of ``claimable`` (the jobs claimable just before), or None if there was none."""
        if claimed is None:
            assert claimable == []
            return
        best = min(claimable, key=lambda job: (-job.priority, job.created_at, job.id))
        assert claimed.id == best.id
        assert (claimed.status, claimed.worker_id) == (JobStatus.RUNNING, worker)
        # A resumed pause continues its attempt; anything else counts a new one.
        assert claimed.attempts == best.attempts + (0 if best.resume_attempt else 1)
        if claimed.depends_on is not None:
            assert self.jobs.get(claimed.depends_on).status is JobStatus.COMPLETED

    @rule(i=PICK, outcome=st.sampled_from(OUTCOMES))
    def owner_acts(self, i: int, outcome: str) -> None:
        """The live owner of a running job beats, finishes, fails, pauses or skips it."""
        job = self._pick(i, lambda j: j.status is JobStatus.RUNNING and j.worker_id in self.alive)
        if job is not None:
            self._act(job, outcome)

    def _act(self, job: Job, outcome: str) -> Job:
        """The owner of running ``job`` does ``outcome``; returns the job afterwards."""
        owner = job.worker_id
        assert owner is not None
        if outcome == "heartbeat":
            assert self.jobs.heartbeat(job.id, owner, Progress(percent=float(job.id % 100))) is True
            assert self.jobs.get(job.id).last_heartbeat == self.clock.now()
        elif outcome == "complete":
            done = self.jobs.complete(job.id, owner, output_size=1)
            assert (done.status, done.attempts, done.worker_id) == (JobStatus.COMPLETED, job.attempts, None)
        elif outcome == "complete-and-claim":
            # The pool's hot path: completion and the next claim in one transaction.
            finished = [replace(j, status=JobStatus.COMPLETED) if j.id == job.id else j for j in self._all()]
            following = self.jobs.complete_and_claim(job.id, owner, output_size=1)
            done = self.jobs.get(job.id)
            assert (done.status, done.attempts, done.worker_id) == (JobStatus.COMPLETED, job.attempts, None)
            self._check_claim(self._claimable(finished), following, owner)
        elif outcome.startswith("fail"):
            permanent = outcome == "fail-permanent"
            failed = self.jobs.fail(job.id, owner, "exit 3", permanent=permanent)
            assert failed.attempts == job.attempts
            if permanent or job.attempts >= job.max_retries:
                assert failed.status is JobStatus.FAILED
            else:
                assert failed.status is JobStatus.QUEUED
                delay = RETRY_DELAY_S * RETRY_BACKOFF ** (job.attempts - 1)
                assert failed.next_attempt_at == self.clock.now() + delay
        elif outcome.endswith("pause"):
            reason = PauseReason.USER if outcome == "user-pause" else PauseReason.SHUTDOWN
            paused = self.jobs.pause_running(job.id, owner, reason)
            assert (paused.status, paused.attempts, paused.resume_attempt) == (JobStatus.PAUSED, job.attempts, True)
        else:
            assert self.jobs.skip(job.id, owner, "larger").status is JobStatus.SKIPPED
        return self.jobs.get(job.id)

    @rule()
    def owners_act_on_requests(self) -> None:
        """Every live owner carries out the user's pending pause/cancel/kill."""
        for job_id, request in self.jobs.control_requests(self.alive).items():
            job = self.jobs.get(job_id)
            assert job.worker_id is not None
            if request == "pause":
                self.jobs.pause_running(job_id, job.worker_id, PauseReason.USER)
            else:
                self.jobs.cancel_running(job_id, job.worker_id)

    @rule(i=PICK, w=PICK, op=st.sampled_from(["heartbeat", "complete", "fail", "pause_running", "skip", "update"]))
    def stale_update(self, i: int, w: int, op: str) -> None:
        """A worker replays a lease it does not hold (a frozen or crashed worker, an old claim): nothing changes."""
        workers = sorted(set(self.alive) | self.dead)
        worker = workers[w % len(workers)]
        job = self._pick(i, lambda j: j.worker_id != worker)
        if job is None:
            return
        if op == "heartbeat":
            before = self.jobs.get(job.id)
            assert self.jobs.heartbeat(job.id, worker, Progress(percent=1.0)) is False
            assert self.jobs.get(job.id) == before
            return
        calls: dict[str, Callable[[], object]] = {
            "complete": lambda: self.jobs.complete(job.id, worker),
            "fail": lambda: self.jobs.fail(job.id, worker, "late"),
            "pause_running": lambda: self.jobs.pause_running(job.id, worker),
            "skip": lambda: self.jobs.skip(job.id, worker, "late"),
            "update": lambda: self.jobs.update_running(job.id, worker, temp_path="/late"),
        }
        self._refused(job, calls[op], StaleLease)

    # ------------------------------------------------------------------ crashes and restarts
    @rule(w=PICK, recover=st.booleans())
    def crash(self, w: int, recover: bool) -> None:
        """A worker process dies and a new one takes its place under a new id; maybe the app restarts now."""
        index = w % len(self.alive)
        self.dead.add(self.alive[index])
        self.generation += 1
        self.alive[index] = f"w{index}.{self.generation}"
        if recover:
            self.recover()

    @rule()
    def graceful_restart(self) -> None:
        """SIGTERM: every live owner pauses its job (keeping the attempt); the next start resumes them."""
        for job in self._all():
            if job.status is JobStatus.RUNNING and job.worker_id in self.alive:
                self._act(job, "pause")
        self.recover()

    @rule()
    def recover(self) -> None:
        """Startup recovery: orphans of dead workers, then shutdown pauses."""
        alive_before = {j.id: j for j in self._all() if j.status is JobStatus.RUNNING and j.worker_id in self.alive}
        self.jobs.recover_orphaned(lambda worker: worker not in self.dead)
        self.jobs.recover_paused()
        after = {j.id: j for j in self._all()}
        for job in after.values():
            assert not (job.status is JobStatus.RUNNING and job.worker_id in self.dead)
            assert not (job.status is JobStatus.PAUSED and job.pause_reason is PauseReason.SHUTDOWN)
        for job_id, job in alive_before.items():
            assert after[job_id] == job

    # ------------------------------------------------------------------ the user
    @rule(i=PICK, action=st.sampled_from(["pause", "resume", "cancel", "kill", "resubmit", "dismiss"]))
    def user_acts(self, i: int, action: str) -> None:
        """The user pauses, resumes, cancels, kills, resubmits or dismisses: legal moves happen, others are refused."""
        job = self._pick(i)
        if job is None:
            return
        if action == "resubmit":
            self._resubmit(job)
        elif action == "dismiss":
            if job.status in TERMINAL:
                assert self.jobs.dismiss(job.id).dismissed is True
            else:
                self._refused(job, lambda: self.jobs.dismiss(job.id), InvalidTransition)
        else:
            self._user_request(job, action)

    def _user_request(self, job: Job, action: str) -> None:
        target = {"pause": JobStatus.PAUSED, "resume": JobStatus.QUEUED}.get(action, JobStatus.CANCELED)
        call = getattr(self.jobs, action)
        legal = target in ALLOWED[job.status] and (action != "resume" or job.status is JobStatus.PAUSED)
        if not legal:
            self._refused(job, lambda: call(job.id), InvalidTransition)
            return
        after = call(job.id)
        if job.status is JobStatus.RUNNING:
            # Only a request: the owner carries it out.
            assert (after.status, after.worker_id, after.attempts) == (JobStatus.RUNNING, job.worker_id, job.attempts)
            assert after.control_request is not None
        else:
            assert (after.status, after.attempts) == (target, job.attempts)

    def _resubmit(self, job: Job) -> None:
        if job.status not in TERMINAL:
            self._refused(job, lambda: self.jobs.resubmit(job.id), InvalidTransition)
            return
        others = [
            j
            for j in self._all()
            if j.id != job.id
            and j.status in LIVE
            and job.kind is j.kind is JobKind.TRANSCODE
            and j.media_file_id is not None
            and j.media_file_id == job.media_file_id
        ]
        if others:
            self._refused(job, lambda: self.jobs.resubmit(job.id), UsageError)
            return
        again = self.jobs.resubmit(job.id)
        self.resubmitted.add(job.id)
        assert (again.status, again.attempts, again.max_retries) == (
            JobStatus.QUEUED,
            job.attempts,
            job.attempts + MAX_RETRIES,
        )

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 10.0]))
    def advance_clock(self, seconds: float) -> None:
        """Time passes (retry delays run out)."""
        self.clock.advance(seconds)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def the_job_model_holds(self) -> None:
        """Every invariant of the module docstring, on the database as it is now."""
        jobs = self._all()
        with self.ENGINES.read() as conn:
            rows = conn.execute(text("SELECT job_id, attempt, worker_id, ended_at FROM job_attempts")).all()
        history: dict[int, list[tuple[int, str, float | None]]] = {}
        for job_id, attempt, worker_id, ended_at in rows:
            history.setdefault(job_id, []).append((attempt, worker_id, ended_at))
        live_per_file: dict[int, int] = {}
        for job in jobs:
            tries = history.get(job.id, [])
            open_tries = [(a, w) for a, w, ended in tries if ended is None]
            if job.status is JobStatus.RUNNING:
                assert job.worker_id is not None
                assert open_tries == [(job.attempts, job.worker_id)]
            else:
                assert job.worker_id is None
                assert open_tries == []
            assert sorted(a for a, _, _ in tries) == list(range(1, job.attempts + 1))
            assert 0 <= job.attempts <= job.max_retries
            previous = self.prev.get(job.id)
            if previous is not None:
                assert job.attempts >= previous.attempts
                if previous.status in TERMINAL and job.status is not previous.status:
                    assert job.id in self.resubmitted and job.status is JobStatus.QUEUED
            if job.status in LIVE and job.kind is JobKind.TRANSCODE and job.media_file_id is not None:
                live_per_file[job.media_file_id] = live_per_file.get(job.media_file_id, 0) + 1
        assert all(count == 1 for count in live_per_file.values()), live_per_file
        self.prev = {job.id: job for job in jobs}
        self.resubmitted = set()
        self.job_count = len(jobs)


def _run(engines: Engines, max_examples: int) -> None:
    upgrade_to_head(engines)
    machine = type("JobModelOnDb", (JobModel,), {"ENGINES": engines})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_job_model_on_sqlite(tmp_path: Path) -> None:
    """The model holds over random operation sequences on a real SQLite file."""
    engines = make_engines(f"sqlite:///{tmp_path / 'model.db'}")
    try:
        _run(engines, max_examples=60)
    finally:
        engines.dispose()


@pytest.mark.postgres
def test_job_model_on_postgresql(postgres_server: PostgresServer) -> None:
    """The same model on PostgreSQL (fewer examples: each step is a network round trip)."""
    engines = make_engines(postgres_server.url(postgres_server.create_database("job_model")))
    try:
        _run(engines, max_examples=20)
    finally:
        engines.dispose()
