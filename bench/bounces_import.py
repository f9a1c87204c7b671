"""`publisher bounces import` over a Maildir of 10,000 messages: messages/s, against a reference
from the same run.

    python bench/bounces_import.py [--messages N] [--database URL]

The Maildir holds what a bounce mailbox gets: RFC 3464 DSNs to VERP addresses (hard and soft,
as Postfix writes them), Exim bounces without VERP (flufl.bounce), ARF complaints, vacation
replies and some ordinary mail, each message distinct, for N subscribers in a fresh SQLite
database (or the PostgreSQL URL given). The command runs as a subprocess (`--quiet`), as an
operator or a cron job runs it, so the time includes starting Python and the summary.

The reference is the floor any reader pays: reading every file and parsing it with the `email`
package. The target is at least 500 messages/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from publisher.config import load_config
from publisher.mailrules import ReturnPath
from publisher.state import Store

SECRET = "Ufd2xj9Qe7mWcL4tZr0NbK8sHaY3vGp1oE6iTqJ5nRw"
DOMAIN = "papers.example.org"


def dsn(to: str, rcpt: str, n: int, soft: bool) -> str:
    status, diag = (
        ("4.2.2", "smtp; 452 4.2.2 Mailbox full") if soft else ("5.1.1", "X-Postfix; unknown user")
    )
    return f"""Return-Path: <>
X-Original-To: {to}
Delivered-To: {to}
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
Subject: Undelivered Mail Returned to Sender
To: {to}
Date: Wed, 15 May 2024 07:00:00 +0000
Message-Id: <dsn-{n}@mx.example.net>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B{n}"

--B{n}
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

<{rcpt}>: {diag}

--B{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: {"delayed" if soft else "failed"}
Status: {status}
Diagnostic-Code: {diag}

--B{n}
Content-Type: message/rfc822

Return-Path: <{to}>
From: Daily Papers <papers@{DOMAIN}>
To: {rcpt}
Subject: Daily Papers 2024-05-15
List-Unsubscribe: <https://{DOMAIN}/unsubscribe/x>

{"Today's papers, summarised. " * 40}

--B{n}--
"""


def exim(rcpt: str, n: int) -> str:
    return f"""Return-path: <>
X-Failed-Recipients: {rcpt}
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx.example.net>
To: papers@{DOMAIN}
Subject: Mail delivery failed: returning message to sender
Message-Id: <exim-{n}@mx.example.net>
Date: Wed, 15 May 2024 07:00:12 +0900

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {rcpt}
    SMTP error from remote mail server after RCPT TO:<{rcpt}>:
    550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------

From: Daily Papers <papers@{DOMAIN}>
To: {rcpt}
"""


def arf(to: str, rcpt: str, n: int) -> str:
    return f"""From: feedback@fbl.example.com
To: abuse@{DOMAIN}
Subject: Abuse report
Date: Wed, 15 May 2024 10:00:00 +0000
Message-ID: <arf-{n}@fbl.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="A{n}"

--A{n}
Content-Type: text/plain

This is an email abuse report.

--A{n}
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1

--A{n}
Content-Type: message/rfc822

Return-Path: <{to}>
From: Daily Papers <papers@{DOMAIN}>
To: {rcpt}
Subject: Daily Papers

--A{n}--
"""


def vacation(rcpt: str, n: int) -> str:
    return f"""From: {rcpt}
To: papers@{DOMAIN}
Subject: Out of office: Daily Papers
Auto-Submitted: auto-replied (vacation)
Message-ID: <vac-{n}@example.net>
Date: Wed, 15 May 2024 07:10:00 +0900

I am away until June {n}.
"""


def human(rcpt: str, n: int) -> str:
    return f"""From: {rcpt}
To: papers@{DOMAIN}
Subject: Thanks for digest {n}
Message-ID: <human-{n}@example.net>
Date: Wed, 15 May 2024 08:00:00 +0900

Loved it.
"""


def make(root: Path, n: int, db: str | None) -> tuple[Path, Path]:
    cfg_path = root / "config.toml"
    database = db or str(root / "state.sqlite3")
    cfg_path.write_text(
        f'[email]\nfrom = "Daily Papers <papers@{DOMAIN}>"\n'
        f'return_path = "bounces+{{token}}@{DOMAIN}"\n'
        f'[state]\ndatabase = "{database}"\n'
    )
    cfg = load_config(cfg_path)
    day = dt.date.today() - dt.timedelta(days=1)
    with Store.open(cfg) as store:
        run = store.new_csv_run()
        emails = [f"reader{i}@example.net" for i in range(n)]
        for start in range(0, n, 1000):
            store.upsert_csv_batch(run, [(e, "") for e in emails[start : start + 1000]])
        ids = {s.email: s.id for s in store.iter_subscribers()}
    verp = ReturnPath(cfg.email.return_path, SECRET.encode())
    new = root / "Maildir" / "new"
    for sub in ("new", "cur", "tmp"):
        (root / "Maildir" / sub).mkdir(parents=True)
    for i, e in enumerate(emails):
        to = verp.address(ids[e], day)
        kind = i % 10
        if kind < 5:
            text = dsn(to, e, i, soft=kind == 4)
        elif kind == 5:
            text = exim(e, i)
        elif kind == 6:
            text = arf(to, e, i)
        elif kind < 9:
            text = vacation(e, i)
        else:
            text = human(e, i)
        (new / f"{1700000000 + i}.M{i}P1.bench").write_text(text)
    return cfg_path, root / "Maildir"


def reference(maildir: Path) -> float:
    t0 = time.perf_counter()
    for f in sorted((maildir / "new").iterdir()):
        email.message_from_bytes(f.read_bytes())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--database", default=None, help="A PostgreSQL URL instead of SQLite.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bounces-") as tmp:
        cfg_path, maildir = make(Path(tmp), args.messages, args.database)
        ref = reference(maildir)
        env = {**os.environ, "PUBLISHER_SECRET": SECRET}
        cmd = [sys.executable, "-m", "publisher.cli", "bounces", "import", "--quiet"]
        t0 = time.perf_counter()
        run = subprocess.run(
            [*cmd, "--config", str(cfg_path), str(maildir)],
            capture_output=True,
            text=True,
            env=env,
        )
        seconds = time.perf_counter() - t0
        if run.returncode != 0:
            raise SystemExit(f"bounces import failed: {run.stderr}")
        summary = run.stdout.strip().splitlines()[-1]
    n = args.messages
    rate = n / seconds
    print(f"import:    {n} messages in {seconds:.2f} s = {rate:.0f} messages/s")
    print(f"           {summary}")
    print(f"reference: read + email.message_from_bytes: {n / ref:.0f} messages/s ({ref:.2f} s)")
    print(f"ratio:     import takes {seconds / ref:.1f}x the reference")
    print(f"target:    >= 500 messages/s: {'met' if rate >= 500 else 'NOT met'}")


if __name__ == "__main__":
    main()
