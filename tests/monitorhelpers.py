"""A project after a real day of operation, for the operator's views (tests/test_metrics.py,
tests/test_report.py): five CSV readers, a real `publisher send` into the loopback SMTP server
that refuses one reader at RCPT (a hard bounce), then one reader unsubscribes and another's
complaint (an ARF report through the VERP return path) is imported with `bounces import -`."""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from publisher.config import Config, load_config
from publisher.state import Store

from .bounce_helpers import arf, verp
from .conftest import run_publisher
from .pg import state_toml
from .sitehelpers import digest_text, write_digest
from .smtp_server import smtp_server

SECRET = base64.b64encode(os.urandom(32)).decode()
READERS = ["ada", "alan", "grace", "gone", "bob"]


def operated_project(tmp_path: Path, db_url: str) -> tuple[Config, dt.date]:
    """The project's config and the digest day: 4 sent, 1 failed (gone@, hard bounce), bob@
    unsubscribed, grace@ complained."""
    (tmp_path / "subs.csv").write_text(
        "email,name\n" + "".join(f"{r}@example.com,{r}\n" for r in READERS)
    )
    today = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=9))).date()
    write_digest(tmp_path / "inbox", today, digest_text(today, n=2))
    env = {**os.environ, "PUBLISHER_SECRET": SECRET}
    with smtp_server() as (recorder, port):
        recorder.refuse_rcpt.add("gone@example.com")  # 550 5.1.1 at RCPT: a hard bounce
        (tmp_path / "config.toml").write_text(
            f"""
[site]
timezone = "Asia/Seoul"
[digests]
inbox = "inbox"
[email]
from = "Daily Papers <papers@papers.example.org>"
return_path = "bounces+{{token}}@papers.example.org"
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
[subscribers]
file = "subs.csv"
{state_toml(db_url)}
"""
        )
        cfg = load_config(tmp_path / "config.toml")
        sent = run_publisher("send", "--config", str(cfg.path), cwd=tmp_path, env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert len(recorder.messages) == 4
    with Store.open(cfg) as store:
        grace = store.get("grace@example.com")
        assert grace is not None
        store.unsubscribe("bob@example.com")
    imported = subprocess.run(
        [sys.executable, "-m", "publisher.cli", "bounces", "import", "-", "--config", cfg.path],
        input=arf("grace@example.com", verp(grace.id, today, SECRET)),
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    return cfg, today
