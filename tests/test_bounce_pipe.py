"""contrib/publisher-bounces, the Postfix pipe wrapper, run as Postfix runs it: a message on
stdin, no secret in its environment. It takes the secret from the services' environment file
(never running it as a script) and exits 75 (EX_TEMPFAIL, "try again later") when it cannot, so
Postfix keeps the bounce."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from publisher.config import load_config
from publisher.state import Store

from .bounce_helpers import SECRET, add, dsn, verp, write_config
from .conftest import ROOT

WRAPPER = ROOT / "contrib" / "publisher-bounces"


def pipe(cfg_path: Path, env_file: Path, message: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUBLISHER_")}
    env.update(
        PUBLISHER_ENV_FILE=str(env_file),
        PUBLISHER_BIN=str(Path(sys.executable).with_name("publisher")),
        PUBLISHER_CONFIG=str(cfg_path),
    )
    return subprocess.run(
        ["sh", str(WRAPPER)], input=message, env=env, capture_output=True, timeout=120
    )


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, bytes]:
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/state.sqlite3")
    day = dt.datetime.now(dt.UTC).date()
    with Store.open(cfg) as store:
        ids = add(store, "gone@example.com")
    return cfg.path, dsn(verp(ids["gone@example.com"], day), "gone@example.com")


def test_the_pipe_reads_the_secret_from_the_env_file_and_acts(
    tmp_path: Path, setup: tuple[Path, bytes]
) -> None:
    cfg_path, message = setup
    env_file = tmp_path / "publisher.env"
    # As systemd reads it: comments, other variables, a quoted value; `$(...)` is not run.
    env_file.write_text(
        f'# secrets\nPUBLISHER_SMTP_PASSWORD=$(touch pwned)\nPUBLISHER_SECRET="{SECRET}"\n'
    )
    env_file.chmod(0o640)
    r = pipe(cfg_path, env_file, message)
    assert r.returncode == 0, r.stderr.decode()
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    with Store.open(load_config(cfg_path)) as store:
        gone = store.get("gone@example.com")
    assert gone is not None and gone.status == "bounced"


@pytest.mark.parametrize("content", [None, "PUBLISHER_SMTP_PASSWORD=x\n"])
def test_no_readable_secret_is_a_temporary_failure(
    tmp_path: Path, setup: tuple[Path, bytes], content: str | None
) -> None:
    cfg_path, message = setup
    env_file = tmp_path / "publisher.env"
    if content is not None:
        env_file.write_text(content)
    r = pipe(cfg_path, env_file, message)
    assert r.returncode == 75, (r.returncode, r.stderr.decode())
    assert b"publisher-bounces: " in r.stderr
