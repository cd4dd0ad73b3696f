"""Fault tests: real worker processes, real HandBrakeCLI, real signals (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Rig


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[type[Rig]]:
    """``make_rig(**options)`` builds a rig in this test's temp dir; every rig is torn down afterwards."""
    made: list[Rig] = []

    def factory(**kwargs: object) -> Rig:
        r = Rig(tmp_path / f"rig{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(r)
        return r

    yield factory  # type: ignore[misc]
    for r in made:
        r.close()
