"""Writing settings back to the TOML file while keeping the user's comments and layout.

A changed key's line is rewritten in place (a comment after the value is kept); a key the file does not have yet
is added at the end of its section, or in a new section at the end. Nothing else in the file changes. The result
is parsed again and must give back exactly the values written.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_-]+)(\s*=\s*)(.*)$")


def toml_value(value: Any) -> str:
    """A Python value as TOML (strings as basic strings, tuples as arrays, dicts as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be written to TOML")
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return _basic_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_basic_string(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _basic_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value_end(rest: str) -> tuple[int, int] | None:
    """Where the value in ``rest`` ends on this line, and the bracket depth left open; None in a multi-line string."""
    depth = 0
    i = 0
    while i < len(rest):
        ch = rest[i]
        if rest.startswith('"""', i) or rest.startswith("'''", i):
            return None
        if ch == '"':
            i += 1
            while i < len(rest) and rest[i] != '"':
                i += 2 if rest[i] == "\\" else 1
        elif ch == "'":
            i += 1
            while i < len(rest) and rest[i] != "'":
                i += 1
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "#":
            return i, depth
        i += 1
    return len(rest), depth


def update_toml(text: str, changes: Mapping[str, Any]) -> str:
    """``text`` with each dotted key (``workers.count``) set to its value, comments and layout kept."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    pending = dict(changes)
    for dotted in list(pending):
        section, key = dotted.split(".", 1)
        value = toml_value(pending[dotted])
        located = _find_key(lines, section, key)
        if located is not None:
            start, stop, indent, sep, comment = located
            lines[start:stop] = [f"{indent}{key}{sep}{value}{comment}\n"]
            del pending[dotted]
            continue
        end = _section_end(lines, section)
        if end is not None:
            lines.insert(end, f"{key} = {value}\n")
            del pending[dotted]
    # Keys of sections the file does not have: one new section each, at the end.
    by_section: dict[str, list[str]] = {}
    for dotted, raw in pending.items():
        section, key = dotted.split(".", 1)
        by_section.setdefault(section, []).append(f"{key} = {toml_value(raw)}\n")
    for section, entries in by_section.items():
        if lines and lines[-1].strip():
            lines.append("\n")
        lines.append(f"[{section}]\n")
        lines.extend(entries)
    result = "".join(lines)
    _check(result, changes)
    return result


def _find_key(lines: list[str], section: str, key: str) -> tuple[int, int, str, str, str] | None:
    current = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _SECTION.match(line)
        if header:
            current = header.group(1)
            i += 1
            continue
        match = _KEY.match(line.rstrip("\n"))
        if match and current == section and match.group(2) == key:
            indent, sep, rest = match.group(1), match.group(3), match.group(4)
            stop = i + 1
            end = _value_end(rest)
            comment = ""
            if end is None:
                # A multi-line string value: replace up to its closing quotes.
                quote = '"""' if '"""' in rest else "'''"
                while stop < len(lines) and quote not in lines[stop]:
                    stop += 1
                stop = min(stop + 1, len(lines))
            else:
                pos, depth = end
                comment = rest[pos:].rstrip()
                # A multi-line array: swallow the lines until its brackets close.
                while depth > 0 and stop < len(lines):
                    more = _value_end(lines[stop].rstrip("\n"))
                    depth += more[1] if more else 0
                    if more and more[0] < len(lines[stop].rstrip("\n")):
                        comment = lines[stop].rstrip("\n")[more[0] :].rstrip()
                    stop += 1
            if comment:
                comment = "  " + comment.lstrip()
            return i, stop, indent, sep, comment
        i += 1
    return None


def _section_end(lines: list[str], section: str) -> int | None:
    """Where to add a key to ``section``: after its last non-blank line."""
    start = None
    for i, line in enumerate(lines):
        header = _SECTION.match(line)
        if header:
            if start is not None:
                break
            if header.group(1) == section:
                start = i
    if start is None:
        return None
    end = start + 1
    for j in range(start + 1, len(lines)):
        if _SECTION.match(lines[j]):
            break
        if lines[j].strip():
            end = j + 1
    return end


def _check(text: str, changes: Mapping[str, Any]) -> None:
    data = tomllib.loads(text)
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        got = data.get(section, {}).get(key)
        want = list(value) if isinstance(value, tuple) else value
        if isinstance(want, Mapping):
            want = dict(want)
        if got != want:
            raise ValueError(f"writing {dotted} gave {got!r}, not {want!r}")


def write_settings_file(path: Path, changes: Mapping[str, Any]) -> None:
    """Apply ``changes`` to the TOML file at ``path`` (created if missing), atomically."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = "# amphigory configuration, written by the settings screen.\n"
    new = update_toml(text, changes)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(new)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
