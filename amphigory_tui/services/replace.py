"""Putting a validated encode into the library without ever leaving the library path empty or partial.

The protocol (each step durable before the next; TOOLS.md §4 and reliability.md §1.10 list how peers lost files):

1. An **intent record** (JSON, fsynced, in the job's work dir) names every path about to be touched: phase
   ``copying``.
2. The new file goes to a temp name **in the destination folder** (``.amphigory-<job>.<ext>.part``): a rename when
   the work dir is on the same filesystem, else a copy that is fsynced, dropped from the page cache and read back to
   compare its SHA-256. Its size is checked either way; a 0-byte "copy" never counts as equal.
3. The intent records the new file's inode: phase ``placing``. The source must still have the size and mtime it had
   when the job claimed it, else nothing is replaced.
4. Same name (``Movie.mkv`` → ``Movie.mkv``): the original is first kept (hard link ``Movie.mkv.original``, or a
   verified copy) or backed up (verified copy into ``backup_dir``), then ``os.replace`` swaps the new file in: the
   path holds the complete original until the instant it holds the complete new file. Different name
   (``Movie.mp4`` → ``Movie.mkv``): the new name is created without clobbering anything (``link``), then the original
   is kept, backed up or deleted: both names present beats neither.
5. Directories are fsynced; the intent is removed once the job is recorded as completed.

``finish_or_rollback`` reads an intent left by a killed process and decides from the files themselves: if the new
file is at the target path (same inode) the replace is finished (the original policy completed); otherwise every
temp file is removed and the original stays where it was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from amphigory_tui.domain.errors import JobError
from amphigory_tui.services.faults import pause_point

__all__ = [
    "INTENT_NAME",
    "CopyStopped",
    "Intent",
    "Placed",
    "ReplaceOutcome",
    "SourceChanged",
    "backup_path_for",
    "check_destination",
    "copy_file",
    "find_intents",
    "finish_or_rollback",
    "fsync_dir",
    "kept_original_path",
    "part_path_for",
    "place",
    "read_intent",
    "target_path_for",
]

INTENT_NAME = "replace-intent.json"
"""File name of the intent record inside a job's lease directory (``work_dir/job-<id>/<lease>/``)."""

_CHUNK = 4 * 1024 * 1024
_INTENT_VERSION = 1

Policy = Literal["keep", "backup", "delete"]
ProgressFn = Callable[[int, int], None]
"""``on_bytes(done, total)`` during a copy."""


class CopyStopped(Exception):
    """A copy was asked to stop (pause, cancel, shutdown) and removed what it had written."""


class SourceChanged(JobError):
    """The original changed while the job ran: nothing is replaced."""


@dataclass
class Intent:
    """What a replace is about to do, written before it does it (the crash-recovery record)."""

    job_id: int
    worker_id: str
    source: str
    target: str
    part: str
    policy: Policy
    original_dest: str | None
    source_size: int
    source_mtime_ns: int
    phase: str = "copying"
    new_size: int | None = None
    new_sha256: str | None = None
    new_ino: int | None = None
    new_dev: int | None = None
    version: int = _INTENT_VERSION
    path: str = field(default="", compare=False)
    """Where this intent is stored (not serialised)."""

    def to_json(self) -> str:
        """The record as JSON."""
        data = asdict(self)
        data.pop("path")
        return json.dumps(data, ensure_ascii=False, indent=1)


@dataclass(frozen=True)
class Placed:
    """The new file is in the library."""

    target: str
    size: int
    original_moved_to: str | None
    copied: bool
    """Whether the new file crossed filesystems (copied and hash-checked) instead of being renamed."""


@dataclass(frozen=True)
class ReplaceOutcome:
    """What ``finish_or_rollback`` did with an intent."""

    job_id: int
    worker_id: str
    finished: bool
    """True: the new file is in place (and the original policy was completed); False: rolled back."""
    target: str
    source: str
    new_size: int | None
    message: str


# --------------------------------------------------------------------------------------------------- names


def target_path_for(source: str, container: str) -> str:
    """The library path of the new file: the source's name with the container's extension.

    ``Movie.mp4`` → ``Movie.mkv``; ``Movie.MKV`` stays ``Movie.MKV`` (same extension, other case).
    """
    src = Path(source)
    wanted = "." + container.lower()
    if src.suffix.lower() == wanted:
        return str(src)
    return str(src.with_suffix(wanted)) if src.suffix else str(src) + wanted


def part_path_for(target: str, job_id: int, attempt: int = 0) -> str:
    """The temp name of the new file beside its target (hidden, named by job and attempt, never a user-chosen
    string): a stale attempt woken late and the attempt that took its job over never share one."""
    t = Path(target)
    tag = f"{job_id}-a{attempt}" if attempt else f"{job_id}"
    return str(t.parent / f".amphigory-{tag}{t.suffix.lower()}.part")


def _unique(path: Path) -> Path:
    """``path`` if free, else ``path.2``, ``path.3``… (an earlier kept original is never overwritten)."""
    if not os.path.lexists(path):
        return path
    n = 2
    while os.path.lexists(f"{path}.{n}"):
        n += 1
    return Path(f"{path}.{n}")


def kept_original_path(source: str) -> str:
    """Where ``keep`` puts the original: ``<name>.original`` (or ``.original.2`` when that is taken)."""
    return str(_unique(Path(source + ".original")))


def backup_path_for(source: str, backup_dir: str) -> str:
    """Where ``backup`` puts the original: its absolute path mirrored under ``backup_dir`` (no name collisions)."""
    rel = os.path.abspath(source).lstrip(os.sep)
    return str(_unique(Path(backup_dir) / rel))


# --------------------------------------------------------------------------------------------------- primitives


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries (a rename, a new name) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: str, *, drop_cache: bool = False) -> str:
    """The file's SHA-256; ``drop_cache`` first evicts its (fsynced) pages so the disk itself is read back."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        if drop_cache and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def copy_file(
    src: str,
    dst: str,
    *,
    on_bytes: ProgressFn | None = None,
    stop: threading.Event | None = None,
    want_hash: bool = False,
    exclusive: bool = True,
) -> tuple[int, str | None]:
    """Copy ``src`` to a new file ``dst`` in chunks and fsync it; returns ``(bytes, sha256 of src or None)``.

    Stops (removing ``dst``) with ``CopyStopped`` when ``stop`` is set; removes ``dst`` on any error too, so a
    failed copy never leaves a partial file behind. ``exclusive`` refuses to overwrite an existing ``dst``.
    """
    digest = hashlib.sha256() if want_hash else None
    total = os.stat(src).st_size
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    done = 0
    in_fd = os.open(src, os.O_RDONLY)
    try:
        out_fd = os.open(dst, flags, 0o644)
    except BaseException:
        os.close(in_fd)
        raise
    try:
        while True:
            if stop is not None and stop.is_set():
                raise CopyStopped(f"copy of {src} stopped")
            chunk = os.read(in_fd, _CHUNK)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                written = os.write(out_fd, view)
                view = view[written:]
            if digest is not None:
                digest.update(chunk)
            done += len(chunk)
            if on_bytes is not None:
                on_bytes(done, total)
        os.fsync(out_fd)
    except BaseException:
        os.close(out_fd)
        os.close(in_fd)
        with contextlib.suppress(OSError):
            os.unlink(dst)
        raise
    os.close(out_fd)
    os.close(in_fd)
    return done, digest.hexdigest() if digest is not None else None


def _same_device(a: str, b_dir: str) -> bool:
    return os.stat(a).st_dev == os.stat(b_dir).st_dev


def _link_no_clobber(src: str, dst: str) -> None:
    """Give ``src``'s file the name ``dst`` without ever replacing an existing ``dst`` (link; rename fallback)."""
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        raise
    except OSError as exc:
        # Some filesystems (FAT, some FUSE/SMB mounts) have no hard links: check, then rename.
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "file exists", dst)
    os.rename(src, dst)


def _remove(path: str | None) -> bool:
    """Unlink a file we created; True when something was removed."""
    if not path:
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _source_intact(intent: Intent) -> bool:
    """Whether the original is still where it was, with the size and mtime the job claimed it with."""
    try:
        st = os.stat(intent.source)
    except OSError:
        return False
    return st.st_size == intent.source_size and st.st_mtime_ns == intent.source_mtime_ns


def _is_new_file(path: str, intent: Intent) -> bool:
    """Whether ``path`` is the new file this intent placed (same inode as the temp file it recorded)."""
    if intent.new_ino is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_ino == intent.new_ino and st.st_dev == intent.new_dev


# --------------------------------------------------------------------------------------------------- intents


def write_intent(intent: Intent) -> None:
    """Write (or update) the intent record durably: temp file, fsync, rename, fsync the folder."""
    path = Path(intent.path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(intent.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_intent(path: str | os.PathLike[str]) -> Intent:
    """Load an intent record; ``ValueError`` when it is not one."""
    raw = Path(path).read_text(encoding="utf-8")
    data: Any = json.loads(raw)
    if not isinstance(data, dict) or data.get("version") != _INTENT_VERSION:
        raise ValueError(f"{path}: not an amphigory replace intent")
    intent = Intent(**data)
    intent.path = str(path)
    return intent


def find_intents(work_dir: str | os.PathLike[str]) -> list[Path]:
    """Every intent record under ``work_dir`` (``job-<id>/<lease>/replace-intent.json``)."""
    root = Path(work_dir)
    if not root.is_dir():
        return []
    return sorted(root.glob(f"job-*/*/{INTENT_NAME}"))


# --------------------------------------------------------------------------------------------------- checks


def check_destination(source: str, target: str, job_id: int) -> None:
    """Before any work: the destination folder is writable and the target name would not clobber a stranger.

    Raises ``JobError`` with one sentence naming the folder or file. Root ignores permission bits, so the check
    creates and removes a real probe file instead of trusting ``os.access``.
    """
    folder = os.path.dirname(target) or "."
    if not os.path.isdir(folder):
        raise JobError(f"the output folder {folder} does not exist")
    probe = os.path.join(folder, f".amphigory-{job_id}.probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise JobError(f"the output folder {folder} is not writable ({exc.strerror or exc})") from None
    if os.path.abspath(target) != os.path.abspath(source) and os.path.lexists(target):
        raise JobError(
            f"{target} already exists and is not this job's source; refusing to overwrite it", permanent=True
        )


def _check_source(intent: Intent) -> None:
    if not _source_intact(intent):
        raise SourceChanged(
            f"the source {intent.source} changed during the job (size or modification time differ from when the "
            "job started); nothing was replaced"
        )


# --------------------------------------------------------------------------------------------------- place


def place(
    encoded: str,
    intent: Intent,
    *,
    stop: threading.Event | None = None,
    on_bytes: ProgressFn | None = None,
    confirm: Callable[[], None] | None = None,
) -> Placed:
    """Put ``encoded`` at ``intent.target`` and apply the original policy, crash-safely (see the module doc).

    Synchronous (run it in a thread). ``stop`` is honoured only while the new file is being copied; once the
    swap starts it runs to the end. On an error before the swap, every temp file is removed and the library is
    untouched. An error during the swap is settled at once the way recovery would settle it: finished when the
    new file is already in place, else rolled back; if even that fails the intent record stays for the next
    start's recovery. Raises ``SourceChanged``, ``CopyStopped``, ``JobError`` (disk full…) or ``OSError``.

    ``confirm`` is called once the new file is ready beside the target, just before the swap: it raises (e.g.
    ``StaleLease``) when this worker no longer owns the job — a worker frozen past the stall timeout, whose job
    another machine took over, must not touch the library — and then nothing is replaced.
    """
    intent.phase = "copying"
    write_intent(intent)
    folder = os.path.dirname(intent.target) or "."
    expected = os.stat(encoded).st_size
    if expected == 0:
        _remove(intent.path)
        raise JobError(f"the encoded file for {intent.source} is empty (0 bytes); nothing was replaced")
    copied = not _same_device(encoded, folder)
    try:
        _check_source(intent)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(intent.part)  # a leftover of an earlier attempt of this job (same hidden name)
        if copied:
            _size, digest = copy_file(encoded, intent.part, on_bytes=on_bytes, stop=stop, want_hash=True)
            if _sha256(intent.part, drop_cache=True) != digest:
                raise JobError(f"the copy of the new file in {folder} does not read back identical; nothing replaced")
            intent.new_sha256 = digest
        else:
            os.rename(encoded, intent.part)
            _fsync_file(intent.part)
        st = os.stat(intent.part)
        if st.st_size != expected:
            raise JobError(
                f"the new file in {folder} has {st.st_size} bytes instead of {expected}; nothing was replaced"
            )
        fsync_dir(folder)
        intent.new_size, intent.new_ino, intent.new_dev = st.st_size, st.st_ino, st.st_dev
        _check_source(intent)
        if confirm is not None:
            confirm()
        intent.phase = "placing"
        write_intent(intent)
        pause_point("upload.placing", intent.job_id)  # [lifecycle] test-only kill point (services/faults.py)
    except BaseException as exc:
        _remove(intent.part)
        _remove(intent.path)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise JobError(f"disk full while copying the new file into {folder}") from None
        raise
    try:
        moved = _swap(intent)
    except Exception as exc:
        try:
            outcome = finish_or_rollback(intent.path)
        except Exception as again:
            raise JobError(
                f"the replace of {intent.target} was interrupted ({exc}) and could not be settled ({again}); "
                f"the original is at {intent.source} or {intent.original_dest}, and recovery will retry",
                permanent=True,
            ) from None
        if not outcome.finished:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise JobError(f"disk full while keeping the original of {intent.source}") from None
            raise JobError(f"the replace of {intent.target} failed ({exc}); the original is untouched") from None
        intent.phase = "placed"
        return Placed(
            target=intent.target, size=intent.new_size or 0, original_moved_to=moved_to(intent), copied=copied
        )
    intent.phase = "placed"
    write_intent(intent)
    pause_point("upload.placed", intent.job_id)  # [lifecycle] test-only kill point (services/faults.py)
    return Placed(target=intent.target, size=intent.new_size or 0, original_moved_to=moved, copied=copied)


def moved_to(intent: Intent) -> str | None:
    """Where the original went under the intent's policy (None when deleted)."""
    return intent.original_dest if intent.policy != "delete" else None


def _copy_verified(src: str, dst: str) -> None:
    """Copy ``src`` to a new ``dst`` via ``dst.part``: fsync, size and (across filesystems) hash checked."""
    folder = os.path.dirname(dst) or "."
    tmp = dst + ".part"
    _remove(tmp)
    cross = not _same_device(src, folder)
    size, digest = copy_file(src, tmp, want_hash=cross)
    try:
        if size != os.stat(src).st_size or os.stat(tmp).st_size != size:
            raise JobError(f"the copy of {src} in {folder} is incomplete; nothing was replaced")
        if cross and _sha256(tmp, drop_cache=True) != digest:
            raise JobError(f"the copy of {src} in {folder} does not read back identical; nothing was replaced")
        _link_no_clobber(tmp, dst)
    finally:
        _remove(tmp)


def _second_name(source: str, dest: str) -> None:
    """Make ``dest`` a second name of ``source`` (hard link) or a verified copy of it; ``source`` stays."""
    folder = os.path.dirname(dest) or "."
    os.makedirs(folder, exist_ok=True)
    try:
        os.link(source, dest)
    except FileExistsError:
        raise
    except OSError as exc:
        # Other filesystem (a backup disk), or one without hard links: copy and verify instead.
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        _copy_verified(source, dest)
    fsync_dir(folder)


def _swap(intent: Intent) -> str | None:
    """Step 4 of the protocol; returns where the original went (None when deleted)."""
    folder = os.path.dirname(intent.target) or "."
    same_name = os.path.abspath(intent.target) == os.path.abspath(intent.source)
    if same_name:
        if intent.policy != "delete":
            assert intent.original_dest is not None
            _second_name(intent.source, intent.original_dest)
        _check_source(intent)
        pause_point("upload.swap", intent.job_id)  # [lifecycle] test-only kill point (services/faults.py)
        os.replace(intent.part, intent.target)
        fsync_dir(folder)
        return moved_to(intent)
    _link_no_clobber(intent.part, intent.target)
    pause_point("upload.swap", intent.job_id)  # [lifecycle] test-only kill point (services/faults.py)
    _remove(intent.part)
    fsync_dir(folder)
    _apply_policy_after(intent)
    return moved_to(intent)


def _apply_policy_after(intent: Intent) -> None:
    """With the new name in place, move the original out per policy (idempotent: recovery may run it again)."""
    if not os.path.lexists(intent.source):
        return
    if intent.policy != "delete":
        assert intent.original_dest is not None
        dest = intent.original_dest
        if not (os.path.lexists(dest) and os.path.samefile(dest, intent.source)):
            if os.path.lexists(dest):
                # A complete copy (copies appear under their final name only when verified) of this original.
                if os.stat(dest).st_size != os.stat(intent.source).st_size:
                    raise JobError(f"{dest} exists and is not a copy of {intent.source}; the original stays")
            else:
                _second_name(intent.source, dest)
    os.unlink(intent.source)
    fsync_dir(os.path.dirname(intent.source) or ".")


# --------------------------------------------------------------------------------------------------- recovery


def finish_or_rollback(intent_path: str | os.PathLike[str], *, keep_intent: bool = False) -> ReplaceOutcome:
    """Settle a replace a killed process left half-done; idempotent, and it never deletes an original.

    If the new file is at the target (its recorded inode), the replace is *finished*: a stray temp name is
    removed and, for a renamed target, the original is kept/backed up/deleted per the recorded policy. Otherwise
    it is *rolled back*: the temp file and any half-made original copy are removed and the original stays. The
    intent record is deleted at the end (unless ``keep_intent``). The caller must make sure the intent's worker
    is dead (recovery checks ``intent.worker_id`` first) and then record the job as completed when ``finished``.
    """
    intent = read_intent(intent_path)
    same_name = os.path.abspath(intent.target) == os.path.abspath(intent.source)
    in_place = intent.phase in ("placing", "placed") and _is_new_file(intent.target, intent)
    if in_place:
        if os.path.lexists(intent.part) and _is_new_file(intent.part, intent):
            os.unlink(intent.part)
        note = "the new file was already in place"
        if not same_name:
            if os.path.lexists(intent.source) and not _source_intact(intent):
                note += f"; {intent.source} changed since, so it was left alone"
            else:
                _apply_policy_after(intent)
                note += f"; original policy {intent.policy!r} completed"
        with contextlib.suppress(OSError):
            fsync_dir(os.path.dirname(intent.target) or ".")
        outcome = ReplaceOutcome(
            job_id=intent.job_id,
            worker_id=intent.worker_id,
            finished=True,
            target=intent.target,
            source=intent.source,
            new_size=intent.new_size,
            message=f"job {intent.job_id}: replace of {intent.target} finished ({note})",
        )
    else:
        removed = _remove(intent.part)
        if intent.original_dest:
            _remove(intent.original_dest + ".part")
            # Only a copy of an original that is still intact at its own path is ours to remove.
            if (
                os.path.lexists(intent.original_dest)
                and _source_intact(intent)
                and _is_regular(intent.original_dest)
                and os.stat(intent.original_dest).st_size == intent.source_size
            ):
                os.unlink(intent.original_dest)
        outcome = ReplaceOutcome(
            job_id=intent.job_id,
            worker_id=intent.worker_id,
            finished=False,
            target=intent.target,
            source=intent.source,
            new_size=None,
            message=f"job {intent.job_id}: replace of {intent.target} rolled back"
            + (" (temp file removed)" if removed else "")
            + "; the original is untouched",
        )
    if not keep_intent:
        _remove(str(intent_path))
    return outcome


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
