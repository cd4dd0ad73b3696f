"""Liveness by flock: a live process's lock is held, a killed one's can be taken; other hosts go by heartbeat."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from amphigory_tui.services.locks import (
    Liveness,
    LockHolder,
    NamedLock,
    ProcessLock,
    cleanup_stale_locks,
    hold_process_lock,
    lock_is_free,
    owner_key,
    release_process_lock,
)
from tests.lifecycle.conftest import Holder

HOST = socket.gethostname()


def test_worker_ids_name_their_process_lock(lock_dir: Path) -> None:
    """Every claim loop's id ``host:pid:token.N`` maps back to the process key that names the lock file."""
    with ProcessLock.acquire(lock_dir) as lock:
        first, second = lock.new_worker_id(), lock.new_worker_id()
        assert first != second
        assert owner_key(first) == owner_key(second) == lock.key
        assert lock.owns(first) and not lock.owns(f"{HOST}:{os.getpid()}:other.1")
        assert lock.key.startswith(f"{HOST}:{os.getpid()}:")
        assert lock.path.parent == lock_dir and lock.path.exists()
        assert lock_is_free(lock.path) is False
    assert not lock.path.exists(), "a clean release removes the file"


def test_a_killed_process_is_dead_and_a_live_one_alive(lock_dir: Path, holders: list[Holder]) -> None:
    """kill -9 drops the flock at once: the same worker id flips from alive to dead with no timeout."""
    live, doomed = Holder(lock_dir), Holder(lock_dir)
    holders += [live, doomed]
    # Heartbeats are ancient: on this host they must not matter while the lock file exists.
    liveness = Liveness(now=10_000.0, stall_timeout_s=60, heartbeats={}, lock_dir=lock_dir)
    assert liveness(live.worker_id(1)) and liveness(doomed.worker_id(2))
    doomed.kill()
    fresh = Liveness(now=10_000.0, stall_timeout_s=60, lock_dir=lock_dir)
    assert fresh(live.worker_id(3)) is True
    assert fresh(doomed.worker_id(2)) is False


def test_a_tool_left_running_does_not_keep_its_dead_parent_alive(lock_dir: Path, holders: list[Holder]) -> None:
    """The lock fd is close-on-exec: a child tool that outlives its killed parent does not hold the lock."""
    holder = Holder(lock_dir, child=True)
    holders.append(holder)
    holder.kill()
    assert holder.child_pid is not None and Path(f"/proc/{holder.child_pid}").exists()
    assert Liveness(now=0.0, stall_timeout_s=60, lock_dir=lock_dir)(holder.worker_id()) is False


def test_no_lock_file_means_dead_only_when_the_pid_is_gone(lock_dir: Path) -> None:
    """Without a lock file (another data dir, or a cleaned one) a running pid falls back to its heartbeat."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_pid = f"{HOST}:{gone.pid}:aaaaaaaaaaaa.1"
    running_pid = f"{HOST}:{os.getpid()}:bbbbbbbbbbbb.1"
    beats = {dead_pid: 100.0, running_pid: 100.0}
    fresh = Liveness(now=130.0, stall_timeout_s=60, heartbeats=beats, lock_dir=lock_dir)
    assert fresh(dead_pid) is False
    assert fresh(running_pid) is True
    stale = Liveness(now=161.0, stall_timeout_s=60, heartbeats=beats, lock_dir=lock_dir)
    assert stale(running_pid) is False


def test_other_hosts_go_by_heartbeat(lock_dir: Path) -> None:
    """A worker elsewhere is alive iff it showed a sign of life within stall_timeout; unknown means dead."""
    beats = {"farbox:42:cccccccccccc.1": 1000.0}
    liveness = Liveness(now=1060.0, stall_timeout_s=60, heartbeats=beats, lock_dir=lock_dir, host=HOST)
    assert liveness("farbox:42:cccccccccccc.1") is True
    assert liveness("farbox:43:dddddddddddd.1") is False
    assert liveness("not-a-worker-id") is False
    late = Liveness(now=1060.5, stall_timeout_s=60, heartbeats=beats, lock_dir=lock_dir, host=HOST)
    assert late("farbox:42:cccccccccccc.1") is False
    assert not late.is_local("farbox:42:cccccccccccc.1") and late.is_local(f"{HOST}:1:x.1")


def test_own_process_is_alive_without_touching_the_file(lock_dir: Path) -> None:
    """The checker's own workers are alive even if its lock file was deleted by hand."""
    with ProcessLock.acquire(lock_dir) as lock:
        worker = lock.new_worker_id()
        lock.path.unlink()
        assert Liveness(now=0.0, stall_timeout_s=60, lock_dir=lock_dir, own=lock)(worker) is True


def test_stale_lock_files_are_removed_and_live_ones_kept(lock_dir: Path, holders: list[Holder]) -> None:
    """Cleanup deletes exactly the files whose lock can be taken; it never unlinks a held lock."""
    live, dead = Holder(lock_dir), Holder(lock_dir)
    holders += [live, dead]
    dead.kill()
    with ProcessLock.acquire(lock_dir) as mine:
        (lock_dir / "notes.txt").write_text("not a lock file")
        assert cleanup_stale_locks(lock_dir, keep=mine) == 1
        token = live.key.rsplit(":", 1)[1]
        names = {p.name for p in lock_dir.iterdir()}
        assert len(names) == 3
        assert {mine.path.name, "notes.txt"} < names and any(token in name for name in names)
        assert cleanup_stale_locks(lock_dir, keep=mine) == 0
    assert Liveness(now=0.0, stall_timeout_s=60, lock_dir=lock_dir)(live.worker_id()) is True


def test_hold_process_lock_is_one_lock_per_process(lock_dir: Path) -> None:
    """The TUI and its pool share the process lock; releasing removes the file."""
    first = hold_process_lock(lock_dir)
    try:
        assert hold_process_lock(lock_dir) is first
        assert lock_is_free(first.path) is False
    finally:
        release_process_lock()
    assert lock_is_free(first.path) is None


def test_is_worker_alive_one_off(lock_dir: Path, holders: list[Holder]) -> None:
    """The one-off helper answers like ``Liveness``: lock on this host, ``last_seen`` elsewhere."""
    from amphigory_tui.services.locks import is_worker_alive

    live = Holder(lock_dir)
    holders.append(live)
    assert is_worker_alive(live.worker_id(), lock_dir=lock_dir) is True
    live.kill()
    assert is_worker_alive(live.worker_id(), lock_dir=lock_dir) is False
    assert is_worker_alive("farbox:1:abc.1", last_seen=100.0, now=150.0, stall_timeout_s=60) is True
    assert is_worker_alive("farbox:1:abc.1", last_seen=100.0, now=161.0, stall_timeout_s=60) is False


def test_a_named_lock_excludes_other_holders_in_this_process_too_and_says_who_holds_it(lock_dir: Path) -> None:
    """Two acquisitions in one process exclude each other (a flock is per open file); the holder's pid and what it
    does are in the file, one line each even when ``doing`` has a newline; release deletes the file."""
    first = NamedLock.try_acquire("scan-test", lock_dir, doing="scanning /lib/a\npid 1")
    assert first is not None and first.path == NamedLock.path_for("scan-test", lock_dir)
    assert NamedLock.try_acquire("scan-test", lock_dir) is None
    holder = NamedLock.holder("scan-test", lock_dir)
    assert holder == LockHolder(os.getpid(), "scanning /lib/a pid 1")
    assert holder.describe() == "this process: scanning /lib/a pid 1"
    assert LockHolder(1, "x").describe() == "pid 1: x"
    first.release()
    assert not first.path.exists() and NamedLock.holder("scan-test", lock_dir) is None
    again = NamedLock.try_acquire("scan-test", lock_dir)
    assert again is not None
    again.release()
