"""`publisher status`: what the scheduler has seen and emailed, what is pending, the next send.

Read-only: it reads the publications and the meta keys that `publisher run` writes
(publisher/scheduler.py) and judges what is pending with the same policy (publisher/policy.py).
"""

from __future__ import annotations

import datetime as dt
import json

from .config import Config
from .policy import arrived, email_due, next_send_moment, too_old
from .scheduler import META_LAST_TICK, META_PROBLEMS
from .state import Store


def status_lines(
    cfg: Config, store: Store, *, now: dt.datetime | None = None, limit: int = 10
) -> list[str]:
    """What `publisher status` prints: digests seen, emails, what is pending, the next run."""
    now = now or dt.datetime.now(dt.UTC)
    out: list[str] = []
    last = store.get_meta(META_LAST_TICK)
    out.append(f"last run tick:  {last or 'never (is `publisher run` running?)'}")
    nxt = next_send_moment(cfg, now)
    out.append(
        f"next send time: {nxt.isoformat(timespec='minutes')} ([schedule] send_at "
        f"{cfg.schedule.send_at} {cfg.site.timezone}"
        + ("; send on arrival)" if cfg.schedule.send_on_arrival else ")")
    )
    out.append(f"polling:        every {cfg.schedule.poll_seconds:g} s in {cfg.digests.inbox}")
    pubs = store.list_publications(limit)
    out.append("")
    out.append(f"latest digests ({len(pubs)} shown):")
    if not pubs:
        out.append("  none seen yet")
    pending: list[str] = []
    old = 0
    for pub in pubs:
        email = {
            "none": "email not sent",
            "sending": f"email sending: {pub.sent} sent, {pub.failed} failed",
            "sent": f"email sent: {pub.sent} sent, {pub.failed} failed",
            "partial": f"email partial: {pub.sent} sent, {pub.failed} failed",
        }.get(pub.email_status, pub.email_status)
        if pub.email_status != "none":
            # Readers whose topics matched nothing in the edition: served, with no email.
            nomatch = store.ledger_counts(pub.digest_date).get("nomatch", 0)
            if nomatch:
                email += f", {nomatch} nothing matched ({pub.sent + nomatch} served)"
        out.append(f"  {pub.digest_date}  in feed  {email}  ({pub.source})")
        if pub.email_status != "sent":
            due = email_due(cfg, pub.digest_date, arrived(pub.source, pub.created_at, now), now)
            if due.due or not too_old(cfg, pub.digest_date, now):
                pending.append(f"  {pub.digest_date}  {'due now' if due.due else due.reason}")
            else:
                old += 1
    out.append("")
    out.append("pending emails:" if pending else "pending emails: none")
    out.extend(pending)
    if old:
        out.append(
            f"  ({old} older than [schedule] max_age_days = {cfg.schedule.max_age_days} are "
            "not emailed automatically; `publisher send --digest FILE` sends one)"
        )
    from .bounces.rates import rate_lines

    out.extend(rate_lines(store, pubs))
    problems = json.loads(store.get_meta(META_PROBLEMS) or "[]")
    out.append("")
    out.append("problems:" if problems else "problems: none")
    out.extend(f"  {p}" for p in problems)
    return out
