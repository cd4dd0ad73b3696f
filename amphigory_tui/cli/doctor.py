"""``amphigory doctor``: is everything amphigory needs here, and how to fix what is not."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from amphigory_tui import paths
from amphigory_tui.cli.context import CliContext, pass_cli
from amphigory_tui.config import Settings
from amphigory_tui.domain.errors import AmphigoryError

# (config key, how to install it, needed for what, required now)
TOOLS = (
    ("handbrake", "install it with: apt-get install handbrake-cli", "transcoding", True),
    ("ffprobe", "install it with: apt-get install ffmpeg", "validating outputs", True),
    ("ffmpeg", "install it with: apt-get install ffmpeg", "test media and previews", False),
    (
        "makemkvcon",
        "it is not in Debian: install MakeMKV from https://www.makemkv.com/ (makemkv-oss and makemkv-bin)",
        "ripping discs",
        False,
    ),
)


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def check_tools(settings: Settings) -> list[Check]:
    """Each external tool: found, and its version."""
    from amphigory_tui.services.proc import resolve_tool, run_quick

    checks = []
    for key, how, purpose, required in TOOLS:
        name = getattr(settings.tools, key)
        try:
            path = resolve_tool(name, install_hint=how)
            flag = "--version" if key in ("handbrake",) else "-version"
            result = run_quick([path, flag] if key != "makemkvcon" else [path], timeout_s=15)
            lines = [ln for ln in (*result.stdout_tail, *result.stderr_tail) if ln.strip()]
            version = next((ln for ln in lines if any(ch.isdigit() for ch in ln)), lines[0] if lines else "")
            checks.append(Check(f"{key} ({purpose})", True, f"{path}: {version.strip()[:80]}", required))
        except AmphigoryError as exc:
            checks.append(Check(f"{key} ({purpose})", False, str(exc), required))
    return checks


def check_dir(label: str, path: Path) -> Check:
    """A directory amphigory writes to exists (or can be created) and is writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".amphigory-doctor-"):
            pass
    except OSError as exc:
        return Check(label, False, f"{path}: not writable ({exc.strerror}); fix its permissions or change the config")
    return Check(label, True, str(path))


def check_database(cli: CliContext) -> Check:
    """The database answers and is at the latest migration (doctor does not migrate it)."""
    try:
        services = cli.services(migrate=False)
        current, head = services.schema_revisions()
    except AmphigoryError as exc:
        return Check("database", False, str(exc))
    url = services.settings.database_url
    if current != head:
        return Check(
            "database", False, f"{url}: at revision {current or 'none'}, latest is {head}; run: amphigory db upgrade"
        )
    return Check("database", True, f"{url} (revision {current})")


@click.command()
@pass_cli
def doctor(cli: CliContext) -> None:
    """Check tools, directories and the database; exit 1 naming what is missing."""
    settings = cli.settings
    checks = check_tools(settings)
    checks.append(check_dir("work dir", settings.work_dir))
    checks.append(check_dir("data dir", paths.data_dir()))
    for root in settings.library.roots:
        ok = os.path.isdir(root) and os.access(root, os.R_OK | os.X_OK)
        checks.append(Check("library root", ok, root if ok else f"{root}: not a readable directory"))
    checks.append(check_database(cli))
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        click.echo(f"[{mark}] {check.name}: {check.detail}")
    failed = [c for c in checks if not c.ok and c.required]
    if failed:
        raise SystemExit(1)
    click.echo("everything amphigory needs is here")


COMMANDS = [doctor]
