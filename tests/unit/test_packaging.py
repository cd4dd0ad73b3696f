"""The wheel carries everything `pip install .` needs to run amphigory: the migrations and the console script."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_migrations_and_the_amphigory_command(tmp_path: Path) -> None:
    """Build the real wheel; the alembic scripts are inside the package and `amphigory` is an entry point."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("amphigory-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "amphigory_tui/migrations/env.py" in names
    assert "amphigory_tui/migrations/versions/0001_initial_schema.py" in names
    assert "amphigory_tui/py.typed" in names
    assert "amphigory_tui/ui/app.tcss" in names
    assert "amphigory = amphigory_tui.cli:main" in scripts
