"""Startup recovery on a real database and a real work dir: orphans, leftovers, paused jobs, temp files."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from pathlib import Path

import pytest

from amphigory_tui.config import LibrarySettings
from amphigory_tui.domain.clock import FixedClock
from amphigory_tui.domain.jobs import Job, JobStatus, RecoveryReport
from amphigory_tui.services.locks import NamedLock, ProcessLock
from amphigory_tui.services.proc import is_same_process, process_start_ticks
from amphigory_tui.services.recovery import clean_work_dir, recover, summarize
from amphigory_tui.services.runtime import Services, open_services
from amphigory_tui.services.scanner import _advisory_key, scan_lock_name
from amphigory_tui.store import make_engines
from tests.lifecycle.conftest import Holder, lifecycle_settings

HOST = socket.gethostname()


def running_job(services: Services, worker_id: str, name: str = "a.mkv", **fields: object) -> Job:
    """A job claimed by ``worker_id`` (one claim = one attempt), with running-job fields set."""
    created = services.store.jobs.create(f"/library/{name}")
    claimed = services.store.jobs.claim(worker_id)
    assert claimed is not None and claimed.id == created.id
    if fields:
        services.store.jobs.update_running(created.id, worker_id, **fields)
    return services.store.jobs.get(created.id)


def dead_worker(lock_dir: Path, holders: list[Holder]) -> str:
    """The worker id of a process that held its lock and was killed -9."""
    holder = Holder(lock_dir)
    holders.append(holder)
    holder.kill()
    return holder.worker_id()


def sleeper() -> tuple[int, int]:
    """A stand-in tool in its own process group (like HandBrakeCLI): pid and start ticks."""
    tool = subprocess.Popen(["sleep", "60"], start_new_session=True)
    ticks = process_start_ticks(tool.pid)
    assert ticks is not None
    return tool.pid, ticks


def test_orphans_of_dead_owners_are_requeued_or_failed(
    services: Services, lock_dir: Path, holders: list[Holder]
) -> None:
    """A killed worker's job is queued with its attempt counted; at max retries it fails; a cancel is honoured."""
    dead = dead_worker(lock_dir, holders)
    jobs = services.store.jobs
    at_max = running_job(services, dead, "max.mkv")
    for _ in range(2):  # two more crashed attempts: 3 of 3 used
        jobs.recover_orphaned(lambda w: w != dead)
        assert jobs.claim(dead) is not None
    assert jobs.get(at_max.id).attempts == 3
    requeue = running_job(services, dead, "requeue.mkv")
    canceled = running_job(services, dead, "cancel.mkv")
    jobs.cancel(canceled.id)
    report = recover(services)
    assert (report.orphaned_requeued, report.orphaned_failed, report.orphaned_canceled) == (1, 1, 1)
    after = jobs.get(requeue.id)
    assert (after.status, after.attempts, after.worker_id) == (JobStatus.QUEUED, 1, None)
    failed = jobs.get(at_max.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error_message == "abandoned after restart (max retries exceeded)"
    assert jobs.get(canceled.id).status is JobStatus.CANCELED
    assert summarize(report).startswith("recovered 3 orphaned jobs (1 failed after max retries, 1 canceled)")


def test_jobs_of_live_owners_are_never_touched(services: Services, lock_dir: Path, holders: list[Holder]) -> None:
    """A live process's job stays running, however old its heartbeat; a live remote worker's too."""
    holder = Holder(lock_dir)
    holders.append(holder)
    clock = services.clock
    assert isinstance(clock, FixedClock)
    local = running_job(services, holder.worker_id(), "local.mkv")
    remote = running_job(services, "farbox:7:eeeeeeeeeeee.1", "remote.mkv")
    clock.advance(30)  # well inside the 60 s stall timeout for the remote worker's heartbeat
    report = recover(services)
    assert not report.changed
    assert services.store.jobs.get(local.id).status is JobStatus.RUNNING
    assert services.store.jobs.get(remote.id).status is JobStatus.RUNNING
    clock.advance(31)
    recover(services)
    assert services.store.jobs.get(remote.id).status is JobStatus.QUEUED, "a silent remote worker is dead"
    assert services.store.jobs.get(local.id).status is JobStatus.RUNNING, "a local lock outranks any heartbeat"


def test_leftover_tools_of_dead_owners_are_killed_first_never_a_recycled_pid(
    services: Services, lock_dir: Path, holders: list[Holder]
) -> None:
    """The recorded child (pid + start ticks) dies; a pid whose start ticks differ is left alone."""
    dead = dead_worker(lock_dir, holders)
    pid, ticks = sleeper()
    innocent, innocent_ticks = sleeper()
    running_job(services, dead, "a.mkv", child_pid=pid, child_start_ticks=ticks)
    # "Recycled": the recorded pid now belongs to another process that started at another time.
    running_job(services, dead, "b.mkv", child_pid=innocent, child_start_ticks=innocent_ticks + 1)
    try:
        report = recover(services)
        assert report.killed_processes == 1
        assert not is_same_process(pid, ticks)
        assert is_same_process(innocent, innocent_ticks)
        assert all(j.child_pid is None for j in services.store.jobs.list_jobs())
    finally:
        for p in (pid, innocent):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p, 9)


def test_shutdown_pauses_resume_and_user_holds_stay(services: Services) -> None:
    """Paused by a shutdown -> queued with no attempt used; paused by the user -> stays paused."""
    jobs = services.store.jobs
    with ProcessLock.acquire() as lock:
        worker = lock.new_worker_id()
        shut = running_job(services, worker, "shut.mkv")
        jobs.pause_running(shut.id, worker)
    held = jobs.create("/library/held.mkv")
    jobs.pause(held.id)
    report = recover(services)
    assert report.paused_resumed == 1
    resumed = jobs.get(shut.id)
    assert (resumed.status, resumed.attempts, resumed.resume_attempt) == (JobStatus.QUEUED, 1, True)
    assert jobs.get(held.id).status is JobStatus.PAUSED


def test_recovery_twice_equals_once(services: Services, lock_dir: Path, holders: list[Holder]) -> None:
    """The second pass finds nothing: same rows, same files, a report that changed nothing."""
    dead = dead_worker(lock_dir, holders)
    running_job(services, dead, "a.mkv", temp_path=str(services.settings.work_dir / "job-1" / "a.mkv"))
    (services.settings.work_dir / "job-1").mkdir()
    (services.settings.work_dir / "job-1" / "a.mkv").write_bytes(b"x" * 1000)
    first = recover(services)
    assert first.changed and first.temp_files_removed == 1 and first.temp_bytes_removed == 1000
    rows = [(j.id, j.status, j.attempts, j.worker_id, j.error_message) for j in services.store.jobs.list_jobs()]
    second = recover(services)
    assert not second.changed
    assert second == RecoveryReport()
    assert [(j.id, j.status, j.attempts, j.worker_id, j.error_message) for j in services.store.jobs.list_jobs()] == rows
    assert list(services.settings.work_dir.iterdir()) == []


def test_temp_cleanup_removes_only_unowned_files_inside_work_dir(
    services: Services, tmp_path: Path, lock_dir: Path, holders: list[Holder]
) -> None:
    """Owned job folders stay; symlinks are removed as links, never followed; outside files are untouched."""
    work = services.settings.work_dir
    holder = Holder(lock_dir)
    holders.append(holder)
    live = running_job(services, holder.worker_id(), "live.mkv")
    (work / f"job-{live.id}").mkdir()
    (work / f"job-{live.id}" / "partial.mkv").write_bytes(b"p" * 10)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.mkv").write_bytes(b"precious")
    dead = work / "job-99"
    (dead / "deep").mkdir(parents=True)
    (dead / "deep" / "old.mkv").write_bytes(b"o" * 100)
    (dead / "stray.tmp").write_bytes(b"s" * 5)
    (dead / "link-to-file").symlink_to(outside / "precious.mkv")
    (dead / "link-to-dir").symlink_to(outside)
    (dead / "weird $(touch pwned) -rf\nname").write_bytes(b"w")
    result = clean_work_dir(services, lambda: services.store.jobs.running())
    assert (result.files, result.bytes, result.refused, result.unknown) == (5, 106, None, ())
    assert sorted(p.name for p in work.iterdir()) == [f"job-{live.id}"]
    assert (work / f"job-{live.id}" / "partial.mkv").read_bytes() == b"p" * 10
    assert (outside / "precious.mkv").read_bytes() == b"precious"
    assert not Path("pwned").exists()


def test_cleanup_leaves_what_is_not_amphigorys_alone_and_names_it_once(services: Services, tmp_path: Path) -> None:
    """A work_dir shared with other files: only job-<id> folders and .amphigory-* files go; a foreign file, a
    foreign folder, look-alike names and links stay, untouched, and one notice names them (not at every start)."""
    work = services.settings.work_dir
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.mkv").write_bytes(b"precious")
    (work / "notes.txt").write_text("my notes", encoding="utf-8")
    (work / "My Stuff" / "deeper").mkdir(parents=True)
    (work / "My Stuff" / "deeper" / "photo.jpg").write_bytes(b"jpg")
    (work / "job-2024-taxes").mkdir()
    (work / "job-2024-taxes" / "return.pdf").write_bytes(b"pdf")
    (work / "job-7").symlink_to(outside)  # an amphigory name, but a link: never ours
    (work / "job-8").write_bytes(b"a file, not our folder")
    (work / "job-3" / "a1-x").mkdir(parents=True)
    (work / "job-3" / "a1-x" / "output.mkv").write_bytes(b"o" * 10)
    (work / ".amphigory-doctor-abc").write_bytes(b"d")
    foreign = sorted(p.name for p in work.iterdir() if p.name not in ("job-3", ".amphigory-doctor-abc"))

    report = recover(services)
    assert (report.temp_files_removed, report.temp_bytes_removed) == (2, 11)
    assert sorted(p.name for p in work.iterdir()) == foreign
    assert (work / "notes.txt").read_text(encoding="utf-8") == "my notes"
    assert (work / "My Stuff" / "deeper" / "photo.jpg").read_bytes() == b"jpg"
    assert (work / "job-2024-taxes" / "return.pdf").read_bytes() == b"pdf"
    assert (outside / "precious.mkv").read_bytes() == b"precious"
    note = "left 5 unknown entries in work_dir alone: My Stuff/, job-2024-taxes/, job-7, job-8, notes.txt"
    assert report.notes == (note,)
    assert note in summarize(report)
    logged = [r.message for _i, r in services.store.log.tail(limit=10)]
    assert sum(note in m for m in logged) == 1

    # The next start finds the same foreign entries: nothing to do, nothing said again.
    again = recover(services)
    assert again == RecoveryReport()
    assert sum(note in r.message for _i, r in services.store.log.tail(limit=10)) == 1
    # Something new appears: named again, with the rest.
    (work / "new.txt").write_text("x", encoding="utf-8")
    assert recover(services).notes == (
        "left 6 unknown entries in work_dir alone: My Stuff/, job-2024-taxes/, job-7, job-8, new.txt and 1 more",
    )
    assert (work / "new.txt").exists()


def test_the_database_inside_work_dir_is_never_touched(tmp_path: Path) -> None:
    """Someone put the SQLite file in work_dir: it, its WAL and shared memory survive every cleanup."""
    from amphigory_tui.config import DatabaseSettings, PathsSettings, Settings
    from amphigory_tui.services.runtime import open_services

    work = tmp_path / "work"
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite:///{work / 'amphigory.db'}"), paths=PathsSettings(work_dir=str(work))
    )
    services = open_services(settings)
    try:
        services.store.jobs.create("/library/a.mkv")
        (work / "job-1").mkdir()
        (work / "job-1" / "leftover.part").write_bytes(b"x")
        names_before = {p.name for p in work.iterdir()}
        assert {"amphigory.db", "amphigory.db-wal", "amphigory.db-shm"} <= names_before
        report = recover(services)
        assert report.temp_files_removed == 1
        assert {p.name for p in work.iterdir()} == names_before - {"job-1"}
        assert report.notes == (), "the database's files are amphigory's: not reported as unknown"
        assert services.store.jobs.count() == 1
    finally:
        services.close()


def test_cleanup_refuses_a_work_dir_that_holds_the_library(services: Services, tmp_path: Path) -> None:
    """work_dir = a parent of a library root would delete the library: nothing is deleted and the notice says why."""
    from dataclasses import replace

    work = services.settings.work_dir
    library = work / "Movies"
    library.mkdir()
    (library / "film.mkv").write_bytes(b"film")
    services.settings = replace(services.settings, library=LibrarySettings(roots=(str(library),)))
    report = recover(services)
    assert report.temp_files_removed == 0
    assert (library / "film.mkv").read_bytes() == b"film"
    assert report.notes and "contains" in report.notes[0] and str(library) in report.notes[0]
    assert str(library) in summarize(report)


def test_summary_is_one_line_with_sizes() -> None:
    """The notice reads like the issue's example."""
    report = RecoveryReport(
        orphaned_requeued=3, paused_resumed=2, temp_files_removed=5, temp_bytes_removed=1_200_000_000
    )
    assert summarize(report) == "recovered 3 orphaned jobs, resumed 2 paused, removed 5 temp files (1.2 GB)"
    assert summarize(RecoveryReport()) == "nothing to recover"
    assert "resumes from its checkpoint" in summarize(RecoveryReport(scan_interrupted=True))


def test_an_interrupted_scan_is_announced(services: Services) -> None:
    """A scan checkpoint left behind is mentioned (``amphigory scan`` resumes it)."""
    services.store.state.set("scan.checkpoint", "{}")
    assert recover(services).scan_interrupted is True


@pytest.mark.postgres
def test_on_postgresql_a_scan_on_another_machine_is_not_an_interrupted_scan(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    """Machines sharing a PostgreSQL database share no lock directory: while another session ("another machine")
    holds the database's scan lock, its checkpoint is that scan's, not one left for ``amphigory scan`` to resume;
    recovery takes the lock only to look, so the other machine can take it again afterwards."""
    from dataclasses import replace

    from amphigory_tui.config import DatabaseSettings

    settings = lifecycle_settings(tmp_path)
    settings = replace(settings, database=DatabaseSettings(url=fresh_postgres_url))
    settings.work_dir.mkdir(parents=True)
    services = open_services(settings)
    other_machine = make_engines(fresh_postgres_url)
    try:
        services.store.state.set("scan.checkpoint", "{}")
        key = _advisory_key(scan_lock_name(services.store))
        held = other_machine.try_advisory_lock(key)
        assert held is not None
        assert recover(services).scan_interrupted is False
        held.release()
        assert recover(services).scan_interrupted is True
        again = other_machine.try_advisory_lock(key)
        assert again is not None, "recovery kept the scan lock it only looked at"
        again.release()
    finally:
        other_machine.dispose()
        services.close()


def test_the_checkpoint_of_a_scan_still_running_is_not_an_interrupted_scan(services: Services) -> None:
    """Another process is scanning (it holds the scan lock): its checkpoint is not announced for resuming."""
    services.store.state.set("scan.checkpoint", "{}")
    held = NamedLock.try_acquire(scan_lock_name(services.store), doing="scanning /library")
    assert held is not None
    with held:
        assert recover(services).scan_interrupted is False
    assert recover(services).scan_interrupted is True


@pytest.mark.parametrize("as_json", [False, True])
def test_amphigory_recover_prints_the_counts(
    tmp_path: Path, as_json: bool, lock_dir: Path, holders: list[Holder]
) -> None:
    """``amphigory recover`` runs the same pass on demand and prints each count."""
    import json

    from click.testing import CliRunner

    from amphigory_tui.cli import main
    from amphigory_tui.services.runtime import open_services
    from tests.lifecycle.conftest import lifecycle_settings

    settings = lifecycle_settings(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[database]\nurl = "{settings.database.url}"\n[paths]\nwork_dir = "{settings.work_dir}"\n', encoding="utf-8"
    )
    services = open_services(settings)
    try:
        running_job(services, dead_worker(lock_dir, holders))
    finally:
        services.close()
    args = ["--config", str(config), "recover"] + (["--json"] if as_json else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    if as_json:
        data = json.loads(result.output)
        assert (data["orphaned_requeued"], data["summary"]) == (1, "recovered 1 orphaned job")
    else:
        assert result.output.splitlines()[0] == "recovered 1 orphaned job"
        assert "  orphaned jobs requeued: 1" in result.output.splitlines()


def test_an_unsettled_replace_intent_survives_the_cleanup(
    services: Services, lock_dir: Path, holders: list[Holder]
) -> None:
    """A live worker's intent record (its job already failed, the swap left for recovery) is the only record of a
    half-done replace: cleanup removes the files around it, never the record."""
    from amphigory_tui.services.replace import INTENT_NAME, Intent, write_intent

    holder = Holder(lock_dir)
    holders.append(holder)
    lease = services.settings.work_dir / "job-7" / "a1-x"
    lease.mkdir(parents=True)
    (lease / "output.mkv").write_bytes(b"o" * 10)
    intent = Intent(
        job_id=7,
        worker_id=holder.worker_id(),
        source="/library/a.mkv",
        target="/library/a.mkv",
        part="/library/.amphigory-7.mkv.part",
        policy="keep",
        original_dest="/library/a.mkv.original",
        source_size=1,
        source_mtime_ns=1,
        path=str(lease / INTENT_NAME),
    )
    write_intent(intent)
    report = recover(services)
    assert (report.temp_files_removed, report.replaces_finished, report.replaces_rolled_back) == (1, 0, 0)
    assert [p.name for p in lease.iterdir()] == [INTENT_NAME]
