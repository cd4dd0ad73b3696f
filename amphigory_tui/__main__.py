"""Allow ``python -m amphigory_tui``."""

from amphigory_tui.cli import main

main()
