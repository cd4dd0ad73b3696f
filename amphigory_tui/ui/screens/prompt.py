"""PromptModal: one line of input with a validator; returns the accepted text or None on escape."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

Validator = Callable[[str], str | None]
"""Returns an error message, or None when the text is acceptable."""


class PromptModal(ModalScreen[str | None]):
    """Ask for a value; Enter checks it with ``validate`` and stays open with the error if it is refused."""

    DEFAULT_CSS = """
    PromptModal { align: center middle; }
    PromptModal > Vertical {
        width: 70; max-width: 95%; height: auto; border: thick $success; background: $surface; padding: 1 2;
    }
    PromptModal #prompt-title { text-style: bold; }
    PromptModal #prompt-help { color: $text-muted; }
    PromptModal #prompt-error { color: $error; height: auto; }
    PromptModal #prompt-keys { color: $text-muted; text-style: italic; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="prompt-cancel")]

    def __init__(
        self,
        title: str,
        value: str = "",
        *,
        help_text: str = "",
        validate: Validator | None = None,
        restrict: str | None = None,
        max_length: int = 0,
    ) -> None:
        super().__init__()
        self._title = title
        self._value = value
        self._help = help_text
        self._validate = validate
        self._restrict = restrict
        self._max_length = max_length

    def compose(self) -> ComposeResult:
        """Title, help, the input, an error line and the keys."""
        with Vertical():
            yield Static(self._title, id="prompt-title")
            if self._help:
                yield Static(self._help, id="prompt-help", markup=False)
            yield Input(self._value, restrict=self._restrict, max_length=self._max_length, id="prompt-input")
            yield Static("", id="prompt-error", markup=False)
            yield Static("Enter save · Esc cancel", id="prompt-keys")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        error = self._validate(event.value) if self._validate else None
        if error:
            self.query_one("#prompt-error", Static).update(f"⚠ {error}")
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        """Leave without a value."""
        self.dismiss(None)


def priority_validator(text: str) -> str | None:
    """A priority is a whole number from 0 to 100."""
    if not text.strip().isdigit():
        return "enter a whole number from 0 to 100"
    if not 0 <= int(text) <= 100:
        return f"{int(text)} is out of range: a priority is from 0 to 100"
    return None
