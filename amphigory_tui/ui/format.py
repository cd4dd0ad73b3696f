"""Small pure formatters shared by the tabs: sizes, durations, ages, progress bars."""

from __future__ import annotations

import time

from rich.style import Style

BAR_FULL = "█"
BAR_EMPTY = "░"


def human_size(n: int | float | None) -> str:
    """Decimal units, as disks are sold: ``1.5 GB``."""
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop always returns


def gigabytes(n: int | float) -> str:
    """Bytes as GB with one decimal, for the stats line."""
    return f"{n / 1e9:.1f}"


def duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h04m``, ``3d02h``; ``—`` when unknown."""
    if seconds is None or seconds < 0:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age(now: float, then: float | None) -> str:
    """How long ago ``then`` was: ``4s``, ``2m10s``."""
    if then is None:
        return "—"
    return duration(max(now - then, 0.0))


def clock_time(ts: float | None) -> str:
    """A timestamp as local ``YYYY-MM-DD HH:MM:SS``."""
    if ts is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def short_time(ts: float | None) -> str:
    """A timestamp as local ``HH:MM:SS``."""
    if ts is None:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def fps(value: float | None) -> str:
    """Frames per second with one decimal."""
    return "—" if value is None else f"{value:.1f}"


def percent(value: float | None) -> str:
    """A percentage with one decimal."""
    return "—" if value is None else f"{value:.1f}%"


def progress_bar(pct: float, width: int, style: Style | None = None) -> list[tuple[str, Style]]:
    """``█████░░░░░`` filled to ``pct`` (0–100) in ``style``, empty cells dimmed: styled pieces of text."""
    width = max(width, 1)
    pct = min(max(pct, 0.0), 100.0)
    filled = round(pct / 100 * width)
    return [(BAR_FULL * filled, style or Style()), (BAR_EMPTY * (width - filled), Style(dim=True))]


def ellipsize(text: str, width: int) -> str:
    """Cut ``text`` to ``width`` cells, keeping its end (file names differ at the end), with a leading ``…``."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width == 1:
        return "…"
    return "…" + text[-(width - 1) :]


def printable(text: str) -> str:
    """Control characters (a newline in a hostile file name) shown as ``?`` so a row stays one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)
