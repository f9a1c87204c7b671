"""config.toml: the shipped file loads; unknown keys and wrong types name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from publisher.config import load_config, smtp_password
from publisher.errors import ConfigError

from .conftest import ROOT, one_error_line, run_publisher


def test_shipped_config_loads_with_paths_relative_to_its_folder() -> None:
    cfg = load_config(ROOT / "config.toml")
    assert cfg.digests.inbox == ROOT / "digests"
    assert cfg.feed.output == ROOT / "public"
    assert cfg.subscribers.file == ROOT / "subscribers" / "subscribers.csv"
    assert cfg.smtp.host == "" and cfg.smtp.security == "starttls" and cfg.smtp.verify_tls
    assert cfg.database_url == f"sqlite:///{ROOT / 'state' / 'publisher.sqlite3'}"
    assert cfg.email.from_ == "Daily Papers <papers@localhost>"
    assert cfg.schedule.retry_failed_times == 3 and cfg.schedule.retry_failed_hours == 6.0


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[site]\ntitel = 'x'\n", "unknown key 'site.titel'"),
        ("[smpt]\nhost = 'x'\n", "unknown key 'smpt'"),
        ("[feed]\nmax_items = 'ten'\n", "'feed.max_items' must be an integer"),
        ("[smtp]\nverify_tls = 1\n", "'smtp.verify_tls' must be true or false"),
        ("[email.dkim]\nselectr = 's'\n", "unknown key 'email.dkim.selectr'"),
        (
            "[email.dkim]\nselector = 's'\ndomain = 'localhost'\n",
            "'email.dkim.key_file' is missing",
        ),
        (
            "[email.dkim]\nselector = 's'\ndomain = 'example.com'\nkey_file = 'k.key'\n",
            "'email.dkim.domain' 'example.com' does not align with the From domain 'localhost'",
        ),
        ("site = 3\n", "'site' must be a table"),
        ("[smtp]\nsecurity = 'tls'\n", "'smtp.security' must be starttls, ssl or none"),
        ("[schedule]\nsend_at = '7am'\n", "'schedule.send_at' must be HH:MM"),
        ("[site]\ntimezone = 'Mars/Olympus'\n", "'site.timezone' is not a known time zone"),
        ("[smtp]\nconnections = 0\n", "'smtp.connections' must be at least 1"),
        (
            "[schedule]\nretry_failed_times = -1\n",
            "'schedule.retry_failed_times' must not be negative",
        ),
        ("[schedule]\nretry_failed_times = 1.5\n", "'schedule.retry_failed_times' must be an"),
        (
            "[schedule]\nretry_failed_hours = -0.5\n",
            "'schedule.retry_failed_hours' must not be negative",
        ),
        ("[schedule]\nretry_failed_hours = '6h'\n", "'schedule.retry_failed_hours' must be a"),
        ("[site\n", "invalid TOML"),
        # Issue 27: a secret read from a variable every process has is no secret.
        ("[web]\nsecret_env = 'PATH'\n", "'web.secret_env' names $PATH, a variable every"),
        ("[web]\nsecret_env = 'HOME'\n", "'web.secret_env' names $HOME"),
        ("[web]\nsecret_env = 'user'\n", "'web.secret_env' names $user"),
        ("[web]\nsecret_env = 'SHELL'\n", "'web.secret_env' names $SHELL"),
        ("[smtp]\npassword_env = 'LANG'\n", "'smtp.password_env' names $LANG"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert needle in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_absolute_paths_and_urls_kept(tmp_path: Path) -> None:
    cfg = load_config(
        _write(
            tmp_path,
            "[digests]\ninbox = '/srv/digests'\n"
            "[state]\ndatabase = 'postgresql://u@h/db'\n"
            "[email]\nfrom = 'X <x@example.org>'\n",
        )
    )
    assert cfg.digests.inbox == Path("/srv/digests")
    assert cfg.database_url == "postgresql://u@h/db"
    assert cfg.email.from_ == "X <x@example.org>"


@pytest.mark.parametrize(
    "database",
    ["state/p.sqlite3", "sqlite:///p.sqlite3", "postgresql://u@h/db", "postgresql+psycopg://u@h/d"],
)
def test_the_state_databases_publisher_runs_on_are_accepted(tmp_path: Path, database: str) -> None:
    cfg = load_config(_write(tmp_path, f"[state]\ndatabase = '{database}'\n"))
    assert cfg.state.database == database


def test_another_database_url_is_one_line_naming_the_key_and_never_the_password(
    tmp_path: Path,
) -> None:
    """`[state] database` of a database publisher does not run on (MySQL here) was a driver's
    traceback from the first command that opened it; it is now one line at load time, naming
    the key and the scheme but not the URL, whose password it would print."""
    config = _write(tmp_path, "[state]\ndatabase = 'mysql://u:s3cret@h/db'\n")
    with pytest.raises(ConfigError, match=r"'state.database' must be a path .* not a mysql://"):
        load_config(config)
    line = one_error_line(run_publisher("status", "--config", str(config)))
    assert "'state.database'" in line and "mysql://" in line
    assert "s3cret" not in line


def test_password_comes_from_the_named_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(_write(tmp_path, "[smtp]\npassword_env = 'MY_SMTP_PW'\n"))
    monkeypatch.delenv("MY_SMTP_PW", raising=False)
    assert smtp_password(cfg) is None
    monkeypatch.setenv("MY_SMTP_PW", "s3cret")
    assert smtp_password(cfg) == "s3cret"
