"""The Workers tab: rows of every process's workers with heartbeat health, and the live pool controls."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from amphigory_tui.config import WorkersSettings
from amphigory_tui.domain.workers import WorkerInfo
from amphigory_tui.pool.pool import WorkerPool
from amphigory_tui.ui.app import AmphigoryApp
from amphigory_tui.ui.bridge import UiSink
from amphigory_tui.ui.tabs.workers import WorkerRow, heartbeat_health, worker_health
from tests.ui.conftest import World, press, settle
from tests.ui.helpers import notes
from tests.ui.seed import IDLE_WORKER, LOCAL_WORKER, STALE_WORKER

pytestmark = pytest.mark.anyio

SIZE = (120, 40)


def test_heartbeat_health_thresholds() -> None:
    """Warning after two heartbeats, error past the stall timeout."""
    assert heartbeat_health(59, 30, 300) == "ok"
    assert heartbeat_health(61, 30, 300) == "warning"
    assert heartbeat_health(301, 30, 300) == "error"


def test_a_worker_is_late_by_its_own_heartbeat_interval() -> None:
    """Another machine beating every 60 s is not late at 100 s here, where workers beat every 30 s; a row that
    recorded no interval (an older version's) is judged by ours; stalled is always this machine's stall timeout."""
    settings = WorkersSettings(heartbeat_interval_s=30, stall_timeout_s=300)
    slow = WorkerInfo("box2:7:w", "box2", 7, "busy", 0.0, 1000.0, 3, heartbeat_interval_s=60)
    assert worker_health(slow, 1100.0, settings) == "ok"
    assert worker_health(slow, 1121.0, settings) == "warning"
    assert worker_health(slow, 1301.0, settings) == "error"
    assert worker_health(replace(slow, heartbeat_interval_s=None), 1100.0, settings) == "warning"


async def test_rows_of_every_process_with_health(world: World) -> None:
    """One row per registered worker (any host), the busy one with its job's stage and progress."""
    app = world.app(poll=True)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "3")
        rows: list[WorkerRow] = []
        for _ in range(50):
            rows = app.workers_pane.list.rows
            if len(rows) == 3:
                break
            await pilot.pause(0.1)
        by_id = {r.info.id: r for r in rows}
        assert set(by_id) == {LOCAL_WORKER, IDLE_WORKER, STALE_WORKER}
        busy = by_id[LOCAL_WORKER]
        assert busy.job is not None and busy.job.job_id == world.ids.running and busy.job.percent == 42.5
        cells = app.workers_pane._cells(by_id[STALE_WORKER], True)
        assert cells[3][0] == "stalled"  # type: ignore[index]
        assert app.focused is app.workers_pane.table


async def wait_for_registry(pilot: Pilot[AmphigoryApp], world: World, count: int) -> None:
    """Wait until this process has ``count`` workers in the database's registry."""
    for _ in range(100):
        mine = [w for w in world.services.queries.workers() if w.pid == os.getpid()]
        if len(mine) == count:
            return
        await pilot.pause(0.05)
    raise AssertionError(f"expected {count} registered workers of this process")


async def test_plus_minus_resize_the_pool_and_p_pauses_it(world_factory: Callable[..., World]) -> None:
    """`+`/`-` change the running pool's size (its workers register and leave); `P` pauses and resumes."""
    world = world_factory(seeded=False, workers={"count": 0, "heartbeat_interval_s": 1, "poll_interval_s": 0.05})
    pools: list[WorkerPool] = []

    def make_pool(sink: UiSink) -> WorkerPool:
        pools.append(WorkerPool(world.services, world.settings, sink))
        return pools[0]

    app = world.app(pool_factory=make_pool)
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "3", "plus")
        pool = pools[0]
        assert pool.size == 1
        await wait_for_registry(pilot, world, 1)
        await press(pilot, "plus")
        assert pool.size == 2
        await wait_for_registry(pilot, world, 2)
        await press(pilot, "minus")
        assert pool.size == 1
        await wait_for_registry(pilot, world, 1)
        await press(pilot, "P")
        assert pool.paused and app.workers_pane.paused
        assert "Workers paused: running jobs are paused, no new job starts" in notes(app)
        await press(pilot, "P")
        assert not pool.paused
        await press(pilot, "minus", "minus")
        assert pool.size == 0
        assert any("already at 0 workers" in n for n in notes(app))
        await wait_for_registry(pilot, world, 0)


async def test_keys_without_a_pool_explain(world: World) -> None:
    """With no pool in this process, the pool keys say so and change nothing."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await press(pilot, "3", "plus", "P")
        assert notes(app).count("This process runs no worker pool.") == 2
        await settle(pilot)
        assert len(world.services.queries.workers()) == 3


async def test_a_poll_before_the_lazy_tab_composed_is_kept_for_its_mount(world: World) -> None:
    """The poller can deliver before the Workers tab's children exist: no error, and the summary shows on mount."""
    app = world.app()
    pane = app.workers_pane
    pane.apply_poll([], {})  # not mounted yet: nothing to update, nothing lost
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "3")
        summary = str(pane.query_one("#workers-summary", Static).render())
        assert summary.startswith("This process")
