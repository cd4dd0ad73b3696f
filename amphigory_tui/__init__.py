"""amphigory: turn discs and a messy media library into a clean, transcoded library."""

__version__ = "0.1.0"
