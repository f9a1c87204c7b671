"""State files are the owner's only (issue 27): the SQLite folder 0700, the database and its
-wal, -shm and lock files 0600, the Maildir outbox 0700/0600, whatever the umask of the real
`publisher` process that creates them; a start that finds one readable by others (or the DKIM
key) warns once."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import FIXTURES, ROOT

SECRET = "Hq8vN3xK0pT6wZr2Lm9cY4sB7dF1gJ5aE8uR0iO3nWk"


def write_config(root: Path, dkim: str = "") -> Path:
    (root / "subs.csv").write_text("email,name\nada@example.com,Ada\n", encoding="utf-8")
    path = root / "config.toml"
    path.write_text(
        f'[digests]\ninbox = "{ROOT / "digests"}"\n'
        '[subscribers]\nfile = "subs.csv"\n'
        '[state]\ndatabase = "state/deep/publisher.sqlite3"\n'
        '[smtp]\noutbox = "outbox"\n'
        '[email]\nfrom = "Daily Papers <papers@example.org>"\n' + dkim,
        encoding="utf-8",
    )
    return path


def publisher(config: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """`publisher ARGS` as a user with this umask runs it."""
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PUBLISHER_SECRET": SECRET},
        preexec_fn=lambda: os.umask(umask),
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o002])
def test_state_and_outbox_are_the_owners_only_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    config = write_config(tmp_path)
    r = publisher(config, "send", umask=umask)  # imports the CSV (its lock), sends to the outbox
    assert r.returncode == 0, r.stdout + r.stderr
    assert "WARNING" not in r.stderr, r.stderr
    state = tmp_path / "state"
    assert mode(state) == 0o700 and mode(state / "deep") == 0o700
    files = sorted((state / "deep").iterdir())
    names = [f.name for f in files]
    assert "publisher.sqlite3" in names and any(n.endswith(".lock") for n in names), names
    for f in files:
        assert mode(f) == 0o600, (f.name, oct(mode(f)))
    # -wal and -shm exist while a connection is open: open one and look.
    import sqlite3

    conn = sqlite3.connect(state / "deep" / "publisher.sqlite3")
    try:
        conn.execute("SELECT count(*) FROM subscribers").fetchone()
        for suffix in ("-wal", "-shm"):
            side = state / "deep" / f"publisher.sqlite3{suffix}"
            if side.exists():
                assert mode(side) == 0o600, (suffix, oct(mode(side)))
    finally:
        conn.close()
    outbox = tmp_path / "outbox"
    messages = list((outbox / "new").iterdir())
    assert len(messages) == 1
    assert mode(messages[0]) == 0o600
    for folder in (outbox, outbox / "new", outbox / "cur", outbox / "tmp"):
        assert mode(folder) == 0o700, (folder, oct(mode(folder)))


def test_a_state_file_or_dkim_key_others_can_read_is_one_warning_at_start(tmp_path: Path) -> None:
    key = tmp_path / "dkim.key"
    shutil.copyfile(FIXTURES / "dkim" / "test.key", key)
    key.chmod(0o600)
    dkim = f'[email.dkim]\nselector = "s1"\ndomain = "example.org"\nkey_file = "{key}"\n'
    config = write_config(tmp_path, dkim)
    r = publisher(config, "subscribers", "import")
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr
    database = tmp_path / "state" / "deep" / "publisher.sqlite3"
    database.chmod(0o644)
    (tmp_path / "state" / "deep").chmod(0o755)
    key.chmod(0o640)
    r = publisher(config, "send")
    assert r.returncode == 0, r.stdout + r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2, r.stderr
    exposed = f"state file {database} is readable by other users (mode 0644)"
    assert any(exposed in w for w in warnings)
    assert any(f"DKIM key {key} is readable by other users (mode 0640)" in w for w in warnings)
    assert all("Traceback" not in line for line in r.stderr.splitlines())
