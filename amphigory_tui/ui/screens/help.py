"""The help screen: every key of every tab, screen and dialog, as remapped by ``[ui] keymap``, with the binding
ids to remap them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def _bindings(items: Iterable[BindingType]) -> list[Binding]:
    out: list[Binding] = []
    for item in items:
        if isinstance(item, Binding):
            out.append(item)
        else:
            out.append(Binding(*item))
    return out


TEXTUAL_BINDINGS = [
    # Textual's own App bindings (App.BINDINGS): they have no id, so the keymap cannot move them.
    Binding("ctrl+q", "quit", "Quit, as q (Textual's; no id)"),
    Binding("ctrl+c", "help_quit", "Quit, as q (Textual's; no id)"),
]


def binding_groups() -> list[tuple[str, list[Binding]]]:
    """Every binding of the app, grouped by where it applies, as the help screen shows them."""
    from amphigory_tui.ui.app import AmphigoryApp
    from amphigory_tui.ui.screens.action_menu import ActionMenu
    from amphigory_tui.ui.screens.job_detail import JobDetailScreen
    from amphigory_tui.ui.screens.prompt import PromptModal
    from amphigory_tui.ui.screens.settings import SaveDiscardModal, SettingsScreen
    from amphigory_tui.ui.tabs.log import LogPane
    from amphigory_tui.ui.tabs.queue import QueuePane
    from amphigory_tui.ui.tabs.scan import ScanPane
    from amphigory_tui.ui.tabs.workers import WorkersPane
    from amphigory_tui.ui.widgets.confirm import ConfirmModal
    from amphigory_tui.ui.widgets.job_table import JobTable
    from amphigory_tui.ui.widgets.log_view import LogView
    from amphigory_tui.ui.widgets.virtual_table import VirtualTable

    return [
        (
            "Everywhere",
            [
                *_bindings(AmphigoryApp.BINDINGS),
                Binding("ctrl+p", "command_palette", "Command palette"),
                *TEXTUAL_BINDINGS,
            ],
        ),
        ("Tables", _bindings(VirtualTable.BINDINGS)),
        ("Scan tab (1)", _bindings(ScanPane.BINDINGS)),
        ("Queue tab (2)", _bindings(JobTable.BINDINGS) + _bindings(QueuePane.BINDINGS)),
        ("Workers tab (3)", _bindings(WorkersPane.BINDINGS)),
        ("Log tab (4)", _bindings(LogPane.BINDINGS) + _bindings(LogView.BINDINGS)),
        ("Action menu (Enter on a job)", _bindings(ActionMenu.BINDINGS)),
        ("Job details (i)", _bindings(JobDetailScreen.BINDINGS)),
        ("Settings screen (S)", _bindings(SettingsScreen.BINDINGS)),
        ("Unsaved settings (Esc on the settings screen)", _bindings(SaveDiscardModal.BINDINGS)),
        ("Yes/no questions (quit, P/C on matches)", _bindings(ConfirmModal.BINDINGS)),
        ("Value prompts (priority, a setting)", _bindings(PromptModal.BINDINGS)),
        ("This help (?)", _bindings(HelpScreen.BINDINGS)),
    ]


def keys_of(binding: Binding, keymap: Mapping[str, str]) -> list[str]:
    """The keys a binding answers to, after the user's keymap."""
    keys = keymap.get(binding.id, binding.key) if binding.id else binding.key
    return [k.strip() for k in keys.split(",") if k.strip()]


class HelpScreen(ModalScreen[None]):
    """Every binding, grouped by where it applies; Esc or ? closes."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; max-width: 100%; height: 1fr; border: round $primary; background: $surface; padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,q", "close", "Close", id="help-close")]

    def compose(self) -> ComposeResult:
        """The key table in a scrolling box."""
        with VerticalScroll() as body:
            # Border titles are markup: the [ui] of the config section needs escaping.
            body.border_title = 'Keys · Esc closes · remap in the config file: \\[ui] keymap = { id = "keys" }'
            yield Static(self._table(), id="help-text")

    def _table(self) -> Group:
        keymap: Mapping[str, str] = self.app.settings.ui.keymap if hasattr(self.app, "settings") else {}
        parts: list[RenderableType] = []
        for title, bindings in binding_groups():
            if parts:
                parts.append(Text(""))
            # The title is a line of its own: in the 16-column keys column a long one ("Unsaved settings…") was cut.
            parts.append(Text(title, style="bold underline"))
            table = Table(box=None, expand=True, show_header=False, pad_edge=False)
            table.add_column("Keys", no_wrap=True, style="bold", width=16)
            table.add_column("What", ratio=1)
            table.add_column("Id", no_wrap=True, style="dim", width=22)
            seen: set[tuple[str, str]] = set()
            for binding in bindings:
                keys = keys_of(binding, keymap)
                shown = " ".join(self.app.get_key_display(Binding(k, binding.action)) for k in keys)
                if (shown, binding.description) in seen:
                    continue
                seen.add((shown, binding.description))
                table.add_row(shown, binding.tooltip or binding.description, binding.id or "")
            parts.append(table)
        return Group(*parts)

    def action_close(self) -> None:
        """Back."""
        self.dismiss(None)
