"""The Queue tab: every key and menu action, checked against the database afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from amphigory_tui.domain.events import JobProgress
from amphigory_tui.domain.jobs import Job, JobStatus, Stage
from amphigory_tui.ui.screens.action_menu import ActionMenu, actions_for
from amphigory_tui.ui.screens.job_detail import JobDetailScreen
from amphigory_tui.ui.screens.prompt import PromptModal
from amphigory_tui.ui.widgets.confirm import ConfirmModal
from tests.ui.conftest import World, press, settle
from tests.ui.helpers import goto_job, notes, shown_ids, static_text
from tests.ui.seed import seed_candidates

pytestmark = pytest.mark.anyio

SIZE = (120, 40)


async def test_stats_line_and_first_page(world: World) -> None:
    """The stats line has the exact wording and the table lists every job, live ones first."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        stats = static_text(app.queue_pane.query_one("#queue-stats")).strip()
        assert stats == "2 files need transcoding · 2 queued · 1 running · 1 failed · saved 0.7 GB"
        ids = world.ids
        assert shown_ids(app) == [
            ids.running,
            ids.paused,
            ids.queued_tv,
            ids.queued_tv2,
            ids.failed,
            ids.completed,
            ids.canceled,
            ids.skipped,
        ]


async def test_a_queues_candidates_then_says_none_left(world_factory: Callable[..., World]) -> None:
    """`a` queues every candidate and says how many; a second press says they are all queued already."""
    world = world_factory(seeded=False)
    seed_candidates(world.services.store)
    queries = world.services.queries
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        hint = static_text(app.queue_pane.query_one("#queue-hint")).strip()
        assert hint == "Press a to queue 8 files that need transcoding"
        assert app.queue_pane.has_class("-empty")
        await press(pilot, "a")
        assert queries.count_jobs() == 8
        assert "Queued 8 jobs" in notes(app)
        assert len(app.queue_pane.rows) == 8
        assert not app.queue_pane.has_class("-empty")
        await press(pilot, "a")
        assert queries.count_jobs() == 8
        assert "Queued 0 jobs — all candidates already queued" in notes(app)


KEY_CASES: dict[str, list[tuple[str, Callable[[Job], bool]]]] = {
    "p": [
        ("queued_tv", lambda j: j.status is JobStatus.PAUSED),
        ("paused", lambda j: j.status is JobStatus.QUEUED),
        ("running", lambda j: j.status is JobStatus.RUNNING and j.control_request == "pause"),
        ("completed", lambda j: j.status is JobStatus.COMPLETED),
    ],
    "c": [
        ("queued_tv", lambda j: j.status is JobStatus.CANCELED),
        ("paused", lambda j: j.status is JobStatus.CANCELED),
        ("running", lambda j: j.control_request == "cancel"),
        ("failed", lambda j: j.status is JobStatus.FAILED and j.control_request is None),
    ],
    "K": [
        ("running", lambda j: j.control_request == "kill"),
        ("queued_tv", lambda j: j.status is JobStatus.QUEUED and j.control_request is None),
    ],
    "r": [
        ("failed", lambda j: j.status is JobStatus.QUEUED and j.max_retries == 1 + 3),
        ("skipped", lambda j: j.status is JobStatus.QUEUED),
        ("canceled", lambda j: j.status is JobStatus.QUEUED),
        ("queued_tv2", lambda j: j.status is JobStatus.QUEUED and j.attempts == 0),
    ],
    "d": [
        ("failed", lambda j: j.dismissed and j.status is JobStatus.FAILED),
        ("queued_tv2", lambda j: j.dismissed and j.status is JobStatus.CANCELED),
        ("running", lambda j: not j.dismissed and j.status is JobStatus.RUNNING),
    ],
    "plus": [
        ("queued_tv", lambda j: j.priority == 55),
        ("paused", lambda j: j.priority == 75),
        ("completed", lambda j: j.priority == 50),
    ],
    "equals_sign": [("queued_tv", lambda j: j.priority == 55)],
    "minus": [("queued_tv", lambda j: j.priority == 45), ("running", lambda j: j.priority == 80)],
}


@pytest.mark.parametrize("key", list(KEY_CASES))
async def test_direct_keys_act_on_the_job_under_the_cursor(world: World, key: str) -> None:
    """Each job key changes exactly the job under the cursor, and only when its status allows it."""
    queries = world.services.queries
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for target, check in KEY_CASES[key]:
            job_id = getattr(world.ids, target)
            before = {j.id: j for j in queries.jobs()}
            await goto_job(pilot, job_id)
            await press(pilot, key)
            after = queries.job(job_id)
            assert check(after), (target, after)
            for other in before.values():
                if other.id != job_id:
                    assert queries.job(other.id) == other, f"{key} on {target}: job {other.id} changed too"
            shown = app.queue_pane.rows.get(job_id)
            if shown is not None and not after.dismissed:
                assert shown.status is after.status


async def test_refused_action_says_why(world: World) -> None:
    """A key that does not fit the job's status changes nothing and says so."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await goto_job(pilot, world.ids.completed)
        await press(pilot, "K")
        assert any("only a running job can be force-killed" in n for n in notes(app))
        await goto_job(pilot, world.ids.running)
        await press(pilot, "d")
        assert any("cancel it before deleting it" in n for n in notes(app))
        assert world.services.queries.job(world.ids.running).status is JobStatus.RUNNING


MENUS = {
    "queued_tv": ["pause", "cancel", "priority", "delete", "details"],
    "running": ["pause", "cancel", "kill", "details"],
    "paused": ["resume", "cancel", "priority", "delete", "details"],
    "failed": ["retry", "delete", "details"],
    "skipped": ["retry", "delete", "details"],
    "canceled": ["retry", "delete", "details"],
    "completed": ["delete", "details"],
}


def test_actions_for_every_status(world: World) -> None:
    """The menu of each status lists exactly the actions that status allows, then Details."""
    for target, expected in MENUS.items():
        job = world.services.queries.job(getattr(world.ids, target))
        assert [a.action for a in actions_for(job)] == expected, target


async def test_enter_opens_the_menu_of_the_job_under_the_cursor(world: World) -> None:
    """Enter opens the menu for the row under the cursor; Esc closes it without doing anything."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for target in ("running", "completed"):
            await goto_job(pilot, getattr(world.ids, target))
            await press(pilot, "enter")
            menu = app.screen
            assert isinstance(menu, ActionMenu)
            assert menu.job.id == getattr(world.ids, target)
            assert [a.action for a in menu.actions] == MENUS[target]
            await press(pilot, "escape")
            assert not isinstance(app.screen, ActionMenu)
        assert world.services.queries.job(world.ids.running).control_request is None


async def test_menu_runs_the_chosen_action(world: World) -> None:
    """Each menu entry does what it says to the job the menu was opened for."""
    ids = world.ids
    queries = world.services.queries
    app = world.app()
    # (job, downs to the entry, what the database must say afterwards)
    cases: list[tuple[int, int, Callable[[Job], bool]]] = [
        (ids.running, 2, lambda j: j.control_request == "kill"),
        (ids.queued_tv, 0, lambda j: j.status is JobStatus.PAUSED),
        (ids.paused, 0, lambda j: j.status is JobStatus.QUEUED),
        (ids.queued_tv2, 1, lambda j: j.status is JobStatus.CANCELED),
        (ids.failed, 0, lambda j: j.status is JobStatus.QUEUED),
        (ids.completed, 0, lambda j: j.dismissed),
    ]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for job_id, downs, check in cases:
            await goto_job(pilot, job_id)
            await press(pilot, "enter", *(["down"] * downs), "enter")
            assert check(queries.job(job_id)), job_id


async def test_menu_priority_editor_validates(world: World) -> None:
    """The priority editor refuses 150 with a reason, then accepts 77."""
    job_id = world.ids.queued_tv
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await goto_job(pilot, job_id)
        await press(pilot, "enter", "down", "down", "enter")
        prompt = app.screen
        assert isinstance(prompt, PromptModal)
        await press(pilot, "backspace", "backspace", "1", "5", "0", "enter")
        assert app.screen is prompt
        assert "out of range" in static_text(prompt.query_one("#prompt-error"))
        await press(pilot, "backspace", "backspace", "backspace", "7", "7", "enter")
        assert not isinstance(app.screen, PromptModal)
        assert world.services.queries.job(job_id).priority == 77
        await press(pilot, "enter", "down", "down", "enter", "escape")
        assert world.services.queries.job(job_id).priority == 77


async def test_detail_screen_shows_paths_attempts_and_log(world: World) -> None:
    """`i` opens the job's details: full input path, each attempt with its error, its log lines."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await goto_job(pilot, world.ids.failed)
        await press(pilot, "i")
        screen = app.screen
        assert isinstance(screen, JobDetailScreen)
        await settle(pilot)
        text = static_text(screen.query_one("#detail-text"))
        assert "/library/movies/Casablanca (1942).mp4" in text
        assert "Encode failed (error 3)" in text
        assert "attempt 1/3: Casablanca (1942).mp4" in text
        await press(pilot, "escape")
        assert not isinstance(app.screen, JobDetailScreen)
        await goto_job(pilot, world.ids.running)
        await press(pilot, "enter", "down", "down", "down", "enter")
        assert isinstance(app.screen, JobDetailScreen)
        assert app.screen.job_id == world.ids.running


async def test_search_filters_and_bulk_pause_and_cancel(world: World) -> None:
    """`/` filters by name; P pauses and C cancels every match after a confirmation; Esc clears."""
    ids = world.ids
    queries = world.services.queries
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "P")
        assert not isinstance(app.screen, ConfirmModal)  # no search, no bulk action
        await press(pilot, "slash", *"doctor", "enter")
        assert sorted(shown_ids(app)) == sorted([ids.queued_tv, ids.completed, ids.canceled])
        assert app.focused is app.queue_pane.table
        await press(pilot, "P")
        assert isinstance(app.screen, ConfirmModal)
        await press(pilot, "y")
        assert queries.job(ids.queued_tv).status is JobStatus.PAUSED
        assert queries.job(ids.queued_tv2).status is JobStatus.QUEUED
        assert any("Paused 1 of 3 matching jobs" in n for n in notes(app))
        await press(pilot, "C", "n")
        assert queries.job(ids.queued_tv).status is JobStatus.PAUSED
        await press(pilot, "C", "y")
        assert queries.job(ids.queued_tv).status is JobStatus.CANCELED
        assert queries.job(ids.completed).status is JobStatus.COMPLETED
        await press(pilot, "escape")
        assert len(shown_ids(app)) == 8


async def test_bulk_keys_wait_for_the_matches_of_the_current_search(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P pressed while the search's reload is still running pauses nothing (the list shown is the unfiltered one);
    once the matches are shown, P pauses only them."""
    ids = world.ids
    queries = world.services.queries
    entered = threading.Event()
    release = threading.Event()
    job_ids = queries.job_ids

    def slow_job_ids(**kwargs: Any) -> list[int]:
        # The search's id query blocks until the test lets it go: the slow query of a big table, without a clock.
        if kwargs.get("search") == "doctor":
            entered.set()
            assert release.wait(30), "the test never released the query"
        return job_ids(**kwargs)

    monkeypatch.setattr(queries, "job_ids", slow_job_ids)
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = {j.id: j for j in queries.jobs()}
        try:
            # Not press(): settling would wait for the blocked query.
            await pilot.press("slash", *"doctor", "enter")
            for _ in range(500):
                if entered.is_set():
                    break
                await pilot.pause(0.01)
            assert entered.is_set()
            assert len(shown_ids(app)) == 8  # still the unfiltered list
            filters_while_loading = static_text(app.queue_pane.query_one("#queue-filters"))
            await pilot.press("P")
            await pilot.pause()
            opened_dialog = isinstance(app.screen, ConfirmModal)
            await pilot.press("y")  # confirms the dialog, had one been opened on the stale list
        finally:
            release.set()
        await settle(pilot)
        assert {j.id: j for j in queries.jobs()} == before
        assert not opened_dialog
        assert any("Still searching" in n for n in notes(app))
        assert "searching…" in filters_while_loading
        assert sorted(shown_ids(app)) == sorted([ids.queued_tv, ids.completed, ids.canceled])
        assert "3 matches" in static_text(app.queue_pane.query_one("#queue-filters"))
        await press(pilot, "P", "y")
        assert queries.job(ids.queued_tv).status is JobStatus.PAUSED
        for job_id, job in before.items():
            if job_id != ids.queued_tv:
                assert queries.job(job_id) == job, f"job {job_id} is not a match but changed"


async def test_path_filter_cycles_and_actions_hit_the_visible_row(world: World) -> None:
    """`f` cycles movies → TV → all, and `c` cancels the TV row under the cursor, not row 0 of the full list."""
    ids = world.ids
    queries = world.services.queries
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "f")
        assert shown_ids(app) == [ids.running, ids.paused, ids.failed, ids.skipped]
        await press(pilot, "f")
        assert shown_ids(app) == [ids.queued_tv, ids.queued_tv2, ids.completed, ids.canceled]
        await press(pilot, "home", "c")
        assert queries.job(ids.queued_tv).status is JobStatus.CANCELED
        assert queries.job(ids.running).control_request is None
        assert queries.job(ids.running).status is JobStatus.RUNNING
        await press(pilot, "f")
        assert len(shown_ids(app)) == 8


async def test_sections_cycle(world: World) -> None:
    """`v` shows active, queued, failed, done, then all jobs again."""
    ids = world.ids
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "v")
        assert shown_ids(app) == [ids.running, ids.paused]
        await press(pilot, "v")
        assert shown_ids(app) == [ids.queued_tv, ids.queued_tv2]
        await press(pilot, "v")
        assert shown_ids(app) == [ids.failed, ids.canceled]
        await press(pilot, "v")
        assert shown_ids(app) == [ids.completed, ids.skipped]
        await press(pilot, "r")
        assert world.services.queries.job(ids.completed).status is JobStatus.COMPLETED
        await press(pilot, "down", "r")
        assert world.services.queries.job(ids.skipped).status is JobStatus.QUEUED
        assert shown_ids(app) == [ids.completed]
        await press(pilot, "v")
        assert len(shown_ids(app)) == 8


async def test_cursor_stays_on_its_job_when_the_order_changes(world: World) -> None:
    """Another process raises a job's priority: the list reorders and the cursor follows the job."""
    ids = world.ids
    queries = world.services.queries
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await goto_job(pilot, ids.queued_tv2)
        before = app.queue_pane.table.cursor
        world.services.actions.set_priority(ids.queued_tv2, 99)
        await press(pilot, "ctrl+r")
        assert app.queue_pane.table.cursor == before - 1
        await press(pilot, "c")
        assert queries.job(ids.queued_tv2).status is JobStatus.CANCELED
        assert queries.job(ids.queued_tv).status is JobStatus.QUEUED


async def test_poll_shows_changes_of_other_processes(world: World) -> None:
    """With polling on, a pause made by another process shows up without a key press."""
    app = world.app(poll=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        world.services.actions.pause(world.ids.queued_tv)
        for _ in range(50):
            await pilot.pause(0.1)
            job = app.queue_pane.rows.get(world.ids.queued_tv)
            if job is not None and job.status is JobStatus.PAUSED and app.queue_pane.counts.get(JobStatus.PAUSED) == 2:
                break
        await settle(pilot)
        job = app.queue_pane.rows.get(world.ids.queued_tv)
        assert job is not None and job.status is JobStatus.PAUSED
        assert app.queue_pane.counts[JobStatus.PAUSED] == 2


async def test_bridge_progress_updates_the_row_without_the_database(world: World) -> None:
    """Progress events from the pool (any thread) update the running row; a burst becomes one update."""
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        job_id = world.ids.running

        def burst() -> None:
            for pct in range(50, 81):
                app.sink.emit(JobProgress(job_id, "w", Stage.TRANSCODE, float(pct), fps=30.0, eta_s=60))

        thread = threading.Thread(target=burst)
        thread.start()
        thread.join()
        await settle(pilot)
        job = app.queue_pane.rows.get(job_id)
        assert job is not None and job.progress_percent == 80.0 and job.fps == 30.0
        assert world.services.queries.job(job_id).progress_percent == 42.5
