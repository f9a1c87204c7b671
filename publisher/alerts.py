"""`publisher run`'s alerts: each finding of publisher/health.py is logged once, and mailed to
`[alerts] email` at most once per kind a day, whichever `run` process (of several, on several
machines) sees it first.

"Once" across processes is a claim in the state database (a meta row `alert:KIND:DAY`, created
by INSERT ... ON CONFLICT DO NOTHING): the process whose insert created it mails; a failed
mail gives the claim back, so the next tick tries again. The mail goes out like the
confirmation mail (publisher/web_mail.py): the same SMTP settings or Maildir outbox, the same
headers, DKIM-signed when `[email.dkim]` is set.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Sequence
from email.utils import parseaddr
from html import escape

from .config import Config
from .dkim import dkim_settings, signed
from .health import ERROR, Finding
from .mime import (
    compose,
    date_value,
    encode_unstructured,
    format_address,
    from_header,
    message_id,
    sender_domain,
)
from .state import Store
from .web_mail import MailError, deliver


def build_alert(cfg: Config, finding: Finding, recipient: str) -> bytes:
    """A plain-text alert message for the operator, DKIM-signed if configured."""
    now = time.time()
    subject = f"[{cfg.site.title}] {finding.severity}: {finding.kind} {finding.subject}"
    headers = [
        f"To: {format_address('', recipient)}",
        f"Date: {date_value(now, cfg.tz)}",
        f"Message-ID: {message_id(f'alert.{now:.0f}.{os.getpid()}', sender_domain(cfg))}",
        from_header(cfg),
        f"Subject: {encode_unstructured(subject, len('Subject'))}",
        "Auto-Submitted: auto-generated",
    ]
    text = (
        f"{finding.message}\n\n"
        f"kind: {finding.kind}\nabout: {finding.subject}\nseverity: {finding.severity}\n\n"
        "`publisher status` shows everything that is wrong now. You get at most one mail per "
        "kind of alert a day.\n"
    )
    html = f"<!DOCTYPE html><html><body><pre>{escape(text)}</pre></body></html>"
    return signed(compose(headers, text, html), dkim_settings(cfg))


# Findings that `run` already logs in its own words ("skipped digest: ..."), once each.
LOGGED_ELSEWHERE = frozenset({"bad-digest"})


class Alerter:
    """Remembers what this process has logged, so each finding is logged once while it lasts
    (and again if it clears and comes back)."""

    def __init__(self, cfg: Config, log: logging.Logger) -> None:
        self.cfg = cfg
        self.log = log
        self._logged: set[str] = set()

    def __call__(self, store: Store, found: Sequence[Finding], now: dt.datetime) -> None:
        for finding in found:
            if finding.key in self._logged:
                continue
            if finding.kind not in LOGGED_ELSEWHERE:
                level = logging.ERROR if finding.severity == ERROR else logging.WARNING
                self.log.log(level, "alert: %s", finding.message)
            self._mail(store, finding, now)
        self._logged = {f.key for f in found}

    def _mail(self, store: Store, finding: Finding, now: dt.datetime) -> None:
        recipient = parseaddr(self.cfg.alerts.email)[1]
        if not recipient:
            return
        day = now.astimezone(self.cfg.tz).date().isoformat()
        key = f"alert:{finding.kind}:{day}"
        if not store.claim_meta(key, finding.message[:1000]):
            return  # this kind was mailed today already, by this process or another
        try:
            deliver(self.cfg, recipient, build_alert(self.cfg, finding, recipient))
        except MailError as exc:
            store.delete_meta(key)  # not mailed: the next tick tries again
            self.log.error("could not mail the alert to %s: %s", recipient, exc)
