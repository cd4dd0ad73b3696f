"""The settings screen: every key with its value and source; edits validated like the config loader; save keeps
the file's comments; discard really discards (the Go tool reset the text fields but kept the changed values).

Edits apply at once where they can (worker count, theme, poll interval, keymap) and are reverted by discard.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Static

from amphigory_tui import paths
from amphigory_tui.config import Settings, allowed_values, iter_keys, load_settings
from amphigory_tui.domain.errors import AmphigoryError, ConfigError
from amphigory_tui.ui import format as fmt
from amphigory_tui.ui.palette import dim_style
from amphigory_tui.ui.screens.prompt import PromptModal
from amphigory_tui.ui.settings_file import toml_value, write_settings_file
from amphigory_tui.ui.widgets.virtual_table import Cell, Column, VirtualTable

LIVE_KEYS = frozenset({"workers.count", "ui.dark", "ui.poll_interval_s", "ui.keymap", "logging.level"})
"""Keys that take effect at once; the others at the next start."""


@dataclass(frozen=True)
class SettingRow:
    """One key of the settings table."""

    dotted: str
    doc: str


def get_value(settings: Settings, dotted: str) -> Any:
    """The value of ``section.key``."""
    section, key = dotted.split(".", 1)
    return getattr(getattr(settings, section), key)


def parse_input(text: str, current: Any) -> Any:
    """What the user typed, as the raw value the loader would see in TOML, guided by the key's current type."""
    stripped = text.strip()
    if isinstance(current, bool):
        low = stripped.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        return stripped
    if isinstance(current, str):
        if stripped[:1] in ('"', "'"):
            parsed = _toml(stripped)
            return parsed if isinstance(parsed, str) else text
        return text
    if isinstance(current, tuple):
        if not stripped:
            return []
        if stripped.startswith("["):
            parsed = _toml(stripped)
            return parsed if parsed is not None else stripped
        return [part.strip() for part in stripped.split(",") if part.strip()]
    if isinstance(current, dict):
        if not stripped:
            return {}
        parsed = _toml(stripped)
        return parsed if parsed is not None else stripped
    parsed = _toml(stripped)
    return parsed if parsed is not None else stripped


def _toml(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return None


def display(value: Any) -> str:
    """A value as the user would write it in the file."""
    return toml_value(value)


class RowList:
    """The settings table's rows (a fixed list)."""

    def __init__(self, rows: list[SettingRow]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def item_at(self, index: int) -> SettingRow | None:
        """Row ``index``."""
        return self.rows[index] if 0 <= index < len(self.rows) else None

    def request(self, start: int, stop: int) -> None:
        """Everything is loaded already."""


SETTING_COLUMNS = (
    Column("key", "Key", 30),
    Column("value", "Value", 16, flex=1),
    Column("source", "Source", 7),
)


class SaveDiscardModal(ModalScreen[str | None]):
    """Unsaved changes: save, discard, or stay."""

    DEFAULT_CSS = """
    SaveDiscardModal { align: center middle; }
    SaveDiscardModal > Vertical { width: 60; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    SaveDiscardModal #sd-title { text-style: bold; color: $warning; }
    SaveDiscardModal Horizontal { height: auto; margin-top: 1; }
    SaveDiscardModal Button { margin-right: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "answer('save')", "Save", id="unsaved-save"),
        Binding("d", "answer('discard')", "Discard", id="unsaved-discard"),
        Binding("escape", "answer(None)", "Stay", id="unsaved-stay"),
    ]

    def compose(self) -> ComposeResult:
        """The question and three buttons."""
        with Vertical():
            yield Static("⚠ Unsaved changes", id="sd-title")
            yield Static("Save them to the config file, or discard them (the old values come back)?")
            with Horizontal():
                yield Button("Save (s)", variant="success", id="save")
                yield Button("Discard (d)", variant="error", id="discard")
                yield Button("Stay (Esc)", id="stay")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """A click answers."""
        self.dismiss(None if event.button.id == "stay" else event.button.id)

    def action_answer(self, answer: str | None) -> None:
        """A key answers."""
        self.dismiss(answer)


def keep_live_values(reloaded: Settings, live: Settings, *, saved: Iterable[str]) -> Settings:
    """``reloaded`` with the live keys that were not saved kept at their ``live`` values.

    A live value the file does not have (the Workers tab's +/-, ctrl+t) must survive saving some other key: the
    file's older value would otherwise resize the pool or switch the theme back.
    """
    out = reloaded
    for dotted in sorted(LIVE_KEYS - set(saved)):
        value = get_value(live, dotted)
        if get_value(out, dotted) != value:
            section, key = dotted.split(".", 1)
            out = replace(out, **{section: replace(getattr(out, section), **{key: value})})
    return out


def _as_on_disk(settings: Settings) -> Settings:
    """The settings as the config file (or the defaults) has them, without what was changed while running."""
    if settings.file is None or not settings.file.is_file():
        return Settings()
    try:
        return load_settings(settings.file)
    except (OSError, AmphigoryError):
        return settings  # unreadable now: no key is called live rather than a wrong one


class SettingsScreen(Screen[None]):
    """Every setting; Enter edits, ctrl+s saves, D discards, Esc leaves."""

    DEFAULT_CSS = """
    SettingsScreen #settings-title { height: auto; padding: 0 1; text-style: bold; background: $panel; }
    SettingsScreen #settings-modified { height: 1; padding: 0 1; color: $warning; display: none; }
    SettingsScreen.-modified #settings-modified { display: block; }
    SettingsScreen #settings-help { height: 3; padding: 0 1; border-top: solid $panel; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "edit", "Edit", id="settings-edit", priority=True),
        Binding("ctrl+s", "save", "Save", id="settings-save"),
        Binding("D", "discard", "Discard changes", id="settings-discard"),
        Binding("plus,equals_sign", "workers(1)", "Workers+", id="settings-workers-up"),
        Binding("minus,underscore", "workers(-1)", "Workers-", id="settings-workers-down"),
        Binding("escape,q", "leave", "Back", id="settings-back"),
    ]

    def __init__(self, settings: Settings, *, apply: Callable[[Settings], None] | None = None) -> None:
        super().__init__()
        self.saved = settings
        """What the file (or the defaults) says: what discard goes back to."""
        self.pending = settings
        """The settings with the user's edits, applied live."""
        self._apply = apply
        self._on_disk = _as_on_disk(settings)
        rows = [SettingRow(f"{section}.{key}", doc) for section, key, _default, doc in iter_keys()]
        self.list = RowList(rows)

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        """Title, unsaved banner, the table, the selected key's help, the footer."""
        yield Static("", id="settings-title", markup=False)
        yield Static("⚠ Unsaved changes (already applied where live) · ctrl+s save · D discard", id="settings-modified")
        yield VirtualTable(SETTING_COLUMNS, self.list, self._cells, id="settings-table")
        yield Static("", id="settings-help")
        yield Footer()

    @property
    def table(self) -> VirtualTable[SettingRow]:
        """The settings table."""
        return self.query_one("#settings-table", VirtualTable)

    def on_mount(self) -> None:
        """Fill in the title and the help of the first key."""
        self.table.focus()
        self._render_all()

    def target_file(self) -> Path:
        """Where save writes: the file the settings came from, else the default config file."""
        return self.saved.file or paths.default_config_file()

    @property
    def changed(self) -> list[str]:
        """Keys whose pending value differs from the saved one."""
        return [
            row.dotted
            for row in self.list.rows
            if get_value(self.pending, row.dotted) != get_value(self.saved, row.dotted)
        ]

    def _cells(self, row: SettingRow, dark: bool) -> Sequence[Cell]:
        value = get_value(self.pending, row.dotted)
        if row.dotted in self.changed:
            source: Cell = ("edited", dim_style(dark) + _bold())
        elif row.dotted in LIVE_KEYS and get_value(self.saved, row.dotted) != get_value(self._on_disk, row.dotted):
            source = ("live", _bold())  # changed while running (the Workers tab's +/-, ctrl+t), not in the file
        elif row.dotted in self.saved.from_file and self.saved.file:
            source = "file"
        else:
            source = ("default", dim_style(dark))
        return [row.dotted, fmt.printable(display(value)), source]

    def _render_all(self) -> None:
        file = self.saved.file
        where = f"file {file}" if file else f"no config file; save writes {self.target_file()}"
        self.query_one("#settings-title", Static).update(f"Settings · {where}")
        self.set_class(bool(self.changed), "-modified")
        self._render_help()
        self.table.invalidate()

    def _render_help(self) -> None:
        row = self.list.item_at(self.table.cursor)
        if row is None:
            return
        when = "applies at once" if row.dotted in LIVE_KEYS else "applies at the next start"
        text = Text()
        text.append(row.dotted, style="bold")
        text.append(f" — {row.doc}\n")
        text.append(f"Allowed: {allowed_values(row.dotted)} · {when}", style="dim")
        self.query_one("#settings-help", Static).update(text)

    @on(VirtualTable.CursorMoved)
    def _moved(self, event: VirtualTable.CursorMoved) -> None:
        self._render_help()

    @on(VirtualTable.Activated)
    def _activated(self, event: VirtualTable.Activated) -> None:
        event.stop()
        self.action_edit()

    # ------------------------------------------------------------------ editing
    def set_value(self, dotted: str, raw: Any) -> str | None:
        """Validate and apply one value; the error message if it is refused."""
        try:
            new = self.pending.with_value(dotted, raw)
        except ConfigError as exc:
            return str(exc)
        self.pending = new
        if self._apply is not None:
            self._apply(new)
        self._render_all()
        return None

    def action_edit(self) -> None:
        """Edit the key under the cursor."""
        row = self.list.item_at(self.table.cursor)
        if row is None:
            return
        current = get_value(self.pending, row.dotted)
        start = current if isinstance(current, str) else display(current)

        def validate(text: str) -> str | None:
            try:
                self.pending.with_value(row.dotted, parse_input(text, current))
            except ConfigError as exc:
                return str(exc).split(": ", 1)[-1]
            return None

        def done(text: str | None) -> None:
            if text is not None:
                error = self.set_value(row.dotted, parse_input(text, current))
                if error:
                    self.notify(error, severity="error")
                else:
                    self.notify(f"{row.dotted} = {display(get_value(self.pending, row.dotted))}")

        self.app.push_screen(
            PromptModal(
                f"Edit {row.dotted}",
                start,
                help_text=f"{row.doc}\nAllowed: {allowed_values(row.dotted)}",
                validate=validate,
            ),
            done,
        )

    def action_workers(self, delta: int) -> None:
        """Add or remove a worker (applies at once)."""
        count = self.pending.workers.count + delta
        error = self.set_value("workers.count", count)
        if error:
            self.notify(f"Workers stay at {self.pending.workers.count}: {error}", severity="warning")
        else:
            self.notify(f"workers.count = {count}")

    def action_save(self) -> None:
        """Write the changed keys to the config file, keeping its comments."""
        changes = {dotted: get_value(self.pending, dotted) for dotted in self.changed}
        if not changes:
            self.notify("No unsaved changes")
            return
        path = self.target_file()
        try:
            write_settings_file(path, changes)
            reloaded = load_settings(path)
        except (OSError, ValueError, AmphigoryError) as exc:
            self.notify(f"Could not save {path}: {exc}", severity="error", timeout=10)
            return
        live = keep_live_values(reloaded, self.pending, saved=changes)
        self._on_disk = reloaded
        self.saved = self.pending = live
        if self._apply is not None:
            self._apply(live)
        self.notify(f"Saved {len(changes)} setting{'s' if len(changes) != 1 else ''} to {path}")
        self._render_all()

    def action_discard(self) -> None:
        """Throw the edits away: the saved values come back, live ones included."""
        if not self.changed:
            self.notify("No unsaved changes")
            return
        self.pending = self.saved
        if self._apply is not None:
            self._apply(self.saved)
        self.notify("Changes discarded")
        self._render_all()

    def action_leave(self) -> None:
        """Back to the tabs; with unsaved changes, ask first."""
        if not self.changed:
            self.dismiss(None)
            return

        def answered(answer: str | None) -> None:
            if answer == "save":
                self.action_save()
                if not self.changed:
                    self.dismiss(None)
            elif answer == "discard":
                self.action_discard()
                self.dismiss(None)

        self.app.push_screen(SaveDiscardModal(), answered)


def _bold() -> Any:
    from rich.style import Style

    return Style(bold=True)
