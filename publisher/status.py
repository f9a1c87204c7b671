"""`publisher status`: what the scheduler has seen and emailed, what is pending, the next send.

Read-only: it reads the publications and the meta keys that `publisher run` writes
(publisher/scheduler.py) and judges what is pending with the same policy (publisher/policy.py).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from .bounces.rates import rate_lines
from .config import Config
from .health import META_LAST_TICK, META_PROBLEMS, META_PULL, Finding, exit_code, findings
from .policy import arrived, email_due, next_send_moment, too_old
from .state import EmailStatus, SendStatus, Store
from .state.publications import Publication


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
    out.append(f"weekly edition: {next_weekly(cfg, store, now)}")
    out.append(f"polling:        every {cfg.schedule.poll_seconds:g} s in {cfg.digests.folder}")
    if cfg.digests.git:
        out.append(
            f"upstream:       {cfg.digests.git} ({cfg.digests.git_branch}): {_pulled(store)}"
        )
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
            "partial": f"email partial: {pub.sent} sent, {pub.failed} failed"
            + (f", retried {pub.email_retries}x" if pub.email_retries else ""),
            "final": f"email final: {pub.sent} sent, {pub.failed} failed after "
            f"{pub.email_retries} retries (no more automatic retries)",
        }.get(pub.email_status, pub.email_status)
        if pub.email_status != EmailStatus.NONE:
            # Readers whose topics matched nothing in the edition: served, with no email.
            nomatch = store.ledger_counts(pub.digest_date, statuses=(SendStatus.NOMATCH,))[
                SendStatus.NOMATCH
            ]
            if nomatch:
                email += f", {nomatch} nothing matched ({pub.sent + nomatch} served)"
        out.append(f"  {pub.digest_date}  in feed  {email}  ({pub.source})")
        if pub.email_status == EmailStatus.PARTIAL and not too_old(cfg, pub.digest_date, now):
            pending.append(f"  {pub.digest_date}  {_retry_note(cfg, pub, now)}")
        elif pub.email_status not in (EmailStatus.SENT, EmailStatus.FINAL):
            due = email_due(cfg, pub.digest_date, arrived(pub.source, pub.created_at, now), now)
            if due.due or not too_old(cfg, pub.digest_date, now):
                pending.append(f"  {pub.digest_date}  {'due now' if due.due else due.reason}")
            else:
                old += 1
    out.append("")
    out.append("readers per edition (the latest of each):")
    for row in edition_counts(store):
        if row["edition"] is None:
            out.append(f"  {row['kind']:<7} none sent yet")
            continue
        out.append(
            f"  {row['kind']:<7} {row['edition']}: {row['served']} served ({row['mailed']} "
            f"mailed, {row['nomatch']} nothing matched), {row['failed']} failed"
            + (f", {row['queued']} queued" if row["queued"] else "")
        )
    out.append("")
    out.append("pending emails:" if pending else "pending emails: none")
    out.extend(pending)
    if old:
        out.append(
            f"  ({old} older than [schedule] max_age_days = {cfg.schedule.max_age_days} are "
            "not emailed automatically; `publisher send --digest FILE` sends one)"
        )
    out.extend(rate_lines(store, pubs))
    problems = json.loads(store.get_meta(META_PROBLEMS) or "[]")
    out.append("")
    out.append("problems:" if problems else "problems: none")
    out.extend(f"  {p}" for p in problems)
    found = findings(cfg, store, now=now)
    out.append("")
    out.append(f"health: {_verdict(found)}")
    out.extend(f"  {f.severity}: {f.kind}: {f.message}" for f in found)
    return out


def next_weekly(cfg: Config, store: Store, now: dt.datetime) -> str:
    """The next weekly edition `publisher run` sends, and when ([schedule] weekly_day)."""
    from .editions import Week
    from .policy import weekly_due, weekly_moment

    week = Week.last_complete(now.astimezone(cfg.tz).date())
    pub = store.get_publication(week.monday, edition="weekly")
    day = f"[schedule] weekly_day {cfg.schedule.weekly_day} at send_at"
    if pub is None or pub.email_status in ("none", "sending"):
        due = weekly_due(cfg, week, now)
        return f"{week} {'due now' if due.due else due.reason} ({day})"
    if pub.email_status == "partial":
        return f"{week} partial: its failed readers are retried as a daily send's ({day})"
    at = weekly_moment(cfg, week.next()).isoformat(timespec="minutes")
    return f"{week} {pub.email_status}; {week.next()} at {at} ({day})"


def edition_counts(store: Store) -> list[dict[str, Any]]:
    """For the daily and the weekly edition, the latest one emailed and its readers: served
    (mailed, or nothing matched their topics), failed, still queued."""
    from .editions import Week

    rows: list[dict[str, Any]] = []
    for kind in ("daily", "weekly"):
        latest = next(
            (p for p in store.list_publications(20, edition=kind) if p.email_status != "none"),
            None,
        )
        if latest is None:
            rows.append({"kind": kind, "edition": None})
            continue
        counts = store.ledger_counts(latest.digest_date, edition=kind)
        name = str(Week.of(latest.digest_date)) if kind == "weekly" else str(latest.digest_date)
        mailed, nomatch = counts.get("sent", 0), counts.get("nomatch", 0)
        rows.append(
            {
                "kind": kind,
                "edition": name,
                "email": latest.email_status,
                "served": mailed + nomatch,
                "mailed": mailed,
                "nomatch": nomatch,
                "failed": counts.get("failed", 0),
                "queued": counts.get("queued", 0),
            }
        )
    return rows


def _verdict(found: list[Finding]) -> str:
    return {0: "ok", 1: "warnings", 2: "errors"}[exit_code(found)]


def status_json(
    cfg: Config, store: Store, *, now: dt.datetime | None = None, limit: int = 10
) -> dict[str, Any]:
    """What `publisher status --json` prints: the same facts as the lines, for machines."""
    now = now or dt.datetime.now(dt.UTC)
    found = findings(cfg, store, now=now)
    return {
        "health": _verdict(found),
        "exit": exit_code(found),
        "findings": [f.as_dict() for f in found],
        "last_tick": store.get_meta(META_LAST_TICK),
        "next_send": next_send_moment(cfg, now).isoformat(timespec="minutes"),
        "upstream": json.loads(store.get_meta(META_PULL) or "null") if cfg.digests.git else None,
        "digests": [
            {
                "date": p.digest_date.isoformat(),
                "source": p.source,
                "email": p.email_status,
                "sent": p.sent,
                "failed": p.failed,
            }
            for p in store.list_publications(limit)
        ],
        "editions": edition_counts(store),
    }


def _pulled(store: Store) -> str:
    """The last pull of [digests] git, as `publisher run` recorded it."""
    last = json.loads(store.get_meta(META_PULL) or "null")
    if last is None:
        return "not pulled yet by `publisher run`"
    if last["ok"]:
        return f"pulled at {last['at']} ({last['head'][:12]})"
    return f"{last['failures']} failed pulls in a row, the last at {last['at']}: {last['error']}"


def _retry_note(cfg: Config, pub: Publication, now: dt.datetime) -> str:
    """When `publisher run` retries a partial send's failed rows (publisher/scheduler.py)."""
    times = cfg.schedule.retry_failed_times
    if pub.email_retries >= times:
        return f"failed rows retried {times} times: final at the next tick"
    base = pub.email_finished_at or now.astimezone(dt.UTC).replace(tzinfo=None)
    at = (base + dt.timedelta(hours=cfg.schedule.retry_failed_hours)).replace(tzinfo=dt.UTC)
    when = "due now" if at <= now else at.astimezone(cfg.tz).isoformat(timespec="minutes")
    return f"retry {pub.email_retries + 1} of {times} of the failed: {when}"
