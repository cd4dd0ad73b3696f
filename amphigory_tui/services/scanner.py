"""The library scanner: walk the roots, probe what is new or changed, decide, record in batches, checkpoint.

One ``Scanner`` serves ``amphigory scan``, watch mode and the TUI's Scan tab. It is synchronous and runs in the
caller's thread (the CLI's main thread, a Textual thread worker); it reports ``ScanProgress`` through a callback, at
most ``1 / progress_interval_s`` times a second, and stops within a second of ``cancel`` being set.

Walk order (``walk.walk_media``): files come out sorted by ``walk.sort_key`` (path-component order), which is
what makes checkpoints simple:

* **Checkpoint/resume.** Results are committed in batches (``scanner.batch_size`` changed rows, or every
  ``batch_interval_s``), each followed by a checkpoint in ``system_state`` holding the last path of the *frontier*:
  every file up to it was fully handled (probes finish out of order, so files done beyond the frontier are listed in
  the checkpoint too, which keeps the counts exact). A resumed scan skips whole directories that sort before the
  checkpoint without listing them.
* **Identity is the path.** A scan of a folder takes in every recorded row whose path lies inside it, whatever
  root the row was filed under: ``amphigory scan /lib/Movies`` after ``amphigory scan /lib`` probes nothing
  unchanged, and a later ``/lib`` scan still finds files deleted under ``Movies``. The ``root`` column (display
  only) is the configured library root holding the file, else the root the row already had, else the scanned
  folder, so alternating scans never rewrite it back and forth.
* **Missing files.** Each walked path is taken out of the folder's recorded paths (``MediaStore.known``); what is
  left when the walk completes was not seen, and is marked missing (its live jobs canceled) if ``lstat`` says it
  is gone. A resumed scan did not walk the files before its checkpoint, so they are left too and get one
  ``lstat`` each: files deleted before, during or after the interruption are all found. A file in an unreadable
  folder, or one the extension list no longer matches, still exists and is left alone; a root that lists no files
  at all while the database knows some (an unmounted NAS share) marks nothing missing.
* **Incremental.** A file whose path, size and ``mtime_ns`` match its row is not probed. A changed file is re-probed
  after its live job is canceled ("source changed"); a file that reappears after being missing is re-probed.

Files that need a probe go to a ``ProbePool`` (PyAV in worker processes), created only when the first such file
is met, so a rescan of an unchanged library starts no process at all. When PyAV cannot be imported or the pool
cannot start, ``ffprobe.FfprobeProber`` (one ffprobe per file, through ``run_tool``) takes over, with one notice.

``reevaluate`` re-runs the rules over stored probes; a file that no longer qualifies loses its *queued* job
("rules changed: …"); running and paused jobs are left to the user.

**One scan at a time per database**, whichever ``Scanner``, thread or process runs it: ``scan``, ``reevaluate`` and
``scan_paths`` hold the database's scan lock (``scan_lock_name``: a ``NamedLock`` in the process-lock directory, and
on PostgreSQL also a session advisory lock, for the other machines sharing the database), since two walks of one
library would fight over its rows and its one checkpoint. ``scan`` and ``reevaluate``
refuse with ``ScanBusy`` naming the holder; ``scan_paths`` (watch mode's small batches) waits for it instead, as
the scan that holds it is bringing the same files up to date.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from itertools import chain
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from amphigory_tui.config import Settings
from amphigory_tui.domain.clock import Clock
from amphigory_tui.domain.errors import AmphigoryError, ScanBusy, UsageError
from amphigory_tui.domain.events import ScanProgress
from amphigory_tui.domain.media import Decision, ProbeResult
from amphigory_tui.services.locks import NamedLock, lock_is_free
from amphigory_tui.services.queries import LAST_SCAN_KEY
from amphigory_tui.services.rules import decide
from amphigory_tui.services.walk import extension_set, is_gone, normalize_roots, sort_key, walk_media
from amphigory_tui.store import AdvisoryLock, KnownFile, MediaRecord, Store

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "scan.checkpoint"
"""``system_state`` key of an interrupted scan's checkpoint (JSON, see ``Checkpoint``)."""

CHANGED_REASON = "source file changed on disk"
"""Why the job of a file that changed was canceled."""
MISSING_REASON = "source file disappeared"
"""Why the job of a file that vanished was canceled."""
RULES_CHANGED_PREFIX = "rules changed: "
"""Starts the reason a queued job was canceled by ``--reevaluate`` (the file's new reason follows)."""

_CHECKPOINT_VERSION = 1
_ERROR_SAMPLES = 20


def scan_lock_name(store: Store) -> str:
    """The name of the ``NamedLock`` every scan of this store's database holds (module docstring).

    A SQLite database is named by its file's real path, so every spelling of it (a relative URL, a symlink) shares
    one lock; a server database by its URL, password masked. Hashed: a path or URL is long, and full of characters
    a file name should not carry.
    """
    engines = store.engines
    path = engines.sqlite_path()
    if path is not None:
        identity = f"sqlite:{os.path.realpath(path)}"
    elif engines.is_sqlite:
        identity = f"sqlite-memory:{id(engines)}"  # a private in-memory database: nobody else can scan it
    else:
        identity = engines.url_for_messages
    return "scan-" + hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


_SERVER_LOCK_POLL_S = 0.5  # watch mode waiting for another machine's scan looks again this often


def _advisory_key(lock_name: str) -> int:
    """The PostgreSQL advisory-lock key of a scan lock: 64 bits of its name's hash, as a signed integer."""
    return int.from_bytes(hashlib.sha256(lock_name.encode("utf-8")).digest()[:8], "big", signed=True)


def scan_running(store: Store, lock_dir: Path | None = None) -> bool:
    """Whether a scan of this store's database is running now: a process on this machine holds its ``NamedLock``
    or, on PostgreSQL, a session on any machine holds its advisory lock (tried, and let go at once if free)."""
    name = scan_lock_name(store)
    if lock_is_free(NamedLock.path_for(name, lock_dir)) is False:
        return True
    if store.engines.is_sqlite:
        return False
    server = store.engines.try_advisory_lock(_advisory_key(name))
    if server is None:
        return True
    server.release()
    return False


class Prober(Protocol):
    """What the scanner needs from a probe pool (``ProbePool`` has it; tests wrap it to count probes)."""

    def probe_many(
        self, paths: Iterable[str], cancel: threading.Event | None = None
    ) -> Iterator[tuple[str, ProbeResult]]:
        """Yield ``(path, result)`` for every path, in any order; once ``cancel`` is set, stop promptly."""
        ...


ProgressCallback = Callable[[ScanProgress], None]
NoticeCallback = Callable[[str], None]


# --------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """What a scan did; counts include the interrupted run when the scan resumed one.

    ``probe_errors`` counts this run's new ones; ``library_probe_errors`` every present file under the roots that
    has one (a rescan probes nothing, so it finds no new errors, but the old ones are still there).
    """

    roots: tuple[str, ...]
    seen: int
    probed: int
    added: int
    updated: int
    unchanged: int
    missing: int
    probe_errors: int
    walk_errors: int
    need_transcoding: int
    elapsed_s: float
    canceled: bool = False
    resumed_from: str | None = None
    last_error: str | None = None
    errors: tuple[str, ...] = ()
    """The first few error lines: this run's unreadable folders, then the library's probe errors in path order."""
    library_files: int = 0
    """Present files recorded under the roots after the scan."""
    library_probe_errors: int = 0
    notice: str | None = None
    """Said once when the scan had to probe with ffprobe instead of PyAV."""


@dataclass(frozen=True, slots=True)
class ReevaluateSummary:
    """What ``--reevaluate`` did."""

    files: int
    need_transcoding: int
    elapsed_s: float
    canceled: bool = False
    canceled_jobs: int = 0
    """Queued jobs canceled because their file no longer qualifies."""


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What ``scan_paths`` (watch mode) did with one path."""

    path: str
    outcome: str
    """``added``, ``updated``, ``unchanged``, ``missing`` or ``ignored``."""
    reason: str = ""
    should_transcode: bool = False
    media_id: int | None = None
    queued: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where an interrupted scan stopped: root ``root_index`` of ``roots``, every file up to ``last`` handled."""

    roots: tuple[str, ...]
    root_index: int
    last: str | None
    counts: dict[str, int] = field(default_factory=dict)
    done_after: tuple[str, ...] = ()
    """Files after ``last`` that were already handled and counted (probes finish out of order)."""

    @property
    def position(self) -> str:
        """The path to name in "resuming interrupted scan from …"."""
        if self.last is not None:
            return self.last
        return self.roots[self.root_index] if self.root_index < len(self.roots) else self.roots[-1]

    def to_json(self) -> str:
        """Serialised for ``system_state``."""
        data = asdict(self)
        data["version"] = _CHECKPOINT_VERSION
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint | None:
        """Parsed from ``system_state``; None when unreadable (a checkpoint is only an optimisation)."""
        try:
            data = json.loads(text)
            if data.get("version") != _CHECKPOINT_VERSION:
                return None
            return cls(
                roots=tuple(str(r) for r in data["roots"]),
                root_index=int(data["root_index"]),
                last=None if data["last"] is None else str(data["last"]),
                counts={str(k): int(v) for k, v in data["counts"].items()},
                done_after=tuple(str(p) for p in data.get("done_after", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


# --------------------------------------------------------------------------------------------------- the run


@dataclass(slots=True)
class _Counts:
    """Running totals of one scan (saved in the checkpoint)."""

    seen: int = 0
    probed: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    probe_errors: int = 0
    walk_errors: int = 0


@dataclass(slots=True)
class _InFlight:
    """A file on its way through the probe pool."""

    size: int
    mtime_ns: int
    known: KnownFile | None
    done: bool = False


class _Counter(threading.Thread):
    """Counts the media files of roots the database knows nothing about, for a first scan's total and ETA."""

    def __init__(self, roots: Sequence[str], extensions: frozenset[str], follow: bool) -> None:
        super().__init__(name="amphigory-scan-count", daemon=True)
        self._roots = roots
        self._extensions = extensions
        self._follow = follow
        self.stop = threading.Event()
        self.count = 0

    def run(self) -> None:
        """Walk without stat calls; stop early when told."""
        for root in self._roots:
            for _ in walk_media(
                root, self._extensions, follow_symlinks=self._follow, stat_files=False, cancel=self.stop
            ):
                self.count += 1


class Scanner:
    """Scans library roots into ``media_files``: incremental, checkpointed, cancelable (module docstring)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        prober: Prober | None = None,
        clock: Clock | None = None,
        progress_interval_s: float = 0.1,
        on_notice: NoticeCallback | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock or store.clock
        self._prober = prober
        self._owned_pool: Any = None
        self._progress_interval_s = progress_interval_s
        self._extensions = extension_set(settings.rules.extensions)
        self._follow = settings.scanner.follow_symlinks
        self._library_roots = normalize_roots(settings.library.roots)
        self._on_notice = on_notice
        self.notice: str | None = None
        """Set (and said once, to ``on_notice`` or the log) when probing fell back to ffprobe."""
        self._lock_name = scan_lock_name(store)
        # The scan lock this Scanner holds, and the thread holding it (which may re-enter: ``scan_lock``).
        self._held: NamedLock | None = None
        self._held_by: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Scanner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the probe pool this scanner started, if any."""
        pool, self._owned_pool = self._owned_pool, None
        if pool is not None:
            pool.close()
            if self._prober is pool:
                self._prober = None

    def _pool(self) -> Prober:
        """The injected prober, or one started now (the first time a file needs probing)."""
        if self._prober is None:
            self._owned_pool = self._start_prober()
            self._prober = self._owned_pool
        return self._prober

    def _start_prober(self) -> Any:
        """A PyAV ``ProbePool``; an ``FfprobeProber`` when PyAV cannot be imported or the pool cannot start."""
        sc = self._settings.scanner
        try:
            from amphigory_tui.services.probe import ProbePool  # imports av: only when there is work for it

            return ProbePool.from_settings(sc)
        except (ImportError, OSError, AmphigoryError) as exc:
            why = str(exc) or type(exc).__name__
        from amphigory_tui.services.ffprobe import FfprobeProber
        from amphigory_tui.services.probe import available_cpus, container_truncation

        fallback = FfprobeProber(
            sc.probe_workers or available_cpus(),
            sc.probe_timeout_s,
            ffprobe=self._settings.tools.ffprobe,
            truncation=container_truncation,
        )
        self.notice = f"the PyAV probe pool is unavailable ({why}); probing with ffprobe instead (slower)"
        if self._on_notice is not None:
            self._on_notice(self.notice)
        else:
            log.warning("%s", self.notice)
        return fallback

    def _probe_stream(self, feed: Iterator[str], cancel: threading.Event) -> Iterator[tuple[str, ProbeResult]]:
        """Probe what ``feed`` yields; the pool is only started if it yields anything."""
        first = next(feed, None)
        if first is None:
            return
        yield from self._pool().probe_many(chain([first], feed), cancel)

    # ------------------------------------------------------------------ the scan lock

    @contextmanager
    def scan_lock(self, doing: str = "scanning") -> Iterator[None]:
        """Hold the database's scan lock or raise ``ScanBusy`` naming its holder; ``doing`` is what the next one's
        refusal says. Re-entrant in the holding thread: a caller that must look at the checkpoint before scanning
        (``amphigory scan`` says "resuming …") takes it first, and ``scan`` inside uses the same lock."""
        if self._held is not None and self._held_by == threading.get_ident():
            yield
            return
        lock = NamedLock.try_acquire(self._lock_name, doing=doing)
        if lock is None:
            holder = NamedLock.holder(self._lock_name)
            raise ScanBusy(
                f"a scan is already running ({holder.describe()})" if holder else "a scan is already running"
            )
        server = self._server_lock(lock)
        with self._holding(lock, server):
            yield

    @contextmanager
    def _waiting_lock(self, doing: str, cancel: threading.Event | None) -> Iterator[bool]:
        """Hold the scan lock, waiting for another holder to let go; yields False (not held) if ``cancel`` came
        first."""
        if self._held is not None and self._held_by == threading.get_ident():
            yield True
            return
        stop = cancel or threading.Event()  # never set: wait without end
        while True:
            lock = NamedLock.wait(self._lock_name, doing=doing, cancel=stop)
            if lock is None:
                yield False
                return
            try:
                server = self._server_lock(lock)
                break
            except ScanBusy:
                pass
            if stop.wait(_SERVER_LOCK_POLL_S):  # another machine scans: wait for it
                yield False
                return
        with self._holding(lock, server):
            yield True

    def _server_lock(self, lock: NamedLock) -> AdvisoryLock | None:
        """With ``lock`` held: on PostgreSQL also the database's advisory lock (other machines share the database,
        not our lock directory); None on SQLite. ``ScanBusy``, with ``lock`` released, when another session holds
        it."""
        engines = self._store.engines
        if engines.is_sqlite:
            return None
        try:
            server = engines.try_advisory_lock(_advisory_key(self._lock_name))
        except BaseException:
            lock.release()
            raise
        if server is None:
            lock.release()
            raise ScanBusy("a scan of this database is already running on another machine")
        return server

    @contextmanager
    def _holding(self, lock: NamedLock, server: AdvisoryLock | None = None) -> Iterator[None]:
        """Remember ``lock`` as this thread's while the block runs, then release it (and ``server``)."""
        self._held, self._held_by = lock, threading.get_ident()
        try:
            yield
        finally:
            self._held = self._held_by = None
            if server is not None:
                server.release()
            lock.release()

    # ------------------------------------------------------------------ checkpoint

    def checkpoint(self) -> Checkpoint | None:
        """The checkpoint an interrupted scan left, if any."""
        text = self._store.state.get(CHECKPOINT_KEY)
        return Checkpoint.from_json(text) if text else None

    def resumable(self, roots: Sequence[str]) -> Checkpoint | None:
        """The checkpoint a scan of these roots would resume from, if any."""
        cp = self.checkpoint()
        if cp is None or cp.roots != normalize_roots(roots) or cp.root_index >= len(cp.roots):
            return None
        return cp

    def clear_checkpoint(self) -> None:
        """Forget an interrupted scan (the next scan starts from the beginning)."""
        self._store.state.delete(CHECKPOINT_KEY)

    # ------------------------------------------------------------------ full scan

    def scan(
        self,
        roots: Sequence[str] | None = None,
        *,
        cancel: threading.Event | None = None,
        on_progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> ScanSummary:
        """Scan ``roots`` (default: ``[library] roots``), resuming an interrupted scan of the same roots."""
        chosen = normalize_roots(roots if roots is not None else self._settings.library.roots)
        if not chosen:
            raise UsageError("no library roots: pass ROOT arguments or set [library] roots in the config file")
        with self.scan_lock(f"scanning {', '.join(chosen)}"):
            run = _ScanRun(
                self, chosen, cancel or threading.Event(), on_progress, self.resumable(chosen) if resume else None
            )
            return run.execute()

    # ------------------------------------------------------------------ re-evaluation

    def reevaluate(
        self,
        roots: Sequence[str] | None = None,
        *,
        cancel: threading.Event | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ReevaluateSummary:
        """Run the rules again over the stored probes of present files (no probing); ``roots`` limits it."""
        with self.scan_lock("re-evaluating the rules"):
            return self._reevaluate(roots, cancel, on_progress)

    def _reevaluate(
        self, roots: Sequence[str] | None, cancel: threading.Event | None, on_progress: ProgressCallback | None
    ) -> ReevaluateSummary:
        rules = self._settings.rules
        prefixes = tuple(r.rstrip("/") + "/" for r in normalize_roots(roots)) if roots else None
        started = self._clock.monotonic()
        total = self._store.media.count()
        files = need = dropped = 0
        canceled = False
        last_emit = started
        for batch in self._store.media.iter_for_reevaluation():
            if cancel is not None and cancel.is_set():
                canceled = True
                break
            decisions: list[tuple[int, Decision]] = []
            for media_id, path, size, probe in batch:
                if prefixes is not None and not path.startswith(prefixes):
                    continue
                decision = decide(path, size, probe, rules)
                decisions.append((media_id, decision))
                need += decision.should_transcode
            self._store.media.update_decisions(decisions)
            # After the decisions are stored: dying in between leaves a job a rerun cancels, never a row that
            # says "no" while its job still runs the old "yes".
            dropped += self._cancel_stale_jobs(decisions)
            files += len(decisions)
            now = self._clock.monotonic()
            if on_progress is not None and now - last_emit >= self._progress_interval_s:
                last_emit = now
                on_progress(_progress_for_reevaluate(files, total, now - started))
        elapsed = self._clock.monotonic() - started
        if on_progress is not None:
            on_progress(_progress_for_reevaluate(files, total, elapsed, done=not canceled, canceled=canceled))
        return ReevaluateSummary(
            files=files, need_transcoding=need, elapsed_s=elapsed, canceled=canceled, canceled_jobs=dropped
        )

    def _cancel_stale_jobs(self, decisions: Sequence[tuple[int, Decision]]) -> int:
        """Cancel the queued jobs of files the rules now leave alone; how many were canceled.

        Only queued ones: a running job is the user's to stop (it may be nearly done), a paused one the user's to
        resume or cancel. The store checks "still queued" in the UPDATE itself, so a job claimed meanwhile is left
        alone.
        """
        reasons = {
            media_id: RULES_CHANGED_PREFIX + decision.reason
            for media_id, decision in decisions
            if not decision.should_transcode
        }
        return self._store.jobs.cancel_queued_for_media(reasons)

    # ------------------------------------------------------------------ single paths (watch mode)

    def scan_paths(
        self,
        paths: Iterable[str],
        *,
        roots: Sequence[str] | None = None,
        auto_queue: bool = False,
        cancel: threading.Event | None = None,
    ) -> list[FileOutcome]:
        """Bring these paths up to date: probe new or changed media files, mark vanished ones (and folders) missing.

        ``roots`` (default ``[library] roots``) says which root each file belongs to; paths outside them are
        ignored. ``auto_queue`` queues a job for each new or changed file that needs transcoding. While another
        scan of the database runs this waits for it; ``cancel`` set meanwhile returns ``[]`` with nothing done.
        """
        chosen = normalize_roots(roots if roots is not None else self._settings.library.roots)
        with self._waiting_lock("updating watched files", cancel) as held:
            return _scan_paths(self, chosen, list(paths), auto_queue) if held else []


def _progress_for_reevaluate(
    files: int, total: int, elapsed: float, *, done: bool = False, canceled: bool = False
) -> ScanProgress:
    """A ScanProgress for ``--reevaluate`` (only seen/total/rate mean something)."""
    rate = files / elapsed if elapsed > 0 else 0.0
    eta = (total - files) / rate if rate > 0 and total > files else None
    return ScanProgress(
        seen=files,
        total_estimate=max(total, files),
        probed=0,
        added=0,
        updated=0,
        unchanged=0,
        missing=0,
        errors=0,
        files_per_s=rate,
        eta_s=eta,
        current_dir="",
        last_error=None,
        done=done,
        canceled=canceled,
    )


class _ScanRun:
    """The state of one ``Scanner.scan`` call."""

    def __init__(
        self,
        scanner: Scanner,
        roots: tuple[str, ...],
        cancel: threading.Event,
        on_progress: ProgressCallback | None,
        checkpoint: Checkpoint | None,
    ) -> None:
        self.s = scanner
        self.store = scanner._store
        self.rules = scanner._settings.rules
        self.sc = scanner._settings.scanner
        self.clock = scanner._clock
        self.roots = roots
        self.cancel = cancel
        self.on_progress = on_progress
        self.checkpoint = checkpoint
        names = {f.name for f in fields(_Counts)}
        self.c = _Counts(**{k: v for k, v in (checkpoint.counts if checkpoint else {}).items() if k in names})
        self.seen_at_start = self.c.seen
        self.errors: list[str] = []
        self.last_error: str | None = None
        self.current_dir = ""
        # batch state
        self.records: list[MediaRecord] = []
        self.changed_ids: list[int] = []
        self.missing_ids: list[int] = []
        self.reroot: dict[str, list[int]] = {}  # library root -> unchanged rows filed under another root
        self.dirty = False
        self.last_flush = self.clock.monotonic()
        # progress
        self.started = self.clock.monotonic()
        self.last_emit = self.started - scanner._progress_interval_s
        self.recorded = 0  # present files the database knows under the roots: the progress total of a rescan
        self.counter: _Counter | None = None  # counts the files of roots scanned for the first time
        self.known: dict[str, KnownFile] = {}
        # per root
        self.root_index = 0
        self.root = ""
        self.library_roots = scanner._library_roots
        self.fixed_root: str | None = None  # the library root holding the whole scanned folder, if any
        self.inner_roots: tuple[str, ...] = ()  # else the library roots inside the scanned folder
        self.window: deque[tuple[str, _InFlight | None]] = deque()
        self.inflight: dict[str, _InFlight] = {}
        self.frontier: str | None = None
        self.skip_count: set[str] = set()
        self.seen_in_root = 0

    # ------------------------------------------------------------------ driver

    def execute(self) -> ScanSummary:
        """Scan every root from the checkpoint on; clear it and note the time when complete."""
        cp = self.checkpoint
        first = cp.root_index if cp else 0
        present = self.store.media.present_under(self.roots)
        self.recorded = sum(present.values())
        new_roots = [root for root in self.roots[first:] if present[root] == 0]
        if new_roots:  # a first scan of these: count their files in a thread, for the total and the ETA
            self.counter = _Counter(new_roots, self.s._extensions, self.s._follow)
            self.counter.start()
        self._emit(force=True)
        canceled = False
        # (Loading a root's rows in a thread while the walk starts was tried: with the GIL shared between the
        # row building and the walk it was slower, not faster, on 2 cores.)
        try:
            for index in range(first, len(self.roots)):
                after = cp.last if cp and index == cp.root_index else None
                if cp and index == cp.root_index:
                    self.skip_count = set(cp.done_after)
                if not self._scan_root(index, after):
                    canceled = True
                    break
        finally:
            if self.counter is not None:
                self.counter.stop.set()
        if not canceled:
            self.store.state.delete(CHECKPOINT_KEY)
            self.store.state.set(LAST_SCAN_KEY, repr(self.clock.now()))
        self._emit(force=True, done=not canceled, canceled=canceled)
        totals = self.store.media.totals_under(self.roots, _ERROR_SAMPLES)
        errors = [*self.errors, *(f"{path}: {error}" for path, error in totals.first_errors)][:_ERROR_SAMPLES]
        return ScanSummary(
            roots=self.roots,
            seen=self.c.seen,
            probed=self.c.probed,
            added=self.c.added,
            updated=self.c.updated,
            unchanged=self.c.unchanged,
            missing=self.c.missing,
            probe_errors=self.c.probe_errors,
            walk_errors=self.c.walk_errors,
            need_transcoding=totals.need_transcoding,
            elapsed_s=self.clock.monotonic() - self.started,
            canceled=canceled,
            resumed_from=cp.position if cp else None,
            last_error=self.last_error,
            errors=tuple(errors),
            library_files=totals.files,
            library_probe_errors=totals.probe_errors,
            notice=self.s.notice,
        )

    def _scan_root(self, index: int, after: str | None) -> bool:
        """Scan one root from ``after`` on, then look for vanished files; False when canceled."""
        self.root_index = index
        self.root = self.roots[index]
        self.window.clear()
        self.inflight.clear()
        self.frontier = after
        self.seen_in_root = 0
        self.fixed_root = _containing_root(self.root, self.library_roots)
        self.inner_roots = () if self.fixed_root else tuple(r for r in self.library_roots if _inside(r, self.root))
        # One query: every row inside the folder, whatever root it was filed under; the walk pops what it sees.
        self.known = self.store.media.known(self.root)
        for path, probe in self.s._probe_stream(self._feed(after), self.cancel):
            self._on_probed(path, probe)
            self._maybe_flush()
            self._emit()
        if not self.cancel.is_set():
            self._find_missing(self.known, resumed=after is not None)
        if self.cancel.is_set():
            self._flush(self.root_index, self.frontier)
            return False
        self._flush(index + 1, None)
        self.skip_count = set()
        return True

    def _feed(self, after: str | None) -> Iterator[str]:
        """Walk the root; handle unchanged files here; yield the paths that need a probe.

        Every walked path is popped from the root's recorded rows: what is left afterwards was not seen.
        The loop is the hot path of a rescan (one pass per file of the library), hence the local variables and
        the counts kept locally between ``_sync`` calls.
        """
        cancel = self.cancel
        window = self.window
        skip = self.skip_count
        pop = self.known.pop
        fixed, inner = self.fixed_root, self.inner_roots
        n = fresh = 0
        last: str | None = None
        for path, size, mtime_ns in walk_media(
            self.root,
            self.s._extensions,
            follow_symlinks=self.s._follow,
            after=after,
            on_dir=self._on_dir,
            on_error=self._on_walk_error,
            cancel=cancel,
        ):
            n += 1
            k = pop(path, None)
            if k is not None and not k.missing and k.size_bytes == size and k.mtime_ns == mtime_ns:
                if fixed is not None:
                    if k.root != fixed:
                        self._file_under(fixed, k.id)
                elif inner:
                    owner = _root_of(path, inner)
                    if owner is not None and k.root != owner:
                        self._file_under(owner, k.id)
                # Counted when done (a file in flight is not: the checkpoint's counts cover exactly the files
                # up to its frontier plus ``done_after``, so a resumed scan counts every file once).
                if not skip or path not in skip:
                    fresh += 1
                if window:
                    self._done(path, None)
                else:
                    last = path
                if n & 31 == 0:  # the clock and the batch are looked at every 32 files; cancel at every file
                    self._sync(fresh, last)
                    fresh, last = 0, None
                    self._maybe_flush()
                    self._emit()
            else:
                self._sync(fresh, last)
                fresh, last = 0, None
                item = _InFlight(size, mtime_ns, k)
                self.inflight[path] = item
                window.append((path, item))
                yield path
            if cancel.is_set():
                break
        self._sync(fresh, last)
        self.seen_in_root += n

    def _file_under(self, root: str, media_id: int) -> None:
        """Correct the recorded root of an unchanged file (written with the next batch; nothing is probed)."""
        self.reroot.setdefault(root, []).append(media_id)
        self.dirty = True

    def _record_root(self, path: str, known: KnownFile | None) -> str:
        """The root column of a file being written: its library root, else the one it had, else the scanned folder."""
        if self.fixed_root is not None:
            return self.fixed_root
        owner = _root_of(path, self.inner_roots) if self.inner_roots else None
        if owner is not None:
            return owner
        if known is not None and known.root and _inside(path, known.root):
            return known.root
        return self.root

    def _sync(self, fresh: int, last: str | None) -> None:
        """Fold the feed's local counts of unchanged files into the run's."""
        self.c.seen += fresh
        self.c.unchanged += fresh
        if last is not None:
            self.frontier = last

    def _find_missing(self, known: dict[str, KnownFile], *, resumed: bool) -> None:
        """Recorded files the walk did not see: missing if ``lstat`` says they are gone.

        In a resumed scan that includes every file before the checkpoint (this run did not walk them): one lstat
        each, and files deleted while the scan was interrupted are found too.
        """
        candidates = [(path, k) for path, k in known.items() if not k.missing]
        if not candidates:
            return
        if self.seen_in_root == 0 and (not resumed or _is_empty_dir(self.root)):
            self._on_walk_error(
                self.root,
                f"library root {self.root} has no media files but the database knows {len(candidates):,}: "
                "not marking them missing (is it mounted?)",
            )
            return
        for i, (path, k) in enumerate(candidates):
            if i & 255 == 0 and self.cancel.is_set():
                return
            if is_gone(path):
                self.missing_ids.append(k.id)
                self.c.missing += 1
                self.dirty = True
                self._maybe_flush()
        self._emit()

    def _done(self, path: str, item: _InFlight | None) -> None:
        """A file is fully handled: move the frontier over every finished file at the head of the window."""
        window = self.window
        if item is not None:
            item.done = True
        else:
            window.append((path, None))
        while window and (window[0][1] is None or window[0][1].done):
            self.frontier = window.popleft()[0]

    def _on_probed(self, path: str, probe: ProbeResult) -> None:
        """A probe came back: decide, queue the record for the next commit."""
        item = self.inflight.pop(path)
        decision = decide(path, item.size, probe, self.rules)
        root = self._record_root(path, item.known)
        self.records.append(MediaRecord(path, root, item.size, item.mtime_ns, probe, decision))
        if not self.skip_count or path not in self.skip_count:
            self.c.seen += 1
            self.c.probed += 1
            if item.known is None:
                self.c.added += 1
            else:
                self.c.updated += 1
            if probe.error is not None:
                self.c.probe_errors += 1
        if item.known is not None and not item.known.missing:
            self.changed_ids.append(item.known.id)
        if probe.error is not None:
            # Progress shows the latest; the summary lists the library's probe errors from the database.
            self.last_error = f"{path}: {probe.error}"
        self.dirty = True
        self._done(path, item)

    # ------------------------------------------------------------------ batches

    def _maybe_flush(self) -> None:
        """Commit when the batch is full or old enough (an unchanged-only stretch checkpoints by time only)."""
        pending = len(self.records) + len(self.missing_ids) + sum(len(ids) for ids in self.reroot.values())
        if pending >= self.sc.batch_size or (
            (self.dirty or self.frontier is not None)
            and self.clock.monotonic() - self.last_flush >= self.sc.batch_interval_s
        ):
            self._flush(self.root_index, self.frontier)

    def _flush(self, root_index: int, last: str | None) -> None:
        """Cancel jobs of changed/vanished files, write the batch, then move the checkpoint (each step idempotent)."""
        jobs, media = self.store.jobs, self.store.media
        # Jobs first: if we die after the rows are written, a rerun sees the file as unchanged and would never
        # cancel its stale job; the other way round, a rerun simply cancels again (nothing left to cancel).
        if self.changed_ids:
            jobs.cancel_for_media(self.changed_ids, CHANGED_REASON)
        if self.missing_ids:
            jobs.cancel_for_media(self.missing_ids, MISSING_REASON)
            media.mark_missing(self.missing_ids)
        if self.records:
            media.upsert(self.records)
        for root, ids in self.reroot.items():
            media.set_root(ids, root)
        # Dying here costs nothing but wording: the rerun finds these rows unchanged (or already missing), so its
        # summary may count a batch as "unchanged" instead of "added"; the rows themselves are right.
        done_after = (
            tuple(p for p, item in self.window if item is None or item.done) if root_index == self.root_index else ()
        )
        cp = Checkpoint(self.roots, root_index, last, asdict_counts(self.c), done_after)
        self.store.state.set(CHECKPOINT_KEY, cp.to_json())
        self.records = []
        self.changed_ids = []
        self.missing_ids = []
        self.reroot = {}
        self.dirty = False
        self.last_flush = self.clock.monotonic()

    # ------------------------------------------------------------------ progress

    def _on_dir(self, folder: str) -> None:
        self.current_dir = folder

    def _on_walk_error(self, path: str, message: str) -> None:
        self.c.walk_errors += 1
        self._note_error(message)

    def _note_error(self, message: str) -> None:
        self.last_error = message
        if len(self.errors) < _ERROR_SAMPLES:
            self.errors.append(message)

    def _emit(self, *, force: bool = False, done: bool = False, canceled: bool = False) -> None:
        """Report progress, at most every ``progress_interval_s`` unless forced."""
        if self.on_progress is None:
            return
        now = self.clock.monotonic()
        if not force and now - self.last_emit < self.s._progress_interval_s:
            return
        self.last_emit = now
        elapsed = now - self.started
        run_seen = self.c.seen - self.seen_at_start
        rate = run_seen / elapsed if elapsed > 0 else 0.0
        total = max(self.recorded + (self.counter.count if self.counter is not None else 0), self.c.seen)
        eta = (total - self.c.seen) / rate if rate > 0 and total > self.c.seen and not done else None
        self.on_progress(
            ScanProgress(
                seen=self.c.seen,
                total_estimate=total,
                probed=self.c.probed,
                added=self.c.added,
                updated=self.c.updated,
                unchanged=self.c.unchanged,
                missing=self.c.missing,
                errors=self.c.probe_errors + self.c.walk_errors,
                files_per_s=rate,
                eta_s=eta,
                current_dir=self.current_dir,
                last_error=self.last_error,
                done=done,
                canceled=canceled,
                resumed=self.checkpoint is not None,
            )
        )


def _is_empty_dir(path: str) -> bool:
    """Whether a folder lists nothing (or cannot be listed): what an unmounted share's mount point looks like."""
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return True


def asdict_counts(c: _Counts) -> dict[str, int]:
    """The counts as a plain dict (for the checkpoint)."""
    return {f.name: getattr(c, f.name) for f in fields(c)}


# --------------------------------------------------------------------------------------------------- scan_paths


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies inside ``folder`` (a path prefix up to a separator, not a string prefix)."""
    return path.startswith(folder.rstrip("/") + "/")


def _root_of(path: str, roots: Sequence[str]) -> str | None:
    """The root that holds ``path``, if any."""
    for root in roots:
        if _inside(path, root):
            return root
    return None


def _pick_root(path: str, library_roots: Sequence[str], known: KnownFile | None, scanned: str) -> str:
    """The root column of a file: its library root, else the one it was filed under, else the scanned folder."""
    owner = _root_of(path, library_roots)
    if owner is not None:
        return owner
    if known is not None and known.root and _inside(path, known.root):
        return known.root
    return scanned


def _containing_root(folder: str, roots: Sequence[str]) -> str | None:
    """The root that is ``folder`` or holds it, if any."""
    for root in roots:
        if folder == root or _inside(folder, root):
            return root
    return None


def _scan_paths(scanner: Scanner, roots: tuple[str, ...], paths: list[str], auto_queue: bool) -> list[FileOutcome]:
    """``Scanner.scan_paths`` without the lock."""
    store = scanner._store
    rules = scanner._settings.rules
    exts = scanner._extensions
    follow = scanner._follow
    outcomes: list[FileOutcome] = []
    to_probe: dict[str, tuple[str, int, int, KnownFile | None]] = {}
    missing: list[tuple[str, KnownFile]] = []

    def consider(path: str, root: str, size: int, mtime_ns: int) -> None:
        current = store.media.get_by_path(path)
        k = (
            KnownFile(current.id, current.size_bytes, current.mtime_ns, current.missing, current.root)
            if current is not None
            else None
        )
        if k is not None and not k.missing and k.size_bytes == size and k.mtime_ns == mtime_ns:
            outcomes.append(FileOutcome(path, "unchanged", current.reason if current else "", media_id=k.id))
            return
        to_probe[path] = (_pick_root(path, scanner._library_roots, k, root), size, mtime_ns, k)

    for raw in paths:
        path = os.path.normpath(raw)
        root = _root_of(path, roots)
        if root is None:
            outcomes.append(FileOutcome(path, "ignored", "outside the library roots"))
            continue
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except OSError as exc:
            outcomes.append(FileOutcome(path, "ignored", f"cannot stat: {exc.strerror or exc}"))
            continue
        if st is None:
            gone = {path: k for path, k in store.media.known_under(path).items() if not k.missing}
            current = store.media.get_by_path(path)
            if current is not None and not current.missing:
                gone[path] = KnownFile(current.id, current.size_bytes, current.mtime_ns, False)
            missing.extend((p, k) for p, k in gone.items() if is_gone(p))
            continue
        if stat.S_ISDIR(st.st_mode):
            for fpath, size, mtime_ns in walk_media(path, exts, follow_symlinks=follow):
                consider(fpath, root, size, mtime_ns)
            continue
        name = os.path.basename(path)
        dot = name.rfind(".")
        if not stat.S_ISREG(st.st_mode) or dot < 0 or name[dot + 1 :].lower() not in exts:
            outcomes.append(FileOutcome(path, "ignored", "not a media file"))
            continue
        consider(path, root, st.st_size, st.st_mtime_ns)

    if missing:
        missing_ids = [k.id for _, k in missing]
        store.jobs.cancel_for_media(missing_ids, MISSING_REASON)
        store.media.mark_missing(missing_ids)
        outcomes.extend(FileOutcome(p, "missing", "missing from disk", media_id=k.id) for p, k in missing)
    if not to_probe:
        return outcomes
    records: list[MediaRecord] = []
    for path, probe in scanner._pool().probe_many(list(to_probe)):
        root, size, mtime_ns, _k = to_probe[path]
        records.append(MediaRecord(path, root, size, mtime_ns, probe, decide(path, size, probe, rules)))
    changed = [k.id for _r, _s, _m, k in to_probe.values() if k is not None and not k.missing]
    if changed:
        store.jobs.cancel_for_media(changed, CHANGED_REASON)
    ids = store.media.upsert(records)
    for record in sorted(records, key=lambda r: sort_key(r.path)):
        k = to_probe[record.path][3]
        media_id = ids.get(record.path)
        queued = False
        if auto_queue and media_id is not None and record.decision.should_transcode and record.probe.error is None:
            queued = _queue_one(store, media_id, record)
        outcomes.append(
            FileOutcome(
                record.path,
                "added" if k is None else "updated",
                record.decision.reason,
                record.decision.should_transcode,
                media_id,
                queued,
            )
        )
    return outcomes


def _queue_one(store: Store, media_id: int, record: MediaRecord) -> bool:
    """Queue one transcode job for a new candidate; False when it already has a live job."""
    try:
        store.jobs.create(
            record.path,
            media_file_id=media_id,
            priority=record.decision.priority,
            source_size=record.size_bytes,
            source_mtime_ns=record.mtime_ns,
        )
    except UsageError:
        return False
    return True
