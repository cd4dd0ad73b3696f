"""Who is alive, exactly: every amphigory process holds an exclusive flock on its own lock file while it lives.

The kernel drops a flock the instant its holder dies (``kill -9``, OOM, power cut of the process), so on this host
"the owner of job 7 is dead" is a fact, not a guess: its lock can be taken. Lock files are named after a *process
key* ``host:pid:token``; the worker ids of the process's claim loops are ``host:pid:token.N`` (``new_worker_id``),
so every worker id names the lock of the process that owns it, and a recycled pid can never look alive (the token
differs). Workers on other hosts cannot be asked through a lock: they are dead iff their last heartbeat
(``workers.last_seen`` or a job's ``last_heartbeat``) is older than the stall timeout.

The lock file descriptor is close-on-exec, so HandBrakeCLI and other children never inherit it: a tool left running
by a killed amphigory does not keep its parent looking alive.

``NamedLock`` is the same flock under a shared name instead of a process key: whoever holds ``scan-<database>``
is the one scan of that database, whichever process or thread it is.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import itertools
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from amphigory_tui import paths
from amphigory_tui.domain.errors import AmphigoryError
from amphigory_tui.domain.workers import parse_worker_id

__all__ = [
    "LOCK_SUFFIX",
    "Liveness",
    "LivenessCheck",
    "LockError",
    "LockHolder",
    "NamedLock",
    "ProcessLock",
    "cleanup_stale_locks",
    "current_lock",
    "hold_process_lock",
    "is_worker_alive",
    "lock_is_free",
    "owner_key",
    "release_process_lock",
]

LOCK_SUFFIX = ".lock"
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:")


class LockError(AmphigoryError):
    """The lock directory or a lock file cannot be created or locked."""


def owner_key(worker_id: str) -> str:
    """The process key ``host:pid:token`` of a worker id ``host:pid:token[.N]`` (the name of its lock file)."""
    host_pid, sep, tail = worker_id.rpartition(":")
    if not sep:
        return worker_id
    return f"{host_pid}:{tail.split('.', 1)[0]}"


def _file_name(key: str) -> str:
    """A lock file name for a process key: safe characters kept, anything else %-escaped (never a '/')."""
    return "".join(c if c in _SAFE else f"%{ord(c):02x}" for c in key) + LOCK_SUFFIX


def _this_host() -> str:
    return socket.gethostname()


class ProcessLock:
    """This process's exclusive lock: held from ``acquire`` until ``release`` or the process's death."""

    def __init__(self, key: str, path: Path, fd: int) -> None:
        self.key = key
        self.path = path
        self._fd: int | None = fd
        self.pid = os.getpid()
        self._counter = itertools.count(1)

    @classmethod
    def acquire(cls, lock_dir: Path | None = None, *, host: str | None = None) -> ProcessLock:
        """Create and flock a fresh lock file ``<lock_dir>/<host:pid:token>.lock`` for this process."""
        directory = lock_dir or paths.lock_dir()
        _make_dir(directory)
        key = f"{host or _this_host()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        path = directory / _file_name(key)
        fd = _open_and_lock(path)
        lock = cls(key, path, fd)
        lock._write_owner()
        return lock

    @property
    def held(self) -> bool:
        """Whether this object still holds its lock."""
        return self._fd is not None

    def new_worker_id(self) -> str:
        """A fresh worker id ``host:pid:token.N`` that names this lock (use it for every claim loop)."""
        return f"{self.key}.{next(self._counter)}"

    def owns(self, worker_id: str) -> bool:
        """Whether ``worker_id`` belongs to this process."""
        return owner_key(worker_id) == self.key

    def release(self) -> None:
        """Drop the lock and delete its file (a clean exit leaves nothing behind)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlink_and_close(self.path, fd)

    def _write_owner(self) -> None:
        """Write who holds the lock, for a human looking at the directory (liveness never reads it)."""
        assert self._fd is not None
        _write_owner(self._fd, f"pid {os.getpid()}\nkey {self.key}\nargv {' '.join(sys.argv)!r}\n")

    def __enter__(self) -> ProcessLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ProcessLock({self.key!r}, held={self.held})"


def _make_dir(directory: Path) -> None:
    """Create the lock directory (private to the user) if needed."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise LockError(f"{directory}: cannot create the lock directory ({exc.strerror})") from None


def _write_owner(fd: int, text: str) -> None:
    """Replace a held lock file's contents with ``text`` (best effort: the lock is what counts, not the note)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8", "replace"), 0)
    except OSError:
        pass


def _unlink_and_close(path: Path, fd: int) -> None:
    """Delete a held lock file, then drop its lock (a clean release leaves nothing behind)."""
    # Unlink first, while still holding the lock: nobody can take a lock on a name that no longer exists.
    with contextlib.suppress(OSError):
        path.unlink()
    os.close(fd)


def _open_and_lock(path: Path) -> int:
    """Open (creating) and flock ``path``; retried when a stale-lock cleaner unlinked the name under us."""
    fd = _try_open_and_lock(path)
    if fd is None:
        raise LockError(f"{path}: the lock is held by another process")
    return fd


def _try_open_and_lock(path: Path) -> int | None:
    """``_open_and_lock``, but None instead of an error when somebody else holds the lock."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(100):
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise LockError(f"{path}: cannot create the lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise LockError(f"{path}: cannot lock the file ({exc.strerror})") from None
        # A cleaner may have unlinked the file between our open and our flock (it took the lock on the fresh,
        # still-unlocked file); then we hold a lock on an inode nobody can find. Start again on a new file.
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            os.close(fd)
            continue
        mine = os.fstat(fd)
        if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)
    raise LockError(f"{path}: the lock file keeps disappearing")


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a ``NamedLock``, as the holder wrote it into the lock file."""

    pid: int | None
    doing: str = ""

    def describe(self) -> str:
        """``pid 1234: scanning /lib`` (``this process: …`` when it is our own)."""
        if self.pid is None:
            who = "another process"
        else:
            who = "this process" if self.pid == os.getpid() else f"pid {self.pid}"
        return f"{who}: {self.doing}" if self.doing else who


class NamedLock:
    """An exclusive flock on ``<lock_dir>/<name>.lock`` that every would-be holder contends for.

    Each acquisition opens the file anew, and a flock belongs to the open file, so two holders in one process
    exclude each other just as two processes do. The holder writes its pid and what it is doing into the file (the
    next one's refusal names it: ``holder``); ``release`` deletes the file, and the kernel drops the lock of a
    holder that dies (``cleanup_stale_locks`` then removes the file it left).
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @staticmethod
    def path_for(name: str, lock_dir: Path | None = None) -> Path:
        """The lock file of ``name``."""
        return (lock_dir or paths.lock_dir()) / _file_name(name)

    @classmethod
    def try_acquire(cls, name: str, lock_dir: Path | None = None, *, doing: str = "") -> NamedLock | None:
        """Take the lock now, or None when somebody holds it."""
        path = cls.path_for(name, lock_dir)
        _make_dir(path.parent)
        fd = _try_open_and_lock(path)
        if fd is None:
            return None
        # One line per field: a path with a newline in it must not forge a "pid" line.
        note = " ".join(doing.splitlines())
        _write_owner(fd, f"pid {os.getpid()}\ndoing {note}\nargv {' '.join(sys.argv)!r}\n")
        return cls(path, fd)

    @classmethod
    def wait(
        cls,
        name: str,
        lock_dir: Path | None = None,
        *,
        doing: str = "",
        cancel: threading.Event | None = None,
        poll_s: float = 0.2,
    ) -> NamedLock | None:
        """Take the lock once its holder lets go; None if ``cancel`` is set first.

        Polled, not a blocking flock: a thread blocked in the kernel could not be told to stop, and whoever waits
        for that thread at shutdown would wait as long as the holder holds on (a full scan: hours).
        """
        while True:
            lock = cls.try_acquire(name, lock_dir, doing=doing)
            if lock is not None:
                return lock
            if cancel is None:
                time.sleep(poll_s)
            elif cancel.wait(poll_s):
                return None

    @classmethod
    def holder(cls, name: str, lock_dir: Path | None = None) -> LockHolder | None:
        """Who holds ``name``, as written in its file; None when there is no file or nothing readable in it."""
        try:
            with open(cls.path_for(name, lock_dir), encoding="utf-8", errors="replace") as f:
                text = f.read(4096)
        except OSError:
            return None
        fields = dict(line.partition(" ")[::2] for line in text.splitlines())
        pid = fields.get("pid", "")
        if not pid.isdigit():
            return None  # the holder has not written it yet, or this is not a NamedLock's file
        return LockHolder(int(pid), fields.get("doing", ""))

    @property
    def held(self) -> bool:
        """Whether this object still holds its lock."""
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock and delete its file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlink_and_close(self.path, fd)

    def __enter__(self) -> NamedLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"NamedLock({self.path.name!r}, held={self.held})"


def lock_is_free(path: Path) -> bool | None:
    """Whether nobody holds the lock file ``path`` (True), someone does (False), or it does not exist (None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        # Unreadable or a symlink: we cannot prove anything, so it counts as held (never steal on doubt).
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        # Closing drops the lock we may just have taken.
        os.close(fd)
    return True


def cleanup_stale_locks(lock_dir: Path | None = None, *, keep: ProcessLock | None = None) -> int:
    """Delete the lock files of dead processes (their lock can be taken); returns how many."""
    directory = lock_dir or paths.lock_dir()
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not entry.name.endswith(LOCK_SUFFIX) or not entry.is_file(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if keep is not None and path == keep.path:
            continue
        if _remove_if_free(path):
            removed += 1
    return removed


def _remove_if_free(path: Path) -> bool:
    """Unlink ``path`` while holding its lock, so a live holder's file is never removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
            return False
        path.unlink()
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Liveness:
    """``is_worker_alive`` for one recovery pass: locks on this host, heartbeats elsewhere.

    Build it once per pass (``heartbeats`` is a snapshot: worker id -> newest ``last_seen``/``last_heartbeat``)
    and pass it to ``JobStore.find_orphaned``/``recover_orphaned``. Answers are cached per process key.
    """

    now: float
    stall_timeout_s: float
    heartbeats: Mapping[str, float] = field(default_factory=dict)
    lock_dir: Path = field(default_factory=paths.lock_dir)
    host: str = field(default_factory=_this_host)
    own: ProcessLock | None = None
    _cache: dict[str, bool] = field(default_factory=dict, repr=False)

    def __call__(self, worker_id: str) -> bool:
        """Whether the worker ``worker_id`` (and so the process that owns it) is alive."""
        return self.is_alive(worker_id)

    def is_alive(self, worker_id: str) -> bool:
        """Same host: alive iff its process's lock is held; other hosts: iff its heartbeat is fresh."""
        parsed = parse_worker_id(worker_id)
        if parsed is None or parsed[0] != self.host:
            return self.heartbeat_fresh(worker_id)
        key = owner_key(worker_id)
        if self.own is not None and self.own.held and key == self.own.key:
            return True
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        free = lock_is_free(self.lock_dir / _file_name(key))
        # No lock file: a process of another user or data dir on this host, or one whose file a cleaner already
        # removed. Dead for sure only if its pid is gone; otherwise let the heartbeat decide.
        alive = (_pid_exists(parsed[1]) and self.heartbeat_fresh(worker_id)) if free is None else not free
        self._cache[key] = alive
        return alive

    def is_local(self, worker_id: str | None) -> bool:
        """Whether a worker id names a process on this host (whose children we may signal)."""
        if not worker_id:
            return False
        parsed = parse_worker_id(worker_id)
        return parsed is not None and parsed[0] == self.host

    def heartbeat_fresh(self, worker_id: str) -> bool:
        """Whether the worker showed a sign of life within the stall timeout."""
        seen = self.heartbeats.get(worker_id)
        return seen is not None and self.now - seen <= self.stall_timeout_s


def is_worker_alive(
    worker_id: str,
    *,
    last_seen: float | None = None,
    now: float | None = None,
    stall_timeout_s: float = 300.0,
    lock_dir: Path | None = None,
) -> bool:
    """One-off liveness of a worker: this host by its process lock, other hosts by ``last_seen`` (use ``Liveness``
    for many workers at once: it caches per process)."""
    return Liveness(
        now=time.time() if now is None else now,
        stall_timeout_s=stall_timeout_s,
        heartbeats={worker_id: last_seen} if last_seen is not None else {},
        lock_dir=lock_dir or paths.lock_dir(),
        own=current_lock(),
    ).is_alive(worker_id)


_CURRENT: ProcessLock | None = None


def hold_process_lock(lock_dir: Path | None = None) -> ProcessLock:
    """This process's lock, acquired on first use (the TUI and its pool share one)."""
    global _CURRENT
    # A forked child inherits the object but not the right to the lock: it takes its own.
    if _CURRENT is None or not _CURRENT.held or _CURRENT.pid != os.getpid():
        _CURRENT = ProcessLock.acquire(lock_dir)
        # A clean exit removes the file; a crash leaves it unlocked, and the next recovery removes it.
        atexit.register(_release_at_exit, _CURRENT)
    return _CURRENT


def _release_at_exit(lock: ProcessLock) -> None:
    if lock.pid == os.getpid():
        lock.release()


def current_lock() -> ProcessLock | None:
    """The lock ``hold_process_lock`` took, if any."""
    return _CURRENT if _CURRENT is not None and _CURRENT.held else None


def release_process_lock() -> None:
    """Release this process's lock (at a clean exit)."""
    global _CURRENT
    if _CURRENT is not None:
        _CURRENT.release()
        _CURRENT = None


LivenessCheck = Callable[[str], bool]
"""``is_worker_alive(worker_id) -> bool``."""
