"""Chaos: a queue of 12 jobs, the worker SIGKILLed at 20 random moments and restarted each time, then drained."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from amphigory_tui.domain.jobs import JobStatus
from tests.faults.harness import Rig, sha256

KILLS = 20
JOBS = 12


def test_twenty_random_kills_lose_nothing_run_nothing_twice_damage_nothing(make_rig: type[Rig]) -> None:
    """After every kill the library holds originals or valid new files; after the drain every job completed exactly
    once, every original is kept byte-identical, and no temp file or tool process is left. Prints the figures."""
    seed = int(os.environ.get("AMPHIGORY_CHAOS_SEED") or time.time_ns() % 1_000_000)
    rnd = random.Random(seed)
    rig = make_rig(workers=2, max_retries=20)
    clips = rig.add_jobs(JOBS)
    partial_seen = 0
    moments: list[float] = []
    for _ in range(KILLS):
        worker = rig.start()
        moment = rnd.uniform(0.4, 3.0)
        time.sleep(moment)
        assert worker.alive(), worker.output()
        worker.kill9()
        moments.append(moment)
        for clip in clips:
            state = rig.library_state(clip)
            if state not in ("original", "new"):
                partial_seen += 1
    rig.drain(timeout=150)

    completed = sum(1 for c in clips if rig.job(c.job_id).status is JobStatus.COMPLETED)
    lost = JOBS - completed
    twice = sum(
        1
        for c in clips
        if [a.outcome for a in rig.store.jobs.attempts(c.job_id)].count("completed") != 1
        or Path(str(c.path) + ".original.2").exists()
    )
    damaged = sum(
        1
        for c in clips
        if rig.library_state(c) != "new"
        or not Path(str(c.path) + ".original").exists()
        or sha256(Path(str(c.path) + ".original")) != c.sha256
    )
    temp = len(rig.temp_files())
    tools = len(rig.leftover_tools())
    attempts = sum(rig.job(c.job_id).attempts for c in clips)
    encodes = sum(rig.starts().values())
    print(
        f"\nchaos (seed {seed}): {JOBS} jobs, {KILLS} SIGKILLs at {min(moments):.2f}–{max(moments):.2f} s after start"
        f" -> lost {lost}, completed twice {twice}, originals damaged {damaged}, partial library files seen at a"
        f" crash {partial_seen}, temp files left {temp}, tools left {tools}; {attempts} attempts and {encodes}"
        f" HandBrakeCLI runs for {JOBS} jobs"
    )
    assert (lost, twice, damaged, partial_seen, temp, tools) == (0, 0, 0, 0, 0, 0), f"seed {seed}"
