"""ConfirmModal: a yes/no question (y / n / escape), returning a bool (as Posting's confirmation modal)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmModal(ModalScreen[bool]):
    """Ask before something irreversible or disruptive."""

    DEFAULT_CSS = """
    ConfirmModal { align: center middle; }
    ConfirmModal > Vertical {
        width: auto; max-width: 70; min-width: 40; height: auto;
        border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmModal #confirm-title { text-style: bold; color: $warning; }
    ConfirmModal #confirm-text { margin: 1 0; }
    ConfirmModal Horizontal { height: auto; align-horizontal: right; }
    ConfirmModal Button { margin-left: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]

    def __init__(self, title: str, text: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self._title, self._text, self._yes, self._no = title, text, yes, no

    def compose(self) -> ComposeResult:
        """The question and two buttons."""
        with Vertical():
            yield Static(self._title, id="confirm-title")
            yield Static(self._text, id="confirm-text")
            with Horizontal():
                yield Button(f"{self._yes} (y)", variant="warning", id="yes")
                yield Button(f"{self._no} (n)", id="no")

    def on_mount(self) -> None:
        """Focus "no": Enter on a modal that appeared by surprise must not do the disruptive thing."""
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """A click answers."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """y or n answers."""
        self.dismiss(answer)
