"""Settings: the example file equals the defaults, and every kind of bad config is one clear message."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from amphigory_tui.config import Settings, iter_keys, load_settings
from amphigory_tui.domain.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_file_parses_to_exactly_the_defaults() -> None:
    """config.example.toml lists every key with its default: loading it changes nothing."""
    loaded = load_settings(ROOT / "config.example.toml")
    assert replace(loaded, file=None, from_file=frozenset()) == Settings()
    listed = {f"{s}.{k}" for s, k, _, _ in iter_keys()}
    assert loaded.from_file == listed, "every key must appear in config.example.toml"


def test_no_file_gives_defaults(isolated_user_dirs: Path) -> None:
    """With no config file anywhere the embedded defaults work, with paths in the user data dir."""
    settings = load_settings(None)
    assert settings == Settings()
    assert settings.database_url.startswith("sqlite:///")
    assert str(isolated_user_dirs) in settings.database_url
    assert str(settings.work_dir).startswith(str(isolated_user_dirs))


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$AMPHIGORY_CONFIG is used when --config is not given."""
    path = tmp_path / "c.toml"
    path.write_text("[workers]\ncount = 5\n")
    monkeypatch.setenv("AMPHIGORY_CONFIG", str(path))
    settings = load_settings(None)
    assert settings.workers.count == 5
    assert settings.source_of("workers.count") == str(path)
    assert settings.source_of("workers.heartbeat_interval_s") == "default"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[workers\ncount = 1", "TOML syntax error"),
        ("[workers]\ncuont = 1\n", "[workers] cuont: unknown key; allowed keys: count,"),
        ("[wrkers]\ncount = 1\n", "unknown section [wrkers]"),
        ('[workers]\ncount = "two"\n', "[workers] count: 'two' is not an integer; allowed: an integer from 0 to 64"),
        ("[workers]\ncount = 65\n", "[workers] count: 65 is out of range; allowed: an integer from 0 to 64"),
        ("[workers]\nheartbeat_interval_s = 300\n", "heartbeat_interval_s = 300 must be less than stall_timeout_s"),
        ('[paths]\nwork_dir = "work"\n', "[paths] work_dir: 'work' is a relative path"),
        ('[library]\nroots = ["media"]\n', "[library] roots: 'media' is a relative path"),
        ('[transcode]\noriginal_policy = "shred"\n', "allowed: one of 'keep', 'backup', 'delete'"),
        ('[transcode]\noriginal_policy = "backup"\n', "needs [paths] backup_dir"),
        ("[scanner]\nfollow_symlinks = 1\n", "[scanner] follow_symlinks: 1 is not a boolean"),
        ("workers = 3\n", "[workers] must be a table"),
        ('[database]\nurl = "sqlite:///rel.db"\n', "[database] url: 'sqlite:///rel.db' is not an absolute SQLite"),
        ('[database]\nurl = "mysql://db/x"\n', "[database] url: 'mysql://db/x' uses 'mysql', which amphigory does"),
        ('[database]\nurl = "amphigory.db"\n', "[database] url: 'amphigory.db' is not a database URL; allowed: ''"),
        ('[tools]\nhandbrake = "bin/HandBrakeCLI"\n', "[tools] handbrake: 'bin/HandBrakeCLI' is a relative path"),
        ('[tools]\nffprobe = ""\n', "[tools] ffprobe: is empty; allowed: a program name found on PATH"),
    ],
)
def test_bad_config_is_one_message_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    """Each mistake is reported with the file, the key and what is allowed."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    """A --config that does not exist is not silently replaced by defaults."""
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_with_value_validates_like_the_loader() -> None:
    """The settings screen edits through the same rules."""
    settings = Settings().with_value("workers.count", 4)
    assert settings.workers.count == 4
    with pytest.raises(ConfigError, match="out of range"):
        settings.with_value("workers.count", -1)
    with pytest.raises(ConfigError, match="must be less than"):
        settings.with_value("workers.heartbeat_interval_s", 999)


def test_cli_bad_config_exit_2_no_traceback_no_database(tmp_path: Path, isolated_user_dirs: Path) -> None:
    """A bad config stops every command with exit code 2, one line on stderr, and no database file created."""
    path = tmp_path / "bad.toml"
    path.write_text("[workers]\nstall_timeout_s = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "amphigory_tui", "--config", str(path), "jobs"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert str(path) in result.stderr and "stall_timeout_s" in result.stderr
    assert not list(isolated_user_dirs.rglob("*.db"))


def test_database_urls_that_are_accepted() -> None:
    """An absolute SQLite file, PostgreSQL with or without a driver name, and empty (the default file)."""
    for url in ("", "sqlite:////srv/amphigory/amphigory.db", "postgresql://u@h/db", "postgresql+psycopg://u@h/db"):
        assert Settings().with_value("database.url", url).database.url == url
