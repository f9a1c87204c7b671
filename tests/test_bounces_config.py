"""`[email] return_path`, a `{token}` mailto and `[bounces]` are checked like every other key:
one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from publisher.config import load_config
from publisher.errors import ConfigError


def _load(tmp_path: Path, text: str):  # noqa: ANN202
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def test_valid_bounce_settings(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        '[email]\nreturn_path = "bounces+{token}@papers.example.org"\n'
        'unsubscribe_mailto = "mailto:unsubscribe+{token}@papers.example.org?subject=x"\n'
        '[bounces]\nsoft_limit = 2\nimap_cafile = "ca.pem"\n',
    )
    assert cfg.email.return_path == "bounces+{token}@papers.example.org"
    assert cfg.bounces.soft_limit == 2 and cfg.bounces.imap_cafile == tmp_path / "ca.pem"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[email]\nreturn_path = "bounces@papers.example.org"\n',
            "'email.return_path' must contain {token}",
        ),
        (
            '[email]\nreturn_path = "{token}bounces@x.org"\n',
            "'email.return_path' {token} must end the local part",
        ),
        (
            '[email]\nunsubscribe_mailto = "u+{token}"\n',
            "'email.unsubscribe_mailto' {token} must end",
        ),
        ("[bounces]\nsoft_limit = 0\n", "'bounces.soft_limit' must be at least 1"),
        ("[bounces]\nsoft_limits = 3\n", "unknown key 'bounces.soft_limits'"),
        ('[bounces]\nimap_port = "993"\n', "'bounces.imap_port' must be an integer"),
    ],
)
def test_bad_bounce_settings_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert message in str(err.value) and str(tmp_path / "config.toml") in str(err.value)
    assert "\n" not in str(err.value)
