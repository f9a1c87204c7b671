"""What the CLI prints of a report's text (issue 22, "Output"): anyone can write ESC sequences
(OSC 52 writes the clipboard, OSC 0 the window title), C1 controls and bidi controls into a
bounce, and `bounces import`, `bounces list` and `subscribers list` print that text. Every line
shows it escaped, piped or not; `bounces show` writes the kept bytes only with --raw or when
its output is not a terminal (checked on a real pseudo-terminal)."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from publisher.state import Store

from .bounce_helpers import _env, add, cli, dsn, events, verp, write_config

DAY = dt.date.today() - dt.timedelta(days=1)
OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # "write this to the clipboard"
TITLE = "\x1b]0;owned\x1b\\"
C1_CSI = "\x9b2J"  # clear the screen, on terminals that read 8-bit controls
BIDI = "\u202e"  # right-to-left override
EVIL = f"smtp; 550 5.1.1 unknown {OSC52}{TITLE}user"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")


def _clean(text: str) -> None:
    for c in RAW_CONTROLS:
        assert c not in text, (c, text)


def _evil_bounce(to: str, recipient: str) -> bytes:
    """A DSN whose Diagnostic-Code carries ESC sequences (a header: ASCII, 8-bit bytes there
    come out of the `email` package as U+FFFD)."""
    return dsn(to, recipient, diagnostic=EVIL)


def _evil_qmail(recipient: str) -> bytes:
    """A qmail bounce in UTF-8 whose reply text carries C1 and bidi controls (body text is
    decoded by its charset: these arrive as they are)."""
    return (
        "From: MAILER-DAEMON@mx.example.net\nTo: bounces@papers.example.org\n"
        "Subject: failure notice\nDate: Wed, 15 May 2024 07:00:00 +0000\n"
        "Message-ID: <q@mx.example.net>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
        "Hi. This is the qmail-send program at mx.example.net.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        f"<{recipient}>:\n550 5.1.1 no mailbox {C1_CSI}{BIDI}here {OSC52}\n\n"
        "--- Below this line is a copy of the message.\n\n"
    ).encode()


def test_import_list_and_subscribers_list_escape_report_text(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        ids = add(store, "victim@example.net")
    inbox = tmp_path / "in"
    inbox.mkdir()
    # the file name is text too (a Maildir someone else writes into)
    (inbox / "evil\x1b[2J.eml").write_bytes(
        _evil_bounce(verp(ids["victim@example.net"], DAY), "victim@example.net")
    )
    (inbox / "qmail.eml").write_bytes(_evil_qmail("victim@example.net"))
    run = cli(cfg, "bounces", "import", str(inbox))
    assert run.returncode == 0, run.stderr
    _clean(run.stdout)
    assert "evil\\x1b[2J.eml" in run.stdout, run.stdout

    listed = cli(cfg, "bounces", "list")
    assert listed.returncode == 0, listed.stderr
    _clean(listed.stdout)
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in listed.stdout, listed.stdout
    assert "\\x9b2J\\u202ehere" in listed.stdout, listed.stdout
    assert len(listed.stdout.splitlines()) == 2

    as_json = cli(cfg, "bounces", "list", "--json")
    _clean(as_json.stdout)
    event, unverified = [json.loads(line) for line in as_json.stdout.splitlines()]
    # escaped on the wire, the same text once decoded
    assert f"{OSC52}{TITLE}user" in event["reason"]
    assert f"{C1_CSI}{BIDI}here" in unverified["reason"], unverified

    subs = cli(cfg, "subscribers", "list")
    assert subs.returncode == 0, subs.stderr
    _clean(subs.stdout)
    line = next(x for x in subs.stdout.splitlines() if x.startswith("victim@example.net\t"))
    assert "\\x1b]52;c;" in line and f"bounce event {event['id']}" in line, line


def _on_a_terminal(args: list[str]) -> bytes:
    """What `publisher ARGS` writes to a pseudo-terminal, read until it exits."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "publisher.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out


def test_bounces_show_writes_raw_bytes_only_with_raw_or_when_piped(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/state.sqlite3")
    with Store.open(cfg) as store:
        ids = add(store, "victim@example.net")
    raw = _evil_bounce(verp(ids["victim@example.net"], DAY), "victim@example.net")
    assert cli(cfg, "bounces", "import", "-", stdin=raw).returncode == 0
    (event,) = events(cfg)
    show = ["bounces", "show", "--config", str(cfg.path), str(event["id"])]

    terminal = _on_a_terminal(show).decode("utf-8")
    _clean(terminal)
    assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in terminal
    assert "Final-Recipient: rfc822; victim@example.net" in terminal  # the rest as it is

    assert "\x1b]52;" in _on_a_terminal([*show, "--raw"]).decode("utf-8")

    piped = subprocess.run(
        [sys.executable, "-m", "publisher.cli", *show], capture_output=True, env=_env(), timeout=60
    )
    assert piped.returncode == 0 and piped.stdout == raw
