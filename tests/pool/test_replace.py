"""The library swap: a kill at every single filesystem step leaves the complete original or the complete new file.

Each case forks a child that runs ``place()`` and dies with ``os._exit(137)`` (what SIGKILL looks like to the
files) just before its k-th mutating call (write, fsync, rename, replace, link, unlink, mkdir), for every k
until one run goes through. The parent checks the library at that instant, runs ``finish_or_rollback`` the way
startup recovery does, and checks again.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amphigory_tui.config import Settings
from amphigory_tui.domain.errors import JobError, StaleLease
from amphigory_tui.domain.jobs import JobStatus
from amphigory_tui.services.pipeline import recover_replaces
from amphigory_tui.services.replace import (
    INTENT_NAME,
    Intent,
    SourceChanged,
    backup_path_for,
    check_destination,
    finish_or_rollback,
    kept_original_path,
    part_path_for,
    place,
    target_path_for,
)
from tests.pool.conftest import Clips, Env

ORIGINAL = b"original bytes " * 5000
NEW = b"new encode " * 3000
MUTATING = ("write", "fsync", "rename", "replace", "link", "unlink", "mkdir")


@dataclass
class Case:
    """One replace set up in a fresh directory."""

    source: Path
    target: Path
    encoded: Path
    intent: Intent
    backup_dir: Path


def _case(root: Path, policy: str, same_name: bool, work: Path | None = None) -> Case:
    lib, backup = root / "lib", root / "backup"
    work = work or root / "work"
    lease = work / "job-7" / "a1-abc"
    for d in (lib, lease):
        d.mkdir(parents=True, exist_ok=True)
    source = lib / ("Film.mkv" if same_name else "Film.mp4")
    source.write_bytes(ORIGINAL)
    encoded = lease / "output.mkv"
    encoded.write_bytes(NEW)
    target = Path(target_path_for(str(source), "mkv"))
    st = source.stat()
    dest = None
    if policy == "keep":
        dest = kept_original_path(str(source))
    elif policy == "backup":
        dest = backup_path_for(str(source), str(backup))
    intent = Intent(
        job_id=7,
        worker_id="host:1:abc",
        source=str(source),
        target=str(target),
        part=part_path_for(str(target), 7),
        policy=policy,  # type: ignore[arg-type]
        original_dest=dest,
        source_size=st.st_size,
        source_mtime_ns=st.st_mtime_ns,
        path=str(lease / INTENT_NAME),
    )
    return Case(source, target, encoded, intent, backup)


def _run_until_crash(case: Case, crash_at: int) -> int:
    """Fork; the child runs place() and exits 137 before mutating call number ``crash_at``; returns its status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            calls = [0]

            def wrap(name: str) -> None:
                real = getattr(os, name)

                def counted(*args: object, **kwargs: object) -> object:
                    if calls[0] == crash_at:
                        os._exit(137)
                    calls[0] += 1
                    return real(*args, **kwargs)

                setattr(os, name, counted)

            for name in MUTATING:
                wrap(name)
            place(str(case.encoded), case.intent)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _library_ok(case: Case) -> str:
    """'old', 'new' or raise: the library path(s) hold a complete original or a complete new file."""
    same = case.source == case.target
    src = case.source.read_bytes() if case.source.exists() else None
    tgt = case.target.read_bytes() if case.target.exists() else None
    if same:
        assert src in (ORIGINAL, NEW), "the library path is missing or partial"
        return "old" if src == ORIGINAL else "new"
    assert tgt in (None, NEW), "a partial new file under the final name"
    assert src in (None, ORIGINAL), "the original was altered"
    assert src is not None or tgt is not None, "neither name is present"
    return "new" if tgt == NEW else "old"


def _copies_of_original(case: Case) -> list[Path]:
    root = case.source.parent.parent
    return [p for p in root.rglob("*") if p.is_file() and p.read_bytes() == ORIGINAL and "work" not in p.parts]


def _check_settled(case: Case, finished: bool) -> None:
    lib = case.source.parent
    assert not [p for p in lib.iterdir() if p.name.startswith(".amphigory-")], "temp file left in the library"
    assert not list(case.backup_dir.rglob("*.part")) if case.backup_dir.exists() else True
    if finished:
        assert case.target.read_bytes() == NEW
        if case.source != case.target:
            assert not case.source.exists()
        kept = _copies_of_original(case)
        if case.intent.policy == "delete":
            assert kept == []
        else:
            assert kept == [Path(case.intent.original_dest or "")]
    else:
        assert case.source.read_bytes() == ORIGINAL
        assert _copies_of_original(case) == [case.source]
        if case.source != case.target:
            assert not case.target.exists()


@pytest.fixture
def crossfs(tmp_path: Path) -> Iterator[Path]:
    """A work dir on its own tmpfs, so the new file must be copied (and hash-checked) into the library."""
    where = tmp_path / "xfs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], check=True)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


CASES = [
    *[(policy, same, False) for policy in ("keep", "backup", "delete") for same in (True, False)],
    # The new file crossing filesystems (copied, fsynced, read back and hash-checked) instead of renamed.
    ("keep", False, True),
    ("delete", True, True),
]


@pytest.mark.parametrize(
    ("policy", "same_name", "cross"),
    CASES,
    ids=[f"{p}-{'same-name' if s else 'new-extension'}-{'copy' if c else 'rename'}" for p, s, c in CASES],
)
def test_kill_at_every_step_of_the_replace(
    tmp_path: Path, policy: str, same_name: bool, cross: bool, request: pytest.FixtureRequest
) -> None:
    """For every k: kill before the k-th mutation → library intact → recovery settles it consistently."""
    xfs = request.getfixturevalue("crossfs") if cross else None
    outcomes: set[bool] = set()
    for k in range(200):
        root = tmp_path / f"k{k}"
        work = (xfs / f"k{k}") if xfs is not None else None
        case = _case(root, policy, same_name, work)
        code = _run_until_crash(case, k)
        state = _library_ok(case)
        intent_left = Path(case.intent.path).exists()
        if code == 0:
            assert state == "new" and intent_left  # phase "placed": the pool drops it after complete()
            # Recovery of a worker killed between place() and complete() finds exactly this.
            outcome = finish_or_rollback(case.intent.path)
            assert outcome.finished
            _check_settled(case, finished=True)
            break
        assert code == 137
        if intent_left:
            outcome = finish_or_rollback(case.intent.path)
            assert not Path(case.intent.path).exists()
            assert outcome.finished == (state == "new")
            _check_settled(case, finished=outcome.finished)
            outcomes.add(outcome.finished)
        else:
            # Killed before the intent existed (or after place() cleaned up): nothing may have changed.
            assert state == "old"
            _check_settled(case, finished=False)
    else:
        pytest.fail("place() never completed")
    print(f"{policy} same_name={same_name} cross={cross}: {k} kill points")
    assert k >= 8  # the protocol really has that many durable steps; each one was cut
    assert outcomes == {True, False}  # kills before the swap roll back, kills after it finish


def test_source_changed_before_the_swap_replaces_nothing(tmp_path: Path) -> None:
    """The original's size/mtime differ from the claim-time values: SourceChanged, library untouched."""
    case = _case(tmp_path, "keep", True)
    case.source.write_bytes(ORIGINAL + b"more")
    with pytest.raises(SourceChanged, match="changed during the job"):
        place(str(case.encoded), case.intent)
    assert case.source.read_bytes() == ORIGINAL + b"more"
    assert sorted(p.name for p in case.source.parent.iterdir()) == ["Film.mkv"]
    assert not Path(case.intent.path).exists()


def test_a_worker_that_lost_its_job_replaces_nothing(tmp_path: Path) -> None:
    """``confirm`` refuses just before the swap (another worker took the job over): library untouched, no temp."""
    case = _case(tmp_path, "keep", True)

    def lost() -> None:
        raise StaleLease("job 7: worker w1 does not own it")

    with pytest.raises(StaleLease):
        place(str(case.encoded), case.intent, confirm=lost)
    assert case.source.read_bytes() == ORIGINAL
    assert sorted(p.name for p in case.source.parent.iterdir()) == ["Film.mkv"]
    assert not Path(case.intent.path).exists()


def test_names() -> None:
    """Output and keep/backup names: same stem with .mkv; .original never overwritten; backups mirror paths."""
    assert target_path_for("/l/A.mp4", "mkv") == "/l/A.mkv"
    assert target_path_for("/l/A.MKV", "mkv") == "/l/A.MKV"
    assert target_path_for("/l/noext", "mkv") == "/l/noext.mkv"
    assert part_path_for("/l/A b.mkv", 12) == "/l/.amphigory-12.mkv.part"
    assert part_path_for("/l/A b.MKV", 12, 3) == "/l/.amphigory-12-a3.mkv.part"
    assert backup_path_for("/lib/x/A.mp4", "/bk") == "/bk/lib/x/A.mp4"


def test_an_earlier_original_is_never_overwritten(tmp_path: Path) -> None:
    """A second transcode of the same file keeps the first .original and picks .original.2."""
    source = tmp_path / "A.mkv"
    source.write_bytes(b"x")
    (tmp_path / "A.mkv.original").write_bytes(b"the real original")
    assert kept_original_path(str(source)) == str(tmp_path / "A.mkv.original.2")


def test_check_destination(tmp_path: Path) -> None:
    """A stranger at the target name and a missing folder are refused before any encoding."""
    src = tmp_path / "A.mp4"
    src.write_bytes(b"x")
    (tmp_path / "A.mkv").write_bytes(b"someone else's file")
    with pytest.raises(JobError, match="already exists and is not this job's source") as info:
        check_destination(str(src), str(tmp_path / "A.mkv"), 1)
    assert info.value.permanent
    with pytest.raises(JobError, match="does not exist"):
        check_destination(str(src), str(tmp_path / "nope" / "A.mkv"), 1)
    check_destination(str(src), str(src), 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.mkv", "A.mp4"]


def test_read_only_output_folder_is_refused(tmp_path: Path) -> None:
    """An output folder on a read-only file system: one sentence naming the folder (checked before encoding)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], check=True)
    try:
        with pytest.raises(JobError, match=rf"the output folder {ro} is not writable \(Read-only file system\)"):
            check_destination(str(ro / "A.mp4"), str(ro / "A.mkv"), 3)
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_recover_replaces_completes_the_job_of_a_dead_worker(env: Env, clips: Clips) -> None:
    """Killed right after the swap: startup recovery finishes the replace and records the job completed."""
    settings: Settings = env.settings()
    store = env.store(settings)
    source = env.lib / "Dead.mp4"
    source.write_bytes(clips.plain.read_bytes())
    job = store.jobs.create(str(source))
    claimed = store.jobs.claim("otherhost:999:dead")
    assert claimed is not None and claimed.id == job.id
    lease = env.work / f"job-{job.id}" / "a1-dead"
    lease.mkdir(parents=True)
    encoded = lease / "output.mkv"
    encoded.write_bytes(NEW)
    st = source.stat()
    target = Path(target_path_for(str(source), "mkv"))
    intent = Intent(
        job_id=job.id,
        worker_id="otherhost:999:dead",
        source=str(source),
        target=str(target),
        part=part_path_for(str(target), job.id),
        policy="keep",
        original_dest=kept_original_path(str(source)),
        source_size=st.st_size,
        source_mtime_ns=st.st_mtime_ns,
        path=str(lease / INTENT_NAME),
    )
    place(str(encoded), intent)  # the worker got this far, then died before complete()
    alive = {"otherhost:999:dead": True}
    assert recover_replaces(store, settings, lambda w: alive.get(w, False)) == []  # a live owner is left alone
    alive.clear()
    (outcome,) = recover_replaces(store, settings, lambda w: alive.get(w, False))
    assert outcome.finished and outcome.target == str(target)
    done = store.jobs.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.output_path == str(target)
    assert done.output_size == len(NEW)
    assert target.read_bytes() == NEW and Path(str(source) + ".original").read_bytes() == clips.plain.read_bytes()
    assert not Path(intent.path).exists()
    assert recover_replaces(store, settings, lambda w: False) == []  # twice = once
