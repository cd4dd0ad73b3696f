"""Pure domain types: no third-party imports, no I/O."""
