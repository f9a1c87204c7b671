"""The whole loop through a real Postfix (Debian's, a throwaway instance: tests/mta.py).

`publisher send` relays today's digest through Postfix with the VERP return path. Postfix
accepts every recipient, as a relay does, then finds that one reader's mailbox does not exist
and writes the DSN itself, to the VERP address, which it delivers into the bounce Maildir.
`publisher bounces import` reads that Maildir and the reader is suppressed, the other is not.
No bounce in this test is written by hand."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

from publisher.state import Store

from .bounce_helpers import SECRET, cli, write_config
from .deliveryhelpers import SAMPLE
from .mta import Postfix


def test_postfix_dsn_to_the_verp_address_suppresses_the_reader(tmp_path: Path, db_url: str) -> None:
    postfix = Postfix(
        ["papers.example.org", "readers.example.net"],
        {
            r"^bounces\+[a-z2-7]+@papers\.example\.org$": "papers/bounces/",
            r"^alive@readers\.example\.net$": "readers/alive/",
        },
    )
    try:
        today = dt.date.today()
        digest = tmp_path / "digests" / f"{today:%Y/%m/%d}.md"
        digest.parent.mkdir(parents=True)
        digest.write_text(
            SAMPLE.read_text(encoding="utf-8").replace("(2024-05-15)", f"({today})"),
            encoding="utf-8",
        )
        smtp = f'[smtp]\nhost = "127.0.0.1"\nport = {postfix.port}\nsecurity = "none"\n'
        cfg = write_config(tmp_path, db_url, extra="", token_max_age_days=30)
        cfg.path.write_text(cfg.path.read_text() + smtp)
        (tmp_path / "subscribers" / "subscribers.csv").write_text(
            "email,name\nalive@readers.example.net,Alive\nghost@readers.example.net,Ghost\n"
        )
        send = subprocess.run(
            [sys.executable, "-m", "publisher.cli", "send", "--config", str(cfg.path)]
            + ["--digest", str(digest)],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PUBLISHER_SECRET": SECRET},
        )
        assert send.returncode == 0, send.stdout + send.stderr
        # Postfix took both (no refusal at RCPT): nothing is bounced yet.
        with Store.open(cfg) as store:
            assert store.get("ghost@readers.example.net").status == "active"
            ghost_id = store.get("ghost@readers.example.net").id
        (delivered,) = postfix.wait_for("readers/alive")
        (dsn_file,) = postfix.wait_for("papers/bounces")
        dsn = dsn_file.read_text(errors="replace")
        assert "report-type=delivery-status" in dsn and "Status: 5.1.1" in dsn
        sender = re.search(r"^X-Original-To: (\S+)$", dsn, re.M)
        assert sender and sender.group(1).startswith("bounces+"), dsn[:500]
        run = cli(cfg, "bounces", "import", str(postfix.mail / "papers" / "bounces"))
        assert run.returncode == 0, run.stderr
        assert "1 recorded (hard 1)" in run.stdout, run.stdout
        with Store.open(cfg) as store:
            ghost = store.get("ghost@readers.example.net")
            assert ghost.status == "bounced" and store.is_suppressed("ghost@readers.example.net")
            assert store.get("alive@readers.example.net").status == "active"
            (event,) = store.iter_bounce_events()
        assert (event.subscriber_id, event.digest_date, event.status) == (ghost_id, today, "5.1.1")
        assert "Return-Path: <bounces+" in delivered.read_text(errors="replace")
    finally:
        postfix.stop()
