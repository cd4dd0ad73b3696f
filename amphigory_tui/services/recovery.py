"""Startup recovery and the periodic checks: orphans, leftover tools, half-done replaces, paused jobs, temp files.

``recover`` runs at every start (headless worker, TUI) and on demand (``amphigory recover``), in this order:

1. kill HandBrakeCLI/makemkvcon processes left running by a dead amphigory on this host (recorded pid + start
   ticks, so a recycled pid is never hit);
2. half-done replaces (the upload stage's intent records) of dead workers are finished or rolled back; a finished
   one completes its job (this runs before step 3 so the job is still owned by its dead worker's id);
3. orphaned running jobs of dead owners -> queued (their attempt was counted at claim time) or failed
   "abandoned after restart (max retries exceeded)"; a pending cancel request -> canceled;
4. jobs paused by a shutdown -> queued (a user's hold stays paused: only the user releases it);
5. amphigory's own leftovers in work_dir (``job-<id>`` folders, ``.amphigory-*`` temp files) that no live job owns
   are removed; any other entry there is not ours and is left alone (named once in the recovery notice); nothing
   outside work_dir is ever deleted, symlinks are never followed, and the database's own files are never touched
   even when they live inside work_dir;
6. lock files of dead processes are removed.

"Dead" is exact on this host (the owner's flock can be taken, see ``locks.py``) and "heartbeat older than the stall
timeout" for other hosts, so a job whose owner is alive is never touched. Every step is idempotent: a second run
finds nothing to do. ``periodic_check`` is what every running amphigory does once a minute: the same orphan step,
plus running jobs whose heartbeat is older than stall_timeout (owner dead, or alive but frozen) go through
``JobStore.fail`` with the old owner's id and its silence as the condition (a compare-and-set: an owner that wakes
up first wins), and only a job so taken has its leftover tool ended.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import signal
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from amphigory_tui import paths
from amphigory_tui.config import Settings
from amphigory_tui.domain.errors import StaleLease
from amphigory_tui.domain.jobs import Job, RecoveryReport, Stage
from amphigory_tui.services.locks import (
    Liveness,
    ProcessLock,
    cleanup_stale_locks,
    current_lock,
)
from amphigory_tui.services.pipeline import ENCODE_FACTS_NAME
from amphigory_tui.services.proc import is_same_process
from amphigory_tui.services.replace import INTENT_NAME
from amphigory_tui.services.runtime import Services
from amphigory_tui.services.scanner import scan_running

__all__ = [
    "SCAN_CHECKPOINT_KEYS",
    "TempCleanup",
    "build_liveness",
    "clean_work_dir",
    "kill_leftovers",
    "periodic_check",
    "recover",
    "run_periodic_checks",
    "summarize",
]

log = logging.getLogger(__name__)

SCAN_CHECKPOINT_KEYS = ("scan.checkpoint",)
"""system_state keys whose presence means a scan was interrupted and ``amphigory scan`` will resume it."""

_POLL_S = 0.05
_LEFTOVER_GRACE_S = 3.0
ReplaceRecovery = Callable[[Services, Liveness], tuple[int, int]]
"""Finishes or rolls back the half-done replaces of dead workers; returns ``(finished, rolled_back)``."""


# ---------------------------------------------------------------------------------------------------- liveness
def build_liveness(services: Services, *, lock: ProcessLock | None = None, lock_dir: Path | None = None) -> Liveness:
    """A liveness snapshot: every worker's newest sign of life (worker row or job heartbeat), locks on this host."""
    heartbeats: dict[str, float] = {}
    for worker in services.store.workers.list_workers():
        heartbeats[worker.id] = worker.last_seen
    for job in services.store.jobs.running():
        if job.worker_id and job.last_heartbeat is not None:
            heartbeats[job.worker_id] = max(heartbeats.get(job.worker_id, job.last_heartbeat), job.last_heartbeat)
    return Liveness(
        now=services.clock.now(),
        stall_timeout_s=float(services.settings.workers.stall_timeout_s),
        heartbeats=heartbeats,
        lock_dir=lock_dir or paths.lock_dir(),
        own=lock if lock is not None else current_lock(),
    )


# ---------------------------------------------------------------------------------------------------- leftovers
def kill_leftovers(jobs: Iterable[Job], liveness: Liveness, *, grace_s: float = _LEFTOVER_GRACE_S) -> int:
    """End the recorded child processes of these jobs (this host only; TERM, then KILL); returns how many.

    A pid is signalled only while it is still the very process that was recorded (same start ticks), so a pid the
    kernel recycled for something else is never hit.
    """
    targets = [
        (job.child_pid, job.child_start_ticks)
        for job in jobs
        if liveness.is_local(job.worker_id) and job.child_pid and job.child_start_ticks is not None
    ]
    return kill_processes([(pid, ticks) for pid, ticks in targets if pid is not None], grace_s=grace_s)


def kill_processes(targets: list[tuple[int, int]], *, grace_s: float = _LEFTOVER_GRACE_S) -> int:
    """TERM (then KILL after ``grace_s``) each ``(pid, start_ticks)`` that is still that process; returns how many."""
    live = [(pid, ticks) for pid, ticks in dict.fromkeys(targets) if is_same_process(pid, ticks)]
    for pid, _ticks in live:
        _signal_tool(pid, signal.SIGTERM)
        # A SIGSTOPped tool keeps SIGTERM pending until it runs again.
        _signal_tool(pid, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    waiting = list(live)
    while waiting and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        waiting = [(pid, ticks) for pid, ticks in waiting if is_same_process(pid, ticks)]
    for pid, ticks in waiting:
        if is_same_process(pid, ticks):
            _signal_tool(pid, signal.SIGKILL)
    for pid, _ticks in live:
        log.info("recovery: ended leftover tool process %d", pid)
    return len(live)


def _signal_tool(pid: int, sig: int) -> None:
    """Signal a tool's process group when it leads one (ours always do), else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------------- temp files
@dataclass(frozen=True)
class TempCleanup:
    """What a work-dir cleanup removed, or why it refused to run."""

    files: int = 0
    bytes: int = 0
    dirs: int = 0
    refused: str | None = None
    unknown: tuple[str, ...] = ()
    """Top-level work_dir entries amphigory did not make (left alone); folders end with ``/``."""


# What amphigory itself creates at the top of work_dir: the pipeline's per-job folders (``job-<id>``, holding the
# attempts' lease folders ``a<attempt>-<uuid>``, see ``pipeline.job_dir``/``lease_dir``) and hidden temp files
# (``.amphigory-doctor-*``, ``.amphigory-<job>…``). Anything else was put there by someone else and is never ours
# to delete, whatever it is called ("job-2024-taxes" included: the id is digits only).
_JOB_DIR = re.compile(r"job-[0-9]+")
_TEMP_PREFIX = ".amphigory-"
_UNKNOWN_STATE_KEY = "recovery.unknown_work_entries"
_UNKNOWN_LISTED = 5


@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]
    is_dir: bool
    dev: int
    ino: int
    size: int
    mtime_ns: int


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _protected_files(services: Services) -> set[Path]:
    """The database's own files (SQLite main file, WAL, shared memory, rollback journal)."""
    db = services.store.engines.sqlite_path()
    if db is None:
        return set()
    real = Path(os.path.realpath(db))
    names = {real, Path(str(real) + "-wal"), Path(str(real) + "-shm"), Path(str(real) + "-journal")}
    return names | {Path(str(db) + suffix) for suffix in ("", "-wal", "-shm", "-journal")}


def _refusal(work: Path, settings: Settings) -> str | None:
    """Why cleaning ``work`` could delete files that are not ours (the work dir holds user data), if it could."""
    if work == Path(work.anchor):
        return f"work_dir {work} is a filesystem root"
    guarded = [Path.home(), paths.config_dir(), *map(Path, settings.library.roots)]
    if settings.paths.backup_dir:
        guarded.append(Path(settings.paths.backup_dir))
    for other in guarded:
        real = Path(os.path.realpath(other))
        if _inside(real, work):
            return (
                f"work_dir {work} contains {real}; temp files were not cleaned "
                "(set [paths] work_dir to a folder of its own)"
            )
    return None


def _walk(work: Path, skip_dirs: set[str], skip_files: set[str]) -> Iterator[_Entry]:
    """Every entry under ``work`` (top-down), never following a symlink, never entering ``skip_dirs``."""
    join = os.path.join
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(work, topdown=True, follow_symlinks=False):
        rel = tuple(os.path.relpath(dirpath, work).split(os.sep)) if dirpath != str(work) else ()
        if skip_dirs:
            dirnames[:] = [name for name in dirnames if join(dirpath, name) not in skip_dirs]
        for name in filenames + dirnames:
            if skip_files and join(dirpath, name) in skip_files:
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            # Only regular files count toward the bytes freed (a symlink's size is its target's name).
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            yield _Entry((*rel, name), is_dir, st.st_dev, st.st_ino, size, st.st_mtime_ns)


def _open_parent(work_fd: int, parts: tuple[str, ...]) -> int:
    """Open the directory holding ``parts`` relative to the work dir, refusing any symlink on the way."""
    fd = os.dup(work_fd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_ours(entry: os.DirEntry[str]) -> bool:
    """Whether a top-level work_dir entry has a name and kind amphigory creates (a real folder, a regular file)."""
    try:
        if _JOB_DIR.fullmatch(entry.name):
            return entry.is_dir(follow_symlinks=False)
        return entry.name.startswith(_TEMP_PREFIX) and entry.is_file(follow_symlinks=False)
    except OSError:
        return False


def _top_level(work: Path, protected: set[Path]) -> tuple[set[str], tuple[str, ...]]:
    """The top-level entries of ``work`` that are ours to clean, and the unknown ones (not ours, not protected)."""
    ours: set[str] = set()
    unknown: list[str] = []
    try:
        with os.scandir(work) as it:
            entries = list(it)
    except OSError:
        return ours, ()
    for entry in entries:
        path = work / entry.name
        # The database's files, the lock dir, or a folder holding one of them: amphigory's, but never cleaned.
        if any(p == path or path in p.parents for p in protected):
            continue
        if _is_ours(entry):
            ours.add(entry.name)
            continue
        try:
            folder = entry.is_dir(follow_symlinks=False)
        except OSError:
            folder = False
        unknown.append(entry.name + ("/" if folder else ""))
    return ours, tuple(sorted(unknown))


def _owned_roots(jobs: Iterable[Job], work: Path, configured: Path) -> dict[str, set[tuple[str, ...]]]:
    """Paths under ``work`` that live jobs own (their temp path, their ``job-<id>…`` folders), by first part."""
    owned: dict[str, set[tuple[str, ...]]] = {}
    prefixes = {str(work) + os.sep, os.path.abspath(configured) + os.sep}
    ids = set()
    for job in jobs:
        ids.add(job.id)
        if not job.temp_path:
            continue
        normal = os.path.normpath(job.temp_path)
        prefix = next((p for p in prefixes if normal.startswith(p)), None)
        if prefix is None:
            # Named through some other symlinked path: resolve it (rare, so the cost of realpath is fine here).
            normal, prefix = os.path.realpath(job.temp_path), str(work) + os.sep
            if not normal.startswith(prefix):
                continue
        parts = tuple(normal[len(prefix) :].split(os.sep))
        owned.setdefault(parts[0], set()).add(parts)
    try:
        names = os.listdir(work)
    except OSError:
        names = []
    for name in names:
        # The pipeline's per-job folders: job-<id>, job-<id>-<anything>, job-<id>.<anything>.
        if name.startswith("job-"):
            digits = name[4:].split("-", 1)[0].split(".", 1)[0]
            if digits.isdigit() and int(digits) in ids:
                owned.setdefault(name, set()).add((name,))
    return owned


def _is_owned(parts: tuple[str, ...], owned: dict[str, set[tuple[str, ...]]]) -> bool:
    """Whether ``parts`` is an owned path, inside one, or an ancestor of one (whose folder must stay)."""
    for root in owned.get(parts[0], ()):
        n = min(len(root), len(parts))
        if parts[:n] == root[:n]:
            return True
    return False


def _merge(a: dict[str, set[tuple[str, ...]]], b: dict[str, set[tuple[str, ...]]]) -> dict[str, set[tuple[str, ...]]]:
    for key, roots in b.items():
        a.setdefault(key, set()).update(roots)
    return a


def clean_work_dir(
    services: Services,
    live_jobs: Callable[[], list[Job]],
    *,
    work_dir: Path | None = None,
    extra_protected: Iterable[Path] = (),
) -> TempCleanup:
    """Remove amphigory's leftovers in work_dir that no live job owns; returns the counts (or why it refused).

    Only what amphigory creates there is considered (``job-<id>`` folders and ``.amphigory-*`` files at the top);
    every other entry is left alone, unopened, and returned in ``unknown``. ``live_jobs`` is called twice, after
    the walk and again right before deleting, so a job claimed while we looked is protected too; every file is
    re-checked (same inode, size, mtime) right before it is unlinked, through directory descriptors opened without
    following symlinks: nothing outside work_dir can be reached.
    """
    configured = work_dir or services.settings.work_dir
    if not configured.exists():
        return TempCleanup()
    work = Path(os.path.realpath(configured))
    refused = _refusal(work, services.settings)
    if refused:
        log.warning("recovery: %s", refused)
        return TempCleanup(refused=refused)
    protected = {Path(os.path.realpath(p)) for p in (*_protected_files(services), *extra_protected)}
    protected |= _protected_files(services)
    lock_dir = Path(os.path.realpath(paths.lock_dir()))
    skip_dirs = {str(lock_dir)} | {str(p) for p in protected if p.is_dir()}
    protected_ids: set[tuple[int, int]] = set()
    for p in protected:
        try:
            st = os.stat(p)
        except OSError:
            continue
        protected_ids.add((st.st_dev, st.st_ino))
    skip_files = {str(p) for p in protected}
    ours, unknown = _top_level(work, protected | {lock_dir})
    # Foreign folders are never entered (they may be large, and nothing in them is ours).
    skip_dirs |= {os.path.join(work, name.rstrip("/")) for name in unknown if name.endswith("/")}
    entries = [
        e for e in _walk(work, skip_dirs, skip_files) if e.parts[0] in ours and (e.dev, e.ino) not in protected_ids
    ]
    if not entries:
        return TempCleanup(unknown=unknown)
    owned = _merge(_owned_roots(live_jobs(), work, configured), _owned_roots(live_jobs(), work, configured))
    # A replace intent still here after the replace recovery belongs to a live worker (or could not be read): it is
    # the only record of a half-done swap in the library, so it stays until a recovery can settle it, and the
    # encode's facts beside it stay too (that recovery completes the job with them).
    settling = {e.parts[:-1] for e in entries if e.parts[-1] == INTENT_NAME and not e.is_dir}
    for entry in entries:
        if entry.parts[:-1] in settling and entry.parts[-1] in (INTENT_NAME, ENCODE_FACTS_NAME) and not entry.is_dir:
            owned.setdefault(entry.parts[0], set()).add(entry.parts)
    files = removed_bytes = dirs = 0
    work_fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        # Files first, then folders deepest first (an emptied folder goes too; a non-empty one stays).
        ordered = [e for e in entries if not e.is_dir] + sorted(
            (e for e in entries if e.is_dir), key=lambda e: len(e.parts), reverse=True
        )
        for entry in ordered:
            if _is_owned(entry.parts, owned):
                continue
            try:
                parent = _open_parent(work_fd, entry.parts)
            except OSError:
                continue
            try:
                name = entry.parts[-1]
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
                    continue
                if entry.is_dir:
                    os.rmdir(name, dir_fd=parent)
                    dirs += 1
                else:
                    size_now = st.st_size if stat.S_ISREG(st.st_mode) else 0
                    if (size_now, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                        continue  # something is writing it right now: not a leftover
                    os.unlink(name, dir_fd=parent)
                    files += 1
                    removed_bytes += entry.size
            except OSError:
                continue
            finally:
                os.close(parent)
    finally:
        os.close(work_fd)
    if files or dirs:
        log.info("recovery: removed %d temp files (%s) and %d folders from %s", files, _size(removed_bytes), dirs, work)
    return TempCleanup(files=files, bytes=removed_bytes, dirs=dirs, unknown=unknown)


# ---------------------------------------------------------------------------------------------------- the passes
def _live_jobs(services: Services, liveness: Liveness) -> list[Job]:
    """Running jobs whose owner is alive (their files are theirs)."""
    return [j for j in services.store.jobs.running() if j.worker_id and liveness.is_alive(j.worker_id)]


def _default_replace_recovery(services: Services, liveness: Liveness) -> tuple[int, int]:
    """Settle the upload stage's intent records of dead workers (``pipeline.recover_replaces``)."""
    try:
        module = importlib.import_module("amphigory_tui.services.pipeline")
    except ImportError:
        return 0, 0
    settle = getattr(module, "recover_replaces", None)
    if settle is None:
        return 0, 0
    outcomes = settle(services.store, services.settings, liveness)
    for outcome in outcomes:
        log.info("recovery: %s", outcome.message)
        services.store.log.append(outcome.message, event_type="recovery", job_id=outcome.job_id)
    finished = sum(1 for o in outcomes if o.finished)
    return finished, len(outcomes) - finished


def recover(
    services: Services,
    *,
    lock: ProcessLock | None = None,
    lock_dir: Path | None = None,
    replaces: ReplaceRecovery | None = None,
    clean_temp: bool = True,
) -> RecoveryReport:
    """The startup recovery, in order (see the module docstring); logged and summarised as one notice."""
    store = services.store
    liveness = build_liveness(services, lock=lock, lock_dir=lock_dir)
    orphans = store.jobs.find_orphaned(liveness)
    killed = kill_leftovers(orphans, liveness, grace_s=min(services.settings.workers.kill_grace_s, _LEFTOVER_GRACE_S))
    # Replaces before orphans: a replace that turns out finished completes its job (as its dead owner would
    # have), which must happen while the job is still running under that owner's id.
    finished, rolled_back = (replaces or _default_replace_recovery)(services, liveness)
    orphans = store.jobs.find_orphaned(liveness) if finished else orphans
    canceled_before = sum(1 for j in orphans if j.control_request in ("cancel", "kill"))
    requeued, failed = store.jobs.recover_orphaned(liveness)
    resumed = store.jobs.recover_paused()
    temp = TempCleanup()
    if clean_temp:
        temp = clean_work_dir(
            services, lambda: _live_jobs(services, build_liveness(services, lock=lock, lock_dir=lock_dir))
        )
    unknown_note = _unknown_note(services, temp.unknown) if clean_temp and temp.refused is None else None
    locks_removed = cleanup_stale_locks(lock_dir, keep=lock if lock is not None else current_lock())
    pruned = _prune_dead_workers(services, liveness)
    # A checkpoint whose scan still holds the scan lock (another process's, or on PostgreSQL another machine's)
    # belongs to that running scan: nothing was interrupted, and a scan started to resume it would only be refused.
    scan = any(store.state.get(key) for key in SCAN_CHECKPOINT_KEYS) and not scan_running(store, lock_dir)
    report = RecoveryReport(
        orphaned_requeued=requeued,
        orphaned_failed=failed,
        orphaned_canceled=min(canceled_before, max(len(orphans) - requeued - failed, 0)),
        paused_resumed=resumed,
        killed_processes=killed,
        temp_files_removed=temp.files,
        temp_bytes_removed=temp.bytes,
        replaces_finished=finished,
        replaces_rolled_back=rolled_back,
        stale_locks_removed=locks_removed,
        workers_pruned=pruned,
        scan_interrupted=scan,
        notes=tuple(n for n in (temp.refused, unknown_note) if n),
    )
    notice = summarize(report)
    # The caller shows the notice (worker log, TUI notification, `amphigory recover`); keep our own line quiet.
    log.debug("recovery: %s", notice)
    if report.changed or report.notes:
        store.log.append(notice, level="warning" if report.notes else "info", event_type="recovery")
    return report


def _unknown_note(services: Services, unknown: tuple[str, ...]) -> str | None:
    """The notice naming work_dir entries that are not amphigory's, once: only when they differ from the last one.

    Remembered in system_state, so a work_dir shared with other files does not repeat the same warning at every
    start (and a second recovery stays a no-op); a change in what is there is reported again.
    """
    state = services.store.state
    seen = state.get(_UNKNOWN_STATE_KEY)
    if not unknown:
        if seen is not None:
            state.delete(_UNKNOWN_STATE_KEY)
        return None
    current = json.dumps(list(unknown), ensure_ascii=False)
    if current == seen:
        return None
    state.set(_UNKNOWN_STATE_KEY, current)
    shown = [_printable(name) for name in unknown[:_UNKNOWN_LISTED]]
    more = len(unknown) - len(shown)
    listing = ", ".join(shown) + (f" and {more} more" if more else "")
    return f"left {_plural(len(unknown), 'unknown entry', 'unknown entries')} in work_dir alone: {listing}"


def _printable(name: str) -> str:
    """A file name fit for a one-line notice (a newline or control character in it shown as ``?``)."""
    return name if name.isprintable() else "".join(c if c.isprintable() else "?" for c in name)


def periodic_check(
    services: Services, *, lock: ProcessLock | None = None, lock_dir: Path | None = None
) -> RecoveryReport:
    """One periodic pass: orphans of dead owners, then stalled jobs of other (dead or frozen) owners."""
    store = services.store
    own = lock if lock is not None else current_lock()
    liveness = build_liveness(services, lock=own, lock_dir=lock_dir)
    orphans = store.jobs.find_orphaned(liveness)
    grace = min(services.settings.workers.kill_grace_s, _LEFTOVER_GRACE_S)
    killed = kill_leftovers(orphans, liveness, grace_s=grace) if orphans else 0
    finished, rolled_back = _default_replace_recovery(services, liveness) if orphans else (0, 0)
    requeued, failed = store.jobs.recover_orphaned(liveness) if orphans else (0, 0)
    now = services.clock.now()
    timeout = float(services.settings.workers.stall_timeout_s)
    # Our own jobs are watched by our own pool (progress-based, it holds the child): never fail them from here.
    stalled = [
        j
        for j in store.jobs.detect_stalled(now, timeout)
        if j.worker_id and not (own is not None and own.owns(j.worker_id)) and not _frozen_in_upload(j, liveness)
    ]
    stalled_requeued = stalled_failed = 0
    taken: list[Job] = []
    for job in stalled:
        assert job.worker_id is not None
        age = now - job.last_heartbeat if job.last_heartbeat is not None else timeout
        reason = (
            f"stalled: no heartbeat for {age:.0f} s from worker {job.worker_id} "
            f"({'frozen' if liveness.is_alive(job.worker_id) else 'dead'})"
        )
        # Take the job first (a compare-and-set that also needs the owner still silent), and only then end its
        # encoder: killing first would destroy the encode of an owner that wakes up and heartbeats in between.
        try:
            result = store.jobs.fail(job.id, job.worker_id, reason, stalled_before=now - timeout)
        except StaleLease:
            continue  # its owner woke up (or someone else took it) first: nothing to do, its tool is its own
        taken.append(job)
        log.warning("job %d: %s", job.id, reason)
        store.log.append(f"Job {job.id} {reason}", level="warning", event_type="stalled", job_id=job.id)
        if result.status.value == "queued":
            stalled_requeued += 1
        else:
            stalled_failed += 1
    # Only the jobs taken above, all in one grace period (the recorded pid and start ticks are those at detection).
    killed += kill_leftovers(taken, liveness, grace_s=grace) if taken else 0
    pruned = _prune_dead_workers(services, liveness)
    report = RecoveryReport(
        orphaned_requeued=requeued,
        orphaned_failed=failed,
        stalled_requeued=stalled_requeued,
        stalled_failed=stalled_failed,
        killed_processes=killed,
        replaces_finished=finished,
        replaces_rolled_back=rolled_back,
        workers_pruned=pruned,
    )
    if report.changed:
        notice = summarize(report)
        log.info("periodic check: %s", notice)
        store.log.append(notice, event_type="recovery")
    return report


def _frozen_in_upload(job: Job, liveness: Liveness) -> bool:
    """A live but silent owner in the upload stage may be in the middle of the library swap: never take that job.

    Requeueing it would let a second attempt race the first one's swap once the owner runs again. It is left to
    its owner, or, once the owner is dead, to the replace recovery that settles its intent record exactly.
    """
    if job.stage is not Stage.UPLOAD or not job.worker_id or not liveness.is_alive(job.worker_id):
        return False
    log.warning("job %d: its owner %s is silent in the upload stage; left to it", job.id, job.worker_id)
    return True


def _prune_dead_workers(services: Services, liveness: Liveness) -> int:
    """Delete the worker rows of dead processes (the Workers tab shows the living)."""
    dead = [w.id for w in services.store.workers.list_workers() if not liveness.is_alive(w.id)]
    return services.store.workers.prune(dead) if dead else 0


async def run_periodic_checks(
    services: Services,
    *,
    interval_s: float | None = None,
    lock: ProcessLock | None = None,
    on_report: Callable[[RecoveryReport], None] | None = None,
) -> None:
    """Run ``periodic_check`` every ``interval_s`` (default: workers.stall_check_interval_s) until cancelled.

    Start it in the pool's (or the TUI's) task group; the blocking pass runs in a worker thread. A failing pass is
    logged and the next one still runs: a database hiccup must not end the checks for good.
    """
    interval = interval_s if interval_s is not None else _check_interval(services.settings)
    while True:
        await anyio.sleep(interval)
        try:
            report = await anyio.to_thread.run_sync(lambda: periodic_check(services, lock=lock))
        except Exception as exc:
            log.warning("periodic check failed: %s", exc)
            continue
        if on_report is not None and report.changed:
            on_report(report)


def _check_interval(settings: Settings) -> float:
    return float(settings.workers.stall_check_interval_s)


# ---------------------------------------------------------------------------------------------------- notice
def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def summarize(report: RecoveryReport) -> str:
    """One line: "recovered 3 orphaned jobs, resumed 2 paused, removed 5 temp files (1.2 GB)"."""
    parts: list[str] = []
    orphans = report.orphaned_requeued + report.orphaned_failed + report.orphaned_canceled
    if orphans:
        detail = []
        if report.orphaned_failed:
            detail.append(f"{report.orphaned_failed} failed after max retries")
        if report.orphaned_canceled:
            detail.append(f"{report.orphaned_canceled} canceled")
        parts.append(f"recovered {_plural(orphans, 'orphaned job')}" + (f" ({', '.join(detail)})" if detail else ""))
    stalled = report.stalled_requeued + report.stalled_failed
    if stalled:
        extra = f" ({report.stalled_failed} failed after max retries)" if report.stalled_failed else ""
        parts.append(f"requeued {_plural(stalled, 'stalled job')}{extra}")
    if report.killed_processes:
        parts.append(f"ended {_plural(report.killed_processes, 'leftover tool process', 'leftover tool processes')}")
    if report.replaces_finished:
        parts.append(f"finished {_plural(report.replaces_finished, 'interrupted replace')}")
    if report.replaces_rolled_back:
        parts.append(f"rolled back {_plural(report.replaces_rolled_back, 'interrupted replace')}")
    if report.paused_resumed:
        parts.append(f"resumed {report.paused_resumed} paused")
    if report.temp_files_removed:
        parts.append(f"removed {_plural(report.temp_files_removed, 'temp file')} ({_size(report.temp_bytes_removed)})")
    if report.scan_interrupted:
        parts.append("an interrupted scan resumes from its checkpoint with `amphigory scan`")
    parts.extend(report.notes)
    return ", ".join(parts) if parts else "nothing to recover"


def merge(a: RecoveryReport, b: RecoveryReport) -> RecoveryReport:
    """The sum of two reports (a startup pass plus later periodic ones, for a status line)."""
    return replace(
        a,
        **{
            f: getattr(a, f) + getattr(b, f)
            for f in (
                "orphaned_requeued",
                "orphaned_failed",
                "orphaned_canceled",
                "paused_resumed",
                "stalled_requeued",
                "stalled_failed",
                "killed_processes",
                "temp_files_removed",
                "temp_bytes_removed",
                "replaces_finished",
                "replaces_rolled_back",
                "stale_locks_removed",
                "workers_pruned",
            )
        },
        scan_interrupted=a.scan_interrupted or b.scan_interrupted,
        notes=a.notes + b.notes,
    )
