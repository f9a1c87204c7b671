"""Helpers for the bounce tests: a config with VERP, subscribers, DSNs built like a mail system
builds them (RFC 3464), and the `publisher` command run as a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from email.utils import format_datetime
from pathlib import Path

from publisher.config import Config, load_config
from publisher.mailrules import UNSUBSCRIBE, VERP, TokenCodec
from publisher.state import Store

from .pg import state_toml

SECRET = "Y3Ph4xEOLuvWhc_eHrmWD6SMpBwEyyLEzNY8G9bvVJI"
DOMAIN = "papers.example.org"
RETURN_PATH = f"bounces+{{token}}@{DOMAIN}"
MAILTO = f"mailto:unsubscribe+{{token}}@{DOMAIN}?subject=unsubscribe"
SAMPLES = Path(__file__).resolve().parent / "fixtures" / "bounces"


def write_config(
    tmp: Path, db_url: str, extra: str = "", *, return_path: bool = True, **bounces: object
) -> Config:
    """A config on `db_url`; VERP on unless `return_path` is False."""
    (tmp / "subscribers").mkdir(parents=True, exist_ok=True)
    (tmp / "subscribers" / "subscribers.csv").write_text("email,name\n")
    section = "".join(f"{k} = {json.dumps(v)}\n" for k, v in bounces.items())
    (tmp / "config.toml").write_text(
        "[email]\n"
        f'from = "Daily Papers <papers@{DOMAIN}>"\n'
        + (f'return_path = "{RETURN_PATH}"\n' if return_path else "")
        + f'unsubscribe_mailto = "{MAILTO}"\n'
        + extra
        + "[bounces]\n"
        + section
        + state_toml(db_url)
    )
    return load_config(tmp / "config.toml")


def add(store: Store, *emails: str) -> dict[str, int]:
    ids = {}
    for e in emails:
        sub, _ = store.add_subscriber(e, status="active", source="cli")
        ids[e] = sub.id
    return ids


def mailed(store: Store, ids: dict[str, int], day: dt.date) -> None:
    """Ledger rows as a send leaves them: each of `ids` was sent the digest of `day`."""
    from publisher.state.schema import ledger

    store.ensure_ledger_partition(day)  # PostgreSQL: the month's partition, as a send makes
    with store.engine.begin() as conn:
        for sid in ids.values():
            conn.execute(
                ledger.insert().values(
                    digest_date=day,
                    subscriber_id=sid,
                    status="sent",
                    attempts=1,
                    final=False,
                    last_reply="250 OK",
                    updated_at=dt.datetime.combine(day, dt.time(7)),
                )
            )


def verp(sub_id: int, day: dt.date, secret: str = SECRET) -> str:
    return f"bounces+{TokenCodec([secret.encode()], VERP).sign(sub_id, day)}@{DOMAIN}"


def unsub_address(sub_id: int, day: dt.date, secret: str = SECRET) -> str:
    token = TokenCodec([secret.encode()], UNSUBSCRIBE).sign(sub_id, day)
    return f"unsubscribe+{token}@{DOMAIN}"


def dsn(
    to: str,
    recipient: str,
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown",
    *,
    action: str = "failed",
    when: dt.datetime | None = None,
    serial: str = "1",
) -> bytes:
    """An RFC 3464 report as an MTA writes it, sent to `to` about `recipient`; the returned
    headers carry our List-Unsubscribe mailto (a bounce must not read as an unsubscribe)."""
    date = format_datetime(when or dt.datetime(2024, 5, 15, 7, 0, tzinfo=dt.UTC))
    text = f"""From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: {date}
Message-ID: <dsn-{serial}@mx.example.net>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B{serial}"

--B{serial}
Content-Type: text/plain

This is the mail system at host mx.example.net ({serial}).

--B{serial}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {recipient}
Action: {action}
Status: {status}
Diagnostic-Code: {diagnostic.format(r=recipient)}

--B{serial}
Content-Type: text/rfc822-headers

From: Daily Papers <papers@{DOMAIN}>
To: {recipient}
Subject: Daily Papers 2024-05-15
List-Unsubscribe: <{MAILTO.format(token="a" * 18)}>

--B{serial}--
"""
    return text.encode()


def cli(cfg: Config, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "publisher.cli", *args[:2], "--config", str(cfg.path), *args[2:]]
    env_run = subprocess.run(
        cmd,
        input=stdin.decode("utf-8", "surrogateescape") if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    return env_run


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PUBLISHER_SECRET": SECRET}


def events(cfg: Config, *args: str) -> list[dict]:
    run = cli(cfg, "bounces", "list", "--json", *args)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def ingest(cfg: Config, raw: bytes, source: str = "test") -> str:
    """One message through the same intake as `bounces import`, in this process; its line."""
    from publisher.bounces.intake import Intake

    with Store.open(cfg) as store:
        return Intake(cfg, store, [SECRET.encode()]).process(raw, source).line


def stored_events(cfg: Config, kind: str | None = None) -> list:
    with Store.open(cfg) as store:
        return list(store.iter_bounce_events(kind))


def arf(recipient: str, return_path: str, serial: str = "1") -> bytes:
    """An RFC 5965 abuse report as a feedback loop sends it: the reported message as the
    mailbox provider stored it, with the Return-Path its delivery added (the VERP address)."""
    return f"""From: feedback@fbl.example.com
To: abuse@{DOMAIN}
Subject: FW: Abuse report
Date: Wed, 15 May 2024 10:00:00 +0000
Message-ID: <arf-{serial}@fbl.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="A{serial}"

--A{serial}
Content-Type: text/plain

This is an email abuse report.

--A{serial}
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1

--A{serial}
Content-Type: message/rfc822

Return-Path: <{return_path}>
From: Daily Papers <papers@{DOMAIN}>
To: {recipient}
Subject: Daily Papers

Hello.

--A{serial}--
""".encode()


# -- adversarial messages (issue 22, "Cost"): each about `size` bytes ------------------------

_HEAD = (
    "From: MAILER-DAEMON@mx.attacker.example\nTo: bounces@{d}\nSubject: failure notice\n"
    "Date: Wed, 15 May 2024 07:00:00 +0000\nMessage-ID: <{tag}@attacker.example>\n"
).replace("{d}", DOMAIN)


def qmail_list(size: int = 10_000_000) -> bytes:
    """A qmail bounce listing as many distinct addresses as fit (150,000 in 4.5 MB)."""
    lines = []
    total, i = 0, 0
    while total < size:
        line = (
            f"<user{i}@victim{i % 97}.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        )
        lines.append(line)
        total += len(line)
        i += 1
    body = (
        "Hi. This is the qmail-send program at mx.attacker.example.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        + "".join(lines)
        + "--- Below this line is a copy of the message.\n\n"
    )
    return (_HEAD.replace("{tag}", "qmail-list") + "\n" + body).encode()


def dsn_many_recipients(size: int = 10_000_000) -> bytes:
    """An RFC 3464 report with a per-recipient block for as many addresses as fit."""
    block = (
        "Final-Recipient: rfc822; user{i}@victim.example\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <user{i}@victim.example>: User unknown\n\n"
    )
    n = size // len(block)
    blocks = "".join(block.format(i=i) for i in range(n))
    return _report("dsn-many", blocks).encode()


def _report(tag: str, status_body: str) -> str:
    return (
        _HEAD.replace("{tag}", tag) + "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="Z"\n\n'
        "--Z\nContent-Type: text/plain\n\nFailed.\n\n"
        "--Z\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.attacker.example\n\n"
        f"{status_body}--Z--\n"
    )


def huge_diagnostic(size: int = 10_000_000) -> bytes:
    """One recipient whose Diagnostic-Code runs on for `size` bytes of folded lines."""
    fold = "\n ".join("550 5.1.1 user unknown " * 3 for _ in range(size // 72))
    blocks = (
        "Final-Recipient: rfc822; someone@victim.example\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; {fold}\n\n"
    )
    return _report("huge-diag", blocks).encode()


def many_parts(size: int = 10_000_000) -> bytes:
    """A multipart/mixed of as many small text parts as fit, each naming an address."""
    part = "--P\nContent-Type: text/plain\n\n<user{i}@victim.example>: 550 5.1.1 unknown\n\n"
    n = size // len(part)
    body = "".join(part.format(i=i) for i in range(n)) + "--P--\n"
    return (
        _HEAD.replace("{tag}", "many-parts")
        + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="P"\n\n'
        + "This is a multi-part message.\n\n"
        + body
    ).encode()


def deep_nesting(size: int = 10_000_000, depth: int = 900) -> bytes:
    """Multipart parts nested `depth` deep (under Python's recursion limit), the innermost one
    short lines up to `size`: the `email` parser checks each line against every open boundary."""
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="N{i}"\n\n--N{i}\n' for i in range(depth)
    )
    closing = "".join(f"\n--N{i}--\n" for i in reversed(range(depth)))
    head = _HEAD.replace("{tag}", "deep") + "MIME-Version: 1.0\n" + opening
    head += "Content-Type: text/plain\n\n<someone@victim.example>: 550 5.1.1 unknown\n"
    lines = "x\n" * max((size - len(head) - len(closing)) // 2, 0)
    return (head + lines + closing).encode()


def many_lines(size: int = 10_000_000) -> bytes:
    """A plain message of `size` bytes of empty lines (the parser's cost is per line)."""
    return (_HEAD.replace("{tag}", "lines") + "\n" + "\n" * size).encode()


ADVERSARIAL = {
    "qmail_list": qmail_list,
    "dsn_many_recipients": dsn_many_recipients,
    "huge_diagnostic": huge_diagnostic,
    "many_parts": many_parts,
    "deep_nesting": deep_nesting,
    "many_lines": many_lines,
}
