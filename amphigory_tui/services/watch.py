"""Watch mode: new, changed and deleted media files under the library roots are picked up while amphigory runs.

``LibraryWatcher.run()`` is an anyio coroutine, so ``amphigory scan --watch``, ``amphigory worker`` and the TUI run
the same code. watchfiles (inotify) says *something* changed; a file is only probed once its size and mtime have
stayed the same for ``scanner.watch_hold_s`` (a download or a copy in progress keeps growing, and a half-copied file
would be probed as truncated). Deleted files and folders are marked missing at once and their queued jobs canceled.
A folder moved in whole produces one event for the folder only, so added folders are walked. The database work runs
in a worker thread through ``Scanner.scan_paths``, which waits while another scan of the database runs (the Scan
tab's, another process's); stopping the watcher stops that wait too.

``watch_library`` is the service the long-running commands start in their task group: it honours
``[scanner] watch``, runs the catch-up scan (skipped, with a line saying so, while another scan runs), then
watches, and reports problems as log lines instead of raising (a missing NAS mount must not take the worker down
with it).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus
from watchfiles import Change, awatch

from amphigory_tui.config import DEFAULT_EXTENSIONS, Settings
from amphigory_tui.domain.errors import AmphigoryError, ScanBusy
from amphigory_tui.domain.events import LogRecord
from amphigory_tui.services.scanner import FileOutcome, ProgressCallback, Scanner, ScanSummary
from amphigory_tui.services.walk import check_roots, extension_set, walk_media
from amphigory_tui.store import Store

T = TypeVar("T")


@dataclass(slots=True)
class _Pending:
    """A file seen changing, waiting for its size to settle."""

    size: int
    mtime_ns: int
    since: float


def describe(outcome: FileOutcome) -> LogRecord:
    """A log line for one watch-mode outcome."""
    queued = " (queued)" if outcome.queued else ""
    level = "warning" if outcome.reason.startswith("probe error") else "info"
    return LogRecord(level=level, message=f"watch: {outcome.outcome} {outcome.path}: {outcome.reason}{queued}")


class LibraryWatcher:
    """Keeps ``media_files`` up to date from file-system events until stopped (module docstring)."""

    def __init__(
        self,
        scanner: Scanner,
        roots: Sequence[str],
        *,
        hold_s: float = 5.0,
        follow_symlinks: bool = False,
        extensions: Sequence[str] = DEFAULT_EXTENSIONS,
        auto_queue: bool = False,
        on_outcome: Callable[[FileOutcome], None] | None = None,
        on_event: Callable[[LogRecord], None] | None = None,
        on_progress: ProgressCallback | None = None,
        tick_s: float = 0.5,
        catch_up: bool = False,
    ) -> None:
        self._scanner = scanner
        self.roots = check_roots(roots)
        self.hold_s = hold_s
        self._follow = follow_symlinks
        self._extensions = extension_set(extensions)
        self.auto_queue = auto_queue
        self._on_outcome = on_outcome
        self._on_event = on_event
        self._on_progress = on_progress
        self._tick_ms = max(50, int(tick_s * 1000))
        self._catch_up = catch_up
        self._pending: dict[str, _Pending] = {}
        self._gone: set[str] = set()

    @classmethod
    def from_settings(
        cls,
        scanner: Scanner,
        settings: Settings,
        roots: Sequence[str] | None = None,
        *,
        on_outcome: Callable[[FileOutcome], None] | None = None,
        on_event: Callable[[LogRecord], None] | None = None,
        on_progress: ProgressCallback | None = None,
        catch_up: bool = False,
    ) -> LibraryWatcher:
        """A watcher of ``roots`` (default ``[library] roots``) configured by ``[scanner]`` and ``[rules]``."""
        sc = settings.scanner
        return cls(
            scanner,
            roots if roots is not None else settings.library.roots,
            hold_s=sc.watch_hold_s,
            follow_symlinks=sc.follow_symlinks,
            extensions=settings.rules.extensions,
            auto_queue=sc.auto_queue,
            on_outcome=on_outcome,
            on_event=on_event,
            on_progress=on_progress,
            catch_up=catch_up,
        )

    @property
    def pending(self) -> tuple[str, ...]:
        """Paths waiting for their size to settle."""
        return tuple(self._pending)

    async def run(
        self, stop: anyio.Event | None = None, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Watch until ``stop`` is set; ``task_status.started()`` once events flow and any catch-up scan is done."""
        stop = stop or anyio.Event()
        started = False
        async for changes in awatch(
            *self.roots,
            watch_filter=None,
            stop_event=stop,
            debounce=max(self._tick_ms, 200),
            step=50,
            rust_timeout=self._tick_ms,
            yield_on_timeout=True,
            recursive=True,
            ignore_permission_denied=True,
        ):
            if not started:
                # The first yield (a timeout tick or an event) proves the watches are in place; a catch-up scan
                # now covers whatever changed before that. "Started" means both, so a caller's next change is
                # reported as an event of its own.
                started = True
                if self._catch_up:
                    await self._run_catch_up(stop)
                task_status.started()
            for change, path in changes:
                self._note(change, path)
            await self._settle(stop)
        if not started:
            task_status.started()

    # ------------------------------------------------------------------ internals

    async def _run_catch_up(self, stop: anyio.Event) -> None:
        """An incremental scan of the roots (cheap when nothing changed), reported as one line if it found any.

        ``stop`` or a cancellation stops it within a second (it leaves a checkpoint the next one resumes from).
        """
        scanner = self._scanner

        def scan(cancel: threading.Event) -> ScanSummary:
            return scanner.scan(self.roots, cancel=cancel, on_progress=self._on_progress)

        try:
            summary = await _in_thread(scan, stop)
        except ScanBusy as exc:
            # Another scan (the Scan tab's, another process's) is walking the library right now; watching starts
            # anyway, and the files it hands over wait for that scan to finish.
            if self._on_event is not None:
                self._on_event(LogRecord(level="warning", message=f"watch: catch-up scan skipped: {exc}"))
            return
        if summary.canceled:
            return
        if self._on_event is not None and (summary.added or summary.updated or summary.missing):
            self._on_event(
                LogRecord(
                    level="info",
                    message=f"watch: catch-up scan: {summary.added} added, {summary.updated} updated, "
                    f"{summary.missing} missing",
                )
            )

    def _is_media(self, path: str) -> bool:
        name = os.path.basename(path)
        dot = name.rfind(".")
        return dot >= 0 and name[dot + 1 :].lower() in self._extensions

    def _note(self, change: Change, path: str) -> None:
        """Record one event: a deletion now, a new or changed file once it stops growing."""
        if change == Change.deleted:
            self._pending.pop(path, None)
            self._gone.add(path)
            return
        try:
            st = os.stat(path) if self._follow else os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._pending.pop(path, None)
            self._gone.add(path)
            return
        except OSError:
            return
        if stat.S_ISDIR(st.st_mode):
            # A folder moved in whole: its files produce no events of their own.
            for fpath, size, mtime_ns in walk_media(path, self._extensions, follow_symlinks=self._follow):
                self._hold(fpath, size, mtime_ns)
        elif stat.S_ISREG(st.st_mode) and self._is_media(path):
            self._hold(path, st.st_size, st.st_mtime_ns)

    def _hold(self, path: str, size: int, mtime_ns: int) -> None:
        """(Re)start the hold timer of a file unless it is already waiting with the same size and mtime."""
        self._gone.discard(path)
        current = self._pending.get(path)
        if current is None or (current.size, current.mtime_ns) != (size, mtime_ns):
            self._pending[path] = _Pending(size, mtime_ns, anyio.current_time())

    async def _settle(self, stop: anyio.Event) -> None:
        """Hand files whose size held still, and deleted paths, to the scanner (``stop`` ends a wait for it)."""
        now = anyio.current_time()
        ready: list[str] = []
        for path, item in list(self._pending.items()):
            try:
                st = os.stat(path) if self._follow else os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                del self._pending[path]
                self._gone.add(path)
                continue
            except OSError:
                continue
            if (st.st_size, st.st_mtime_ns) != (item.size, item.mtime_ns):
                self._pending[path] = _Pending(st.st_size, st.st_mtime_ns, now)
            elif now - item.since >= self.hold_s:
                del self._pending[path]
                ready.append(path)
        gone = _outermost(self._gone)
        self._gone.clear()
        if not ready and not gone:
            return
        batch = sorted(ready) + gone
        # Through _in_thread: scan_paths may wait out another scan, and stop or a cancellation must end that wait.
        outcomes = await _in_thread(lambda cancel: self._apply(batch, cancel), stop)
        for outcome in outcomes:
            if outcome.outcome in ("unchanged", "ignored"):
                continue
            if self._on_outcome is not None:
                self._on_outcome(outcome)
            if self._on_event is not None:
                self._on_event(describe(outcome))

    def _apply(self, paths: list[str], cancel: threading.Event) -> list[FileOutcome]:
        """Runs in a worker thread: the scanner's database and probe work."""
        return self._scanner.scan_paths(paths, roots=self.roots, auto_queue=self.auto_queue, cancel=cancel)


def _outermost(paths: set[str]) -> list[str]:
    """Deleted paths without the ones inside another deleted path (``rm -rf`` reports every file)."""
    out: list[str] = []
    for path in sorted(paths, key=lambda p: p.replace("/", "\0")):
        if out and path.startswith(out[-1].rstrip("/") + "/"):
            continue
        out.append(path)
    return out


async def _in_thread(fn: Callable[[threading.Event], T], stop: anyio.Event) -> T:
    """Run ``fn(cancel)`` in a worker thread; ``stop`` or a cancellation of the caller sets ``cancel``.

    A thread cannot be interrupted, so the call still waits for ``fn`` to return (the scanner stops within a
    second of its cancel): nothing is left running against a store or a pool that the caller closes next.
    """
    cancel = threading.Event()

    async def relay() -> None:
        try:
            await stop.wait()
        finally:
            cancel.set()

    results: list[T] = []
    failed: list[Exception] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay)
        try:
            results.append(await anyio.to_thread.run_sync(fn, cancel))
        except Exception as exc:
            # Raised outside the task group: inside, anyio would wrap it in an ExceptionGroup that the callers'
            # ``except ScanBusy`` / ``except AmphigoryError`` never see.
            failed.append(exc)
        finally:
            tg.cancel_scope.cancel()
    if failed:
        raise failed[0]
    return results[0]


class _Started:
    """Passes ``started()`` on once, so a failure after start-up does not report a second start."""

    def __init__(self, inner: TaskStatus[None]) -> None:
        self._inner = inner
        self.done = False
        self.on_started: Callable[[], None] | None = None

    def started(self, value: None = None) -> None:
        """Report the start to the caller's task group (the first time only)."""
        if not self.done:
            self.done = True
            if self.on_started is not None:
                self.on_started()
            self._inner.started(value)


async def watch_library(
    store: Store,
    settings: Settings,
    *,
    enabled: bool | None = None,
    roots: Sequence[str] | None = None,
    stop: anyio.Event | None = None,
    on_event: Callable[[LogRecord], None] | None = None,
    on_outcome: Callable[[FileOutcome], None] | None = None,
    on_progress: ProgressCallback | None = None,
    scanner: Scanner | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Keep the library up to date while a long-running command runs: a catch-up scan, then watch mode.

    Start it in the command's task group (``tg.start_soon(watch_library, store, settings, ...)``); it runs until
    ``stop`` is set or the group is cancelled, and stops within about a second either way. ``enabled`` defaults
    to ``[scanner] watch``; ``roots`` to ``[library] roots``. When off, or with no roots, or when a root is not
    a directory, it says so through ``on_event`` (if that matters) and returns. ``task_status.started()`` comes
    once the watches are in place and the catch-up scan is done. ``on_event``, ``on_outcome`` and
    ``on_progress`` are called from the event loop's thread and, for scan progress, from a worker thread: an
    ``EventSink.emit`` fits all three. A scanner passed in is used and left open; else one is made and closed.
    """
    on = settings.scanner.watch if enabled is None else enabled
    status = _Started(task_status)

    def say(level: str, message: str) -> None:
        if on_event is not None:
            on_event(LogRecord(level=level, message=message))

    chosen = tuple(roots if roots is not None else settings.library.roots)
    if not on:
        status.started()
        return
    if not chosen:
        say("warning", "watch: no library roots configured ([library] roots); not watching")
        status.started()
        return
    owned = scanner is None
    active = scanner or Scanner(store, settings, on_notice=lambda message: say("warning", message))
    try:
        watcher = LibraryWatcher.from_settings(
            active, settings, chosen, on_outcome=on_outcome, on_event=on_event, on_progress=on_progress, catch_up=True
        )
        # Said once the watches are in place: a file copied in after this line is reported as an event.
        status.on_started = lambda: say("info", f"watch: watching {', '.join(watcher.roots)} for new or changed files")
        await watcher.run(stop, task_status=status)
    except (AmphigoryError, OSError) as exc:  # a root gone (unmounted share), a probe pool that cannot start
        say("error", f"watch: stopped: {exc}")
        status.on_started = None  # a failed catch-up scan must not be followed by "watching …"
        status.started()
    finally:
        if owned:
            active.close()
