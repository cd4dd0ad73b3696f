"""The headless core imports neither Textual nor Rich, checked at run time in a clean interpreter.

The import-linter contracts in pyproject.toml check this statically, and that is not enough:

- import-linter sees ``import`` statements in *our* code only. A third-party package we depend on may import
  ``rich`` itself (many CLIs and loggers do), and that import is invisible to a static scan of amphigory_tui.
- Deferred imports (``import textual`` inside a function, as ``cli.py`` does for the ``tui`` command) and
  ``importlib.import_module("...")`` look the same to a static scan whether they run at import time or never.

So for every headless module this test starts a fresh interpreter, imports the module alone and looks at
``sys.modules``. Modules under domain/, store/, services/ and pool/ are discovered from the file tree, so a
new module is covered the day it is added.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "amphigory_tui"
HEADLESS_PACKAGES = ("domain", "store", "services", "pool")
# Named explicitly: they are the headless entry points, and cli.py must defer its one import of the UI.
NAMED = ("domain.jobs", "config", "paths", "store", "services", "pool", "cli")
FORBIDDEN = ("textual", "rich", f"{PACKAGE}.ui")

PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
forbidden = tuple(sys.argv[2:])
print(json.dumps(sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden))))
"""


def _exists(name: str) -> bool:
    """Whether module ``name`` has a file in the tree (cli.py may not exist yet); nothing is imported here."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _walk(directory: Path, prefix: str) -> list[str]:
    """Every module and package below ``directory``, found from the files alone (nothing is imported here)."""
    found: list[str] = []
    for info in pkgutil.iter_modules([str(directory)]):
        name = f"{prefix}.{info.name}"
        found.append(name)
        if info.ispkg:
            found += _walk(directory / info.name, name)
    return found


def headless_modules() -> list[str]:
    """The modules that must import without Textual or Rich."""
    names = [f"{PACKAGE}.{n}" for n in NAMED]
    for sub in HEADLESS_PACKAGES:
        names.append(f"{PACKAGE}.{sub}")
        names += _walk(ROOT / PACKAGE / sub, f"{PACKAGE}.{sub}")
    return sorted({n for n in names if _exists(n)})


MODULES = headless_modules()


def test_discovery_finds_the_headless_core() -> None:
    """Discovery really walks the tree: the domain modules that exist today are all listed."""
    domain_files = {p.stem for p in (ROOT / PACKAGE / "domain").glob("*.py") if p.stem != "__init__"}
    assert domain_files, "amphigory_tui/domain/ has no modules"
    assert {f"{PACKAGE}.domain.{stem}" for stem in domain_files} <= set(MODULES)
    assert f"{PACKAGE}.config" in MODULES


def _probe(module: str) -> subprocess.CompletedProcess[str]:
    """Import ``module`` alone in a fresh interpreter and report which forbidden modules it loaded."""
    return subprocess.run(
        [sys.executable, "-c", PROBE, module, *FORBIDDEN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def probes() -> dict[str, subprocess.CompletedProcess[str]]:
    """Every module's probe, run a few at a time: each costs an interpreter start plus its imports."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return dict(zip(MODULES, pool.map(_probe, MODULES), strict=True))


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_without_textual_or_rich(
    module: str, probes: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    """Importing ``module`` in a fresh interpreter loads no textual, rich or amphigory_tui.ui module."""
    result = probes[module]
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    leaked = json.loads(result.stdout.strip().splitlines()[-1])
    assert leaked == [], f"importing {module} loaded {', '.join(leaked)}"
