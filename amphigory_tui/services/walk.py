"""Walking library roots: a deterministic, sorted, symlink-safe ``os.scandir`` walk of media files.

Every directory is listed once and its entries are sorted by name; the walk descends into a directory where its name
sorts. So files come out in the order of their path *components*, which is the plain string order of the path with
``/`` replaced by ``\\0`` (``sort_key``): the scanner's checkpoints and its merge with the recorded paths rely on it.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter

from amphigory_tui.domain.errors import UsageError


def sort_key(path: str) -> str:
    """The walk's sort key: component order is string order once ``/`` sorts below every other character."""
    return path.replace("/", "\0")


def _utf8_ok(name: str) -> bool:
    """Whether a name decoded from the file system is valid UTF-8 (else it holds surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_by_name = attrgetter("name")


def normalize_roots(roots: Iterable[str]) -> tuple[str, ...]:
    """Absolute, normalised, de-duplicated roots, in order; a root inside another one is dropped."""
    out: list[str] = []
    for raw in roots:
        if not os.path.isabs(raw):
            raise UsageError(f"library root {raw!r} is a relative path; give an absolute path")
        root = os.path.normpath(raw)
        if root not in out:
            out.append(root)
    nested = {r for r in out for other in out if r != other and r.startswith(other.rstrip("/") + "/")}
    return tuple(r for r in out if r not in nested)


def check_roots(roots: Iterable[str]) -> tuple[str, ...]:
    """``normalize_roots``, and each root must be an existing directory (``UsageError`` naming the first bad one)."""
    checked = normalize_roots(roots)
    if not checked:
        raise UsageError("no library roots: pass ROOT arguments or set [library] roots in the config file")
    for root in checked:
        if not os.path.exists(root):
            raise UsageError(f"library root {root} does not exist")
        if not os.path.isdir(root):
            raise UsageError(f"library root {root} is not a directory")
    return checked


def extension_set(extensions: Iterable[str]) -> frozenset[str]:
    """Lower-case extensions without the dot (``.MKV`` and ``mkv`` both become ``mkv``)."""
    return frozenset(e.lower().lstrip(".") for e in extensions if e.strip("."))


def walk_media(
    root: str,
    extensions: frozenset[str],
    *,
    follow_symlinks: bool = False,
    after: str | None = None,
    stat_files: bool = True,
    on_dir: Callable[[str], None] | None = None,
    on_error: Callable[[str, str], None] | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[tuple[str, int, int]]:
    """Yield ``(path, size, mtime_ns)`` of media files under ``root`` in walk order (module docstring).

    ``after``: skip everything up to and including this path (whole directories before it are not even listed).
    Symbolic links are skipped unless ``follow_symlinks``; followed ones never lead into a loop (directories are
    remembered by device and inode). Unreadable directories and unreadable names go to ``on_error(path, message)``.
    ``stat_files=False`` yields ``-1`` sizes without a ``stat`` call (for counting).
    """
    visited: set[tuple[int, int]] = set()
    if follow_symlinks:
        try:
            st = os.stat(root)
            visited.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    after_key = sort_key(after) if after is not None else None

    def listing(folder: str) -> list[os.DirEntry[str]]:
        if on_dir is not None:
            on_dir(folder)
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=_by_name)
        except OSError as exc:
            if on_error is not None:
                on_error(folder, f"cannot read folder {folder}: {exc.strerror or exc}")
            return []

    is_regular = stat.S_ISREG
    stack: list[Iterator[os.DirEntry[str]]] = [iter(listing(root))]
    while stack:
        if cancel is not None and cancel.is_set():
            return
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        path = entry.path
        if after_key is not None:
            key = sort_key(path)
            if key <= after_key:
                if not after_key.startswith(key + "\0"):
                    continue  # entirely before the checkpoint
            else:
                after_key = None  # past the checkpoint: everything from here on is new (walk order is monotonic)
        name = entry.name
        try:
            # Without following, a link to a folder is not a folder, and a link to a file fails S_ISREG below
            # (lstat): one d_type check and one stat per file, as cheap as a bare walk gets.
            is_dir = entry.is_dir(follow_symlinks=follow_symlinks)
        except OSError:
            continue
        if is_dir:
            if not name.isascii() and not _utf8_ok(name):
                if on_error is not None:
                    on_error(path, f"folder name is not valid UTF-8, skipped: {path!r}")
                continue
            if follow_symlinks:
                try:
                    st = entry.stat()
                except OSError as exc:
                    if on_error is not None:
                        on_error(path, f"cannot read folder {path}: {exc.strerror or exc}")
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident in visited:
                    continue  # a loop, or a folder already walked under another name
                visited.add(ident)
            stack.append(iter(listing(path)))
            continue
        dot = name.rfind(".")
        if dot < 0 or name[dot + 1 :].lower() not in extensions:
            continue
        if not name.isascii() and not _utf8_ok(name):
            if on_error is not None:
                on_error(path, f"file name is not valid UTF-8, skipped: {path!r}")
            continue
        if not stat_files:
            if follow_symlinks or not entry.is_symlink():
                yield path, -1, -1
            continue
        try:
            st = entry.stat(follow_symlinks=follow_symlinks)
        except FileNotFoundError:
            continue  # deleted between the listing and now (or a dangling link)
        except OSError as exc:
            if on_error is not None:
                on_error(path, f"cannot stat {path}: {exc.strerror or exc}")
            continue
        if not is_regular(st.st_mode):
            continue  # a FIFO or device named .mkv is not a media file
        yield path, st.st_size, st.st_mtime_ns


def is_gone(path: str) -> bool:
    """Whether ``path`` provably no longer exists (other errors, like EACCES, do not count as gone)."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False
