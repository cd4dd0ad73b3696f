"""Settings: typed, frozen, documented, loaded from TOML with errors that name the file and the key.

Discovery: ``--config PATH``, else ``$AMPHIGORY_CONFIG``, else ``<user config dir>/config.toml``; with no file at all
the defaults below work. Every key is in ``config.example.toml`` with its default and a comment, and a test checks
that file parses to exactly these defaults.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from amphigory_tui import paths
from amphigory_tui.domain.errors import ConfigError


def _spec(
    default: Any,
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    absolute: bool = False,
    kind: str | None = None,
) -> Any:
    """A dataclass field carrying its documentation and validation rules (``kind``: "database_url" or "tool")."""
    meta = {"doc": doc, "lo": lo, "hi": hi, "choices": choices, "absolute": absolute, "kind": kind}
    if isinstance(default, (list, dict, tuple)):
        frozen = tuple(default) if isinstance(default, (list, tuple)) else dict(default)
        return field(default_factory=lambda: frozen, metadata=meta)
    return field(default=default, metadata=meta)


DEFAULT_EXTENSIONS = (
    "mkv",
    "mp4",
    "m4v",
    "avi",
    "mov",
    "ts",
    "m2ts",
    "mpg",
    "mpeg",
    "wmv",
    "webm",
    "flv",
    "vob",
)


@dataclass(frozen=True)
class DatabaseSettings:
    """[database]"""

    url: str = _spec("", "SQLAlchemy URL; empty = SQLite file amphigory.db in the user data dir.", kind="database_url")


@dataclass(frozen=True)
class LibrarySettings:
    """[library]"""

    roots: tuple[str, ...] = _spec((), "Absolute paths of the library folders to scan.", absolute=True)


@dataclass(frozen=True)
class PathsSettings:
    """[paths]"""

    work_dir: str = _spec("", "Absolute path for job temp files; empty = <user data dir>/work.", absolute=True)
    backup_dir: str = _spec(
        "", "Absolute path where originals go when transcode.original_policy = 'backup'.", absolute=True
    )


@dataclass(frozen=True)
class WorkersSettings:
    """[workers]"""

    count: int = _spec(2, "Worker loops in this process (changeable live).", lo=0, hi=64)
    heartbeat_interval_s: int = _spec(30, "Seconds between heartbeats of a running job.", lo=1, hi=3600)
    stall_timeout_s: int = _spec(300, "A job whose progress has not moved for this long is stalled.", lo=1, hi=86400)
    kill_grace_s: float = _spec(8.0, "Seconds between SIGTERM and SIGKILL when stopping a tool.", lo=0, hi=60)
    poll_interval_s: float = _spec(2.0, "Seconds an idle worker waits before asking for a job again.", lo=0.01, hi=60)
    stall_check_interval_s: float = _spec(
        60.0, "Seconds between the checks for stalled jobs and dead workers every amphigory runs.", lo=0.1, hi=3600
    )


@dataclass(frozen=True)
class JobsSettings:
    """[jobs]"""

    max_retries: int = _spec(3, "Attempts a job gets before it is failed (a pause uses none).", lo=1, hi=20)
    retry_delay_s: float = _spec(30.0, "Delay before the second attempt.", lo=0, hi=86400)
    retry_backoff: float = _spec(4.0, "Each further retry waits this many times longer.", lo=1, hi=10)


@dataclass(frozen=True)
class ToolsSettings:
    """[tools]"""

    handbrake: str = _spec("HandBrakeCLI", "HandBrakeCLI: a name on PATH or an absolute path.", kind="tool")
    ffprobe: str = _spec("ffprobe", "ffprobe: a name on PATH or an absolute path.", kind="tool")
    ffmpeg: str = _spec("ffmpeg", "ffmpeg: a name on PATH or an absolute path.", kind="tool")
    makemkvcon: str = _spec("makemkvcon", "makemkvcon: a name on PATH or an absolute path.", kind="tool")


@dataclass(frozen=True)
class RulesSettings:
    """[rules]"""

    target_codec: str = _spec("hevc", "Codec files are transcoded to.", choices=("hevc", "h264", "av1", "vp9"))
    min_size_mb: float = _spec(0.0, "Files smaller than this are left alone.", lo=0)
    exclude_patterns: tuple[str, ...] = _spec(
        ("*sample*", "*trailer*"), "Globs matched (case-insensitively) against file name and full path."
    )
    extensions: tuple[str, ...] = _spec(DEFAULT_EXTENSIONS, "File extensions the scanner looks at.")
    min_expected_savings_pct: float = _spec(10.0, "Skip files whose estimated saving is lower.", lo=0, hi=100)


@dataclass(frozen=True)
class ScannerSettings:
    """[scanner]"""

    probe_workers: int = _spec(0, "Probe processes; 0 = one per CPU.", lo=0, hi=64)
    probe_timeout_s: float = _spec(30.0, "A probe that takes longer is killed and recorded as an error.", lo=0.1)
    follow_symlinks: bool = _spec(False, "Follow symbolic links (never into loops).")
    batch_size: int = _spec(200, "Files per checkpointed commit.", lo=1, hi=100000)
    batch_interval_s: float = _spec(2.0, "Commit at least this often while scanning.", lo=0.1, hi=600)
    watch_hold_s: float = _spec(5.0, "A new file must keep its size this long before it is probed.", lo=0, hi=3600)
    auto_queue: bool = _spec(False, "Queue new candidates found by watch mode automatically.")
    watch: bool = _spec(False, "Watch the library roots for new or changed files while the worker or the TUI runs.")


@dataclass(frozen=True)
class TranscodeSettings:
    """[transcode]"""

    preset_sd: str = _spec("H.265 MKV 480p30", "Preset for sources up to 576 lines.")
    preset_720p: str = _spec("H.265 MKV 720p30", "Preset for sources up to 720 lines.")
    preset_1080p: str = _spec("H.265 MKV 1080p30", "Preset for sources up to 1080 lines.")
    preset_2160p: str = _spec("H.265 MKV 2160p60 4K", "Preset for larger sources.")
    preset_import_file: str = _spec("", "Absolute path of a HandBrake preset file to import.", absolute=True)
    extra_args: tuple[str, ...] = _spec((), "Extra HandBrakeCLI arguments, after the preset.")
    output_container: str = _spec("mkv", "Container of the output.", choices=("mkv", "mp4"))
    original_policy: str = _spec(
        "keep",
        "What happens to the original once the new file is in place.",
        choices=("keep", "backup", "delete"),
    )
    require_smaller: bool = _spec(True, "A larger output is discarded and the job skipped.")
    free_space_factor: float = _spec(2.0, "Free space needed in work_dir, as a multiple of the source.", lo=1, hi=10)


@dataclass(frozen=True)
class UiSettings:
    """[ui]"""

    dark: bool = _spec(True, "Dark theme (toggle with ctrl+t).")
    poll_interval_s: float = _spec(0.5, "How often the TUI looks for changes by other processes.", lo=0.1, hi=60)
    keymap: dict[str, str] = _spec({}, 'Binding id -> keys, e.g. queue-all = "a,ctrl+a".')


@dataclass(frozen=True)
class LoggingSettings:
    """[logging]"""

    level: str = _spec("info", "Lowest level written to the log.", choices=("debug", "info", "warning", "error"))


SECTIONS: dict[str, type] = {
    "database": DatabaseSettings,
    "library": LibrarySettings,
    "paths": PathsSettings,
    "workers": WorkersSettings,
    "jobs": JobsSettings,
    "tools": ToolsSettings,
    "rules": RulesSettings,
    "scanner": ScannerSettings,
    "transcode": TranscodeSettings,
    "ui": UiSettings,
    "logging": LoggingSettings,
}


@dataclass(frozen=True)
class Settings:
    """Everything amphigory can be configured with."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    library: LibrarySettings = field(default_factory=LibrarySettings)
    paths: PathsSettings = field(default_factory=PathsSettings)
    workers: WorkersSettings = field(default_factory=WorkersSettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)
    tools: ToolsSettings = field(default_factory=ToolsSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    scanner: ScannerSettings = field(default_factory=ScannerSettings)
    transcode: TranscodeSettings = field(default_factory=TranscodeSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    file: Path | None = None
    """The TOML file these settings came from, if any."""
    from_file: frozenset[str] = frozenset()
    """Dotted keys (``workers.count``) whose value the file set."""

    @property
    def database_url(self) -> str:
        """The database URL, with the default SQLite file filled in."""
        return self.database.url or paths.default_database_url()

    @property
    def work_dir(self) -> Path:
        """The work directory, with the default filled in."""
        return Path(self.paths.work_dir) if self.paths.work_dir else paths.default_work_dir()

    def source_of(self, dotted: str) -> str:
        """Where a key's value came from: the file's path or ``default``."""
        return str(self.file) if dotted in self.from_file and self.file else "default"

    def with_value(self, dotted: str, raw: Any) -> Settings:
        """A copy with one key changed, validated like the loader does."""
        section, key = dotted.split(".", 1)
        cls = SECTIONS.get(section)
        if cls is None:
            raise ConfigError(f"unknown section [{section}]")
        value = _coerce(cls, key, raw, where=f"[{section}] {key}")
        new = replace(self, **{section: replace(getattr(self, section), **{key: value})})
        _check_cross(new, where=str(self.file or "settings"))
        return new


_URL_ALLOWED = "'' (the default SQLite file), sqlite:////absolute/path.db or postgresql+psycopg://user@host/db"
_URL_SCHEME = re.compile(r"^(?P<backend>[a-z][a-z0-9]*)(?:\+[a-z0-9_]+)?://")


def _database_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be amphigory's database, or None. Checked here so a bad URL fails with the config file
    named and before any database is opened (the store checks it again when it builds its engines)."""
    if not url:
        return None
    match = _URL_SCHEME.match(url)
    if match is None:
        return f"{url!r} is not a database URL"
    backend = match["backend"]
    if backend == "sqlite":
        # sqlite:///rel.db is relative to wherever amphigory happens to start: a second, empty queue.
        path = url[match.end() :].split("?", 1)[0].removeprefix("/")
        if not path.startswith("/") or path == "/":
            return f"{url!r} is not an absolute SQLite file path (write four slashes: sqlite:////path/to/amphigory.db)"
        return None
    if backend not in ("postgresql", "postgres"):
        return f"{url!r} uses {backend!r}, which amphigory does not support"
    return None


def _describe(ftype: Any, meta: Mapping[str, Any]) -> str:
    """The allowed values of a field, in words."""
    if meta.get("kind") == "database_url":
        return _URL_ALLOWED
    if meta.get("kind") == "tool":
        return "a program name found on PATH (no slash) or an absolute path"
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(ftype)
    if kind is None:
        origin = typing.get_origin(ftype)
        kind = "a table of strings" if origin is dict else "a list of strings"
        if meta.get("absolute"):
            kind = "a list of absolute paths"
    elif meta.get("absolute"):
        kind = "an absolute path (or empty)"
    if lo is not None and hi is not None:
        return f"{kind} from {lo:g} to {hi:g}"
    if lo is not None:
        return f"{kind} ≥ {lo:g}"
    return kind


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(cls: type, key: str, raw: Any, *, where: str) -> Any:
    """Validate one raw TOML value against its field; return the typed value."""
    known = {f.name: f for f in fields(cls)}
    if key not in known:
        raise ConfigError(f"{where}: unknown key; allowed keys: {', '.join(sorted(known))}")
    fdef = known[key]
    ftype = _hints(cls)[key]
    meta = fdef.metadata
    allowed = _describe(ftype, meta)

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{where}: {problem}; allowed: {allowed}")

    if ftype is bool:
        if not isinstance(raw, bool):
            raise bad(f"{raw!r} is not a boolean")
        return raw
    if ftype is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise bad(f"{raw!r} is not an integer")
        value: Any = raw
    elif ftype is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise bad(f"{raw!r} is not a number")
        value = float(raw)
    elif ftype is str:
        if not isinstance(raw, str):
            raise bad(f"{raw!r} is not a string")
        if "\n" in raw or "\x00" in raw:
            raise bad("contains a newline or NUL")
        value = raw
        if meta.get("absolute") and raw and not os.path.isabs(raw):
            raise bad(f"{raw!r} is a relative path")
        if meta.get("choices") and raw not in meta["choices"]:
            raise bad(f"{raw!r} is not allowed")
        if meta.get("kind") == "database_url" and (problem := _database_url_problem(raw)):
            raise bad(problem)
        # "bin/HandBrakeCLI" would be looked up relative to wherever amphigory starts.
        if meta.get("kind") == "tool" and (not raw or ("/" in raw and not os.path.isabs(raw))):
            raise bad(f"{raw!r} is a relative path" if raw else "is empty")
    elif typing.get_origin(ftype) is dict:
        if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            raise bad(f"{raw!r} is not a table of strings")
        return dict(raw)
    else:
        if not isinstance(raw, (list, tuple)) or not all(isinstance(v, str) for v in raw):
            raise bad(f"{raw!r} is not a list of strings")
        if meta.get("absolute"):
            for item in raw:
                if not os.path.isabs(item):
                    raise bad(f"{item!r} is a relative path")
        return tuple(raw)
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise bad(f"{raw!r} is out of range")
    return value


def _check_cross(settings: Settings, *, where: str) -> None:
    """Rules that involve more than one key."""
    w = settings.workers
    if w.heartbeat_interval_s >= w.stall_timeout_s:
        raise ConfigError(
            f"{where}: [workers] heartbeat_interval_s = {w.heartbeat_interval_s} must be less than "
            f"stall_timeout_s = {w.stall_timeout_s}; allowed: an integer from 1 to stall_timeout_s - 1"
        )
    if settings.transcode.original_policy == "backup" and not settings.paths.backup_dir:
        raise ConfigError(
            f"{where}: [transcode] original_policy = 'backup' needs [paths] backup_dir; allowed: an absolute path"
        )


def settings_from_mapping(data: Mapping[str, Any], *, file: Path | None = None) -> Settings:
    """Build validated ``Settings`` from a parsed TOML document."""
    where_file = str(file) if file else "<settings>"
    sections: dict[str, Any] = {}
    from_file: set[str] = set()
    for name, table in data.items():
        cls = SECTIONS.get(name)
        if cls is None:
            raise ConfigError(f"{where_file}: unknown section [{name}]; allowed sections: {', '.join(SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where_file}: [{name}] must be a table; allowed: a [{name}] section with keys")
        values = {key: _coerce(cls, key, raw, where=f"{where_file}: [{name}] {key}") for key, raw in table.items()}
        from_file.update(f"{name}.{key}" for key in values)
        sections[name] = cls(**values)
    settings = Settings(**sections, file=file, from_file=frozenset(from_file))
    _check_cross(settings, where=where_file)
    return settings


def resolve_config_path(cli_path: Path | None) -> tuple[Path, bool]:
    """The config file to read and whether the user named it explicitly."""
    if cli_path is not None:
        return cli_path, True
    env = paths.config_file_from_env()
    if env is not None:
        return env, True
    return paths.default_config_file(), False


def load_settings(cli_path: Path | None = None) -> Settings:
    """Find, read and validate the config file; defaults when there is none."""
    path, explicit = resolve_config_path(cli_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: config file does not exist") from None
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    return settings_from_mapping(data, file=path)


def iter_keys() -> list[tuple[str, str, Any, str]]:
    """Every key as ``(section, key, default, doc)``, in declaration order."""
    out: list[tuple[str, str, Any, str]] = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
            out.append((section, f.name, default, str(f.metadata.get("doc", ""))))
    return out


def allowed_values(dotted: str) -> str:
    """Words describing what a key accepts (for the settings screen)."""
    section, key = dotted.split(".", 1)
    cls = SECTIONS[section]
    fdef = {f.name: f for f in fields(cls)}[key]
    return _describe(_hints(cls)[key], fdef.metadata)
