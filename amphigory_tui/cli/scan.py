"""``amphigory scan [ROOT…] [--reevaluate] [--watch] [--queue]``: scan the library with a progress bar.

rich is imported inside the command only (the CLI must stay light for scripts and the import-hygiene test).
Ctrl+C (or SIGTERM) asks the scanner to stop: it commits what it has, leaves a checkpoint that the next
``amphigory scan`` resumes from, and the command exits with 130 (143 for SIGTERM). A second Ctrl+C aborts at once.
While another scan of the same database runs (another process, a TUI) it is refused in one line with exit code 1.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from amphigory_tui.cli.context import CliContext, pass_cli
from amphigory_tui.domain.errors import UsageError
from amphigory_tui.domain.events import ScanProgress
from amphigory_tui.services.scanner import ReevaluateSummary, Scanner, ScanSummary
from amphigory_tui.services.walk import check_roots

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from amphigory_tui.services.runtime import Services

_SHOWN_ERRORS = 5


@click.command()
@click.argument("roots", nargs=-1, metavar="[ROOT]...")
@click.option("--reevaluate", is_flag=True, help="Re-run the rules over the stored probe results (no probing).")
@click.option("--watch", is_flag=True, help="After the scan, keep watching the roots for new or changed files.")
@click.option("--queue", "queue_after", is_flag=True, help="Then queue every file that needs transcoding.")
@pass_cli
def scan(cli: CliContext, roots: tuple[str, ...], reevaluate: bool, watch: bool, queue_after: bool) -> None:
    """Scan the library roots (default: [library] roots): probe new and changed files, decide, record."""
    if reevaluate and watch:
        raise UsageError("--reevaluate and --watch cannot be used together")
    settings = cli.settings
    chosen = check_roots(roots or settings.library.roots)
    services = cli.services()
    # The ffprobe fallback is announced once, on stderr (rich's live bar there prints it above itself).
    with Scanner(
        services.store, settings, on_notice=lambda message: click.echo(f"note: {message}", err=True)
    ) as scanner:
        code = _reevaluate(scanner, chosen) if reevaluate else _scan(scanner, chosen)
        if code == 0 and queue_after:
            count = services.actions.queue_all()
            click.echo(f"Queued {count} jobs")
        if code == 0 and watch:
            code = _watch(scanner, services, chosen)
    if code:
        sys.exit(code)


# --------------------------------------------------------------------------------------------------- scan


def _scan(scanner: Scanner, roots: tuple[str, ...]) -> int:
    """Run one scan with a progress bar; 0, or 130/143 when interrupted (``ScanBusy``: exit 1, one line)."""
    # The lock first: while another scan runs, the checkpoint is that scan's, not an interrupted one to resume.
    with scanner.scan_lock(f"scanning {', '.join(roots)}"):
        checkpoint = scanner.resumable(roots)
        if checkpoint is not None:
            click.echo(f"resuming interrupted scan from {checkpoint.position}")
        elif scanner.checkpoint() is not None:
            click.echo("an interrupted scan of other roots is forgotten; starting from the beginning")
        cancel = threading.Event()
        with _interruptible(cancel) as received, _ProgressView("Scanning") as view:
            summary = scanner.scan(roots, cancel=cancel, on_progress=view.update)
    _print_summary(summary)
    return _exit_code(received) if summary.canceled else 0


def _print_summary(s: ScanSummary) -> None:
    """The end-of-scan table."""
    if s.canceled:
        head = f"Scan canceled after {s.seen:,} files ({s.elapsed_s:.1f} s); run `amphigory scan` again to resume"
    else:
        head = f"Scan complete: {s.seen:,} files in {s.elapsed_s:.1f} s"
    click.echo(head)
    rows: list[tuple[str, int, str]] = [
        ("files", s.seen, ""),
        ("added", s.added, ""),
        ("updated", s.updated, ""),
        ("unchanged", s.unchanged, ""),
        ("missing", s.missing, ""),
        # The library's total: a rescan probes nothing, and "0" would hide the errors it already knows.
        ("probe errors", s.library_probe_errors, f" ({s.probe_errors:,} new)"),
    ]
    if s.walk_errors:
        rows.append(("unreadable", s.walk_errors, ""))
    rows.append(("need transcoding", s.need_transcoding, ""))
    width = max(len(label) for label, _, _ in rows)
    for label, value, note in rows:
        click.echo(f"  {label:<{width}}  {value:>9,}{note}")
    for message in s.errors[:_SHOWN_ERRORS]:
        click.echo(f"  ! {message}")
    more = s.library_probe_errors + s.walk_errors - min(len(s.errors), _SHOWN_ERRORS)
    if more > 0:
        click.echo(f"  … and {more:,} more errors (the Scan tab lists every file with its reason)")


# --------------------------------------------------------------------------------------------------- reevaluate


def _reevaluate(scanner: Scanner, roots: tuple[str, ...]) -> int:
    """Re-run the rules over stored probes; 0, or 130/143 when interrupted."""
    cancel = threading.Event()
    with _interruptible(cancel) as received, _ProgressView("Re-evaluating") as view:
        summary = scanner.reevaluate(roots, cancel=cancel, on_progress=view.update)
    _print_reevaluation(summary)
    return _exit_code(received) if summary.canceled else 0


def _print_reevaluation(s: ReevaluateSummary) -> None:
    state = "canceled after" if s.canceled else "done:"
    click.echo(
        f"Re-evaluation {state} {s.files:,} files in {s.elapsed_s:.1f} s; {s.need_transcoding:,} need transcoding"
    )
    if s.canceled_jobs:
        click.echo(f"Canceled {s.canceled_jobs:,} queued jobs whose files no longer need transcoding")


# --------------------------------------------------------------------------------------------------- watch


def _watch(scanner: Scanner, services: Services, roots: tuple[str, ...]) -> int:
    """Watch until Ctrl+C; print one line per picked-up file. 130/143 when stopped by a signal, 1 on failure."""
    import anyio

    from amphigory_tui.domain.events import LogRecord
    from amphigory_tui.services.watch import watch_library

    failed = False

    def echo(record: LogRecord) -> None:
        nonlocal failed
        failed = failed or record.level == "error"
        click.echo(record.message, err=record.level == "error")

    async def main() -> int:
        stop = anyio.Event()
        code = 1
        async with anyio.create_task_group() as tg:

            async def watch(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                # The same service `amphigory worker` and the TUI run; here it is on whatever the config says.
                await watch_library(
                    services.store,
                    services.settings,
                    enabled=True,
                    roots=roots,
                    stop=stop,
                    on_event=echo,
                    scanner=scanner,
                    task_status=task_status,
                )
                tg.cancel_scope.cancel()  # it ended on its own (a failure): stop listening for signals

            await tg.start(watch)
            if not failed:
                click.echo("(Ctrl+C to stop)")
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    code = 128 + int(signum)
                    stop.set()
                    break
        return code

    return anyio.run(main)


# --------------------------------------------------------------------------------------------------- plumbing


def _exit_code(received: list[int]) -> int:
    """130 after SIGINT, 143 after SIGTERM."""
    return 128 + (received[0] if received else int(signal.SIGINT))


@contextmanager
def _interruptible(cancel: threading.Event) -> Iterator[list[int]]:
    """Turn the first SIGINT/SIGTERM into ``cancel.set()``; a second one aborts (KeyboardInterrupt)."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        received.append(signum)
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _ProgressView:
    """A rich progress bar on stderr fed by ``ScanProgress`` events (nothing is left on screen afterwards)."""

    def __init__(self, verb: str) -> None:
        self._verb = verb
        self._live: Any = None
        self._progress: Any = None
        self._task: Any = None
        self._status: Any = None
        self.update: Callable[[ScanProgress], None] = self._update

    def __enter__(self) -> _ProgressView:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
        from rich.text import Text

        console = Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            console=console,
        )
        self._task = self._progress.add_task(self._verb, total=None, rate="", eta="")
        self._status = Text("", no_wrap=True, overflow="ellipsis")
        self._live = Live(Group(self._progress, self._status), console=console, transient=True, refresh_per_second=8)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def _update(self, p: ScanProgress) -> None:
        eta = f"ETA {_duration(p.eta_s)}" if p.eta_s is not None else ""
        self._progress.update(
            self._task,
            total=p.total_estimate or None,
            completed=p.seen,
            rate=f"{p.files_per_s:,.0f} files/s",
            eta=eta,
        )
        counts = (
            f"probed {p.probed:,} · added {p.added:,} · updated {p.updated:,} · unchanged {p.unchanged:,}"
            f" · missing {p.missing:,} · errors {p.errors:,}"
        )
        where = f"\n{p.current_dir}" if p.current_dir else ""
        last = f"\nlast error: {p.last_error}" if p.last_error else ""
        self._status.plain = counts + where + last


def _duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03``."""
    total = int(seconds + 0.5)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


COMMANDS = [scan]
