"""The import-linter contracts in pyproject.toml (layers, headless core, SQL only in store/) all hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports() -> str:
    """The lint-imports executable of the interpreter running the tests (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "lint-imports"
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "lint-imports not found: run scripts/test, which installs the test dependencies"
    return found


def test_import_contracts_are_kept() -> None:
    """`lint-imports` exits 0 on the tree; its report is shown when a contract is broken."""
    result = subprocess.run(
        # --no-cache: no cache directory left in the checkout; building the graph takes well under a second.
        [_lint_imports(), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"lint-imports found broken contracts:\n{report}"
    assert "0 broken" in report, report
