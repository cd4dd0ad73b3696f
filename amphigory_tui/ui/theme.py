"""amphigory's two themes, built only from xterm-256 colours so tmux (256 colours) shows them faithfully."""

from __future__ import annotations

from textual.theme import Theme

DARK = "amphigory-dark"
LIGHT = "amphigory-light"

DARK_THEME = Theme(
    name=DARK,
    primary="#5f5fd7",  # 62
    secondary="#8787d7",  # 104
    accent="#ff5faf",  # 205
    warning="#ffaf00",  # 214
    error="#ff5f5f",  # 203
    success="#00d787",  # 42
    foreground="#d0d0d0",  # 252
    background="#1c1c1c",  # 234
    surface="#262626",  # 235
    panel="#303030",  # 236
    dark=True,
)

LIGHT_THEME = Theme(
    name=LIGHT,
    primary="#5f5faf",  # 61
    secondary="#5f87af",  # 67
    accent="#d7005f",  # 161
    warning="#af5f00",  # 130
    error="#d70000",  # 160
    success="#008700",  # 28
    foreground="#262626",  # 235
    background="#eeeeee",  # 255
    surface="#e4e4e4",  # 254
    panel="#d0d0d0",  # 252
    dark=False,
)


def theme_name(dark: bool) -> str:
    """The theme for a dark or light preference."""
    return DARK if dark else LIGHT
