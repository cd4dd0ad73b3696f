"""Status, stage, log-level and heartbeat colours: the one place that defines them, so every tab agrees.

Every colour is an exact xterm-256 palette entry (the number is in the comment), so tmux's 256-colour mode shows
what the author saw. Each has a dark-theme and a light-theme variant: bright cyan reads well on black, not on white.
"""

from __future__ import annotations

from rich.style import Style

from amphigory_tui.domain.jobs import JobStatus, Stage

# (dark, light)
_STATUS: dict[JobStatus, tuple[str, str]] = {
    JobStatus.QUEUED: ("#87afff", "#005faf"),  # 111 / 25
    JobStatus.RUNNING: ("#00ffff", "#008787"),  # 51 / 30
    JobStatus.PAUSED: ("#ff8700", "#d75f00"),  # 208 / 166
    JobStatus.COMPLETED: ("#00d787", "#008700"),  # 42 / 28
    JobStatus.FAILED: ("bold #ff0000", "bold #d70000"),  # 196 / 160
    JobStatus.CANCELED: ("#808080", "#808080"),  # 244
    JobStatus.SKIPPED: ("#ffd700", "#af8700"),  # 220 / 136
}

_STAGE: dict[Stage, tuple[str, str]] = {
    Stage.DOWNLOAD: ("#0087ff", "#005faf"),  # 33 / 25
    Stage.RIP: ("#af87ff", "#875faf"),  # 141 / 97
    Stage.TRANSCODE: ("#00ffff", "#008787"),  # 51 / 30
    Stage.VALIDATE: ("#ffaf00", "#af5f00"),  # 214 / 130
    Stage.UPLOAD: ("#00d787", "#008700"),  # 42 / 28
    Stage.INSERT: ("#87afff", "#005faf"),  # 111 / 25
}

_LEVEL: dict[str, tuple[str, str]] = {
    "debug": ("#808080", "#808080"),  # 244
    "info": ("#00d787", "#008700"),  # 42 / 28
    "warning": ("#ff8700", "#d75f00"),  # 208 / 166
    "error": ("bold #ff0000", "bold #d70000"),  # 196 / 160
    "critical": ("bold reverse #ff0000", "bold reverse #d70000"),
}

_HEALTH: dict[str, tuple[str, str]] = {
    "ok": ("", ""),
    "warning": ("#ffaf00", "#af5f00"),  # 214 / 130
    "error": ("bold #ff0000", "bold #d70000"),  # 196 / 160
}

DIM = ("#808080", "#808080")  # 244: labels and placeholders


def _pick(pair: tuple[str, str], dark: bool) -> Style:
    return Style.parse(pair[0] if dark else pair[1]) if pair[0] else Style()


def status_style(status: JobStatus, dark: bool = True) -> Style:
    """The colour of a job status."""
    return _pick(_STATUS[status], dark)


def stage_style(stage: Stage | None, dark: bool = True) -> Style:
    """The colour of a job stage (its progress bar too)."""
    return _pick(_STAGE[stage], dark) if stage is not None else Style()


def level_style(level: str, dark: bool = True) -> Style:
    """The colour of a log level (``warn`` counts as ``warning``)."""
    key = normalize_level(level)
    return _pick(_LEVEL.get(key, DIM), dark)


def health_style(health: str, dark: bool = True) -> Style:
    """The colour of a heartbeat's health: ``ok``, ``warning`` or ``error``."""
    return _pick(_HEALTH.get(health, _HEALTH["ok"]), dark)


def dim_style(dark: bool = True) -> Style:
    """Labels, placeholders and other quiet text."""
    return _pick(DIM, dark)


LEVELS = ("debug", "info", "warning", "error", "critical")
"""Log levels, lowest first."""


def normalize_level(level: str) -> str:
    """``WARN``/``warn``/``Warning`` → ``warning``; unknown levels pass through lower-cased."""
    low = level.lower()
    return {"warn": "warning", "fatal": "critical", "err": "error"}.get(low, low)


def level_rank(level: str) -> int:
    """Position of a level in ``LEVELS`` (unknown levels rank as info)."""
    key = normalize_level(level)
    return LEVELS.index(key) if key in LEVELS else 1
