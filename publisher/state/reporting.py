"""The numbers behind `publisher report`: plain aggregates over the tables publisher already
keeps (subscribers, suppressions, publications, bounce events, the audit trail). Read-only, a
few queries per report, each over an indexed column or a small table.

History (readers by status over time, signups and unsubscribes per day) comes from the audit
trail, which starts when the database was created or upgraded to a release that keeps it
(`history_start`)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import sqlalchemy as sa

from .lifecycle import Action
from .schema import (
    ACTIVE,
    STATUSES,
    UNSUBSCRIBED,
    audit_log,
    bounce_events,
    meta,
    publications,
    subscribers,
    suppressions,
)


@dataclass(frozen=True, slots=True)
class SendRow:
    """One emailed digest."""

    date: dt.date
    sent: int
    failed: int
    bounced: int  # distinct addresses with a hard, soft or blocked event naming the digest
    complained: int
    unsubscribed: int  # unsubscribes in the 7 days from the digest's date
    seconds: float | None  # from the send's start to its end, when it ended

    @property
    def attempted(self) -> int:
        return self.sent + self.failed

    @property
    def bounce_rate(self) -> float:
        return self.bounced / max(self.attempted, 1)

    @property
    def complaint_rate(self) -> float:
        return self.complained / max(self.sent, 1)

    @property
    def per_second(self) -> float | None:
        return self.sent / self.seconds if self.seconds else None


def status_counts(engine: sa.Engine) -> dict[str, int]:
    q = sa.select(subscribers.c.status, sa.func.count()).group_by(subscribers.c.status)
    with engine.connect() as conn:
        return {status: n for status, n in conn.execute(q)}


def _utc(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The start of `day` in `tz`, as the naive UTC the tables keep."""
    return dt.datetime.combine(day, dt.time(), tz).astimezone(dt.UTC).replace(tzinfo=None)


def _local_day(moment: dt.datetime, tz: dt.tzinfo) -> dt.date:
    return moment.replace(tzinfo=dt.UTC).astimezone(tz).date()


def joined_per_day(
    engine: sa.Engine, since: dt.date, tz: dt.tzinfo
) -> dict[tuple[dt.date, str], int]:
    """{(day, source): subscribers created that day}, from `since` on (days in `tz`)."""
    q = sa.select(subscribers.c.created_at, subscribers.c.source).where(
        subscribers.c.created_at >= _utc(since, tz)
    )
    out: dict[tuple[dt.date, str], int] = {}
    with engine.connect() as conn:
        for created, source in conn.execute(q):
            key = (_local_day(created, tz), source)
            out[key] = out.get(key, 0) + 1
    return out


def sends(engine: sa.Engine, since: dt.date, tz: dt.tzinfo) -> list[SendRow]:
    """Every digest from `since` on that was emailed, oldest first; a digest's unsubscribes are
    those of the 7 days from its date's midnight in `tz`."""
    pub = publications.c
    q = (
        sa.select(
            pub.digest_date, pub.sent, pub.failed, pub.email_started_at, pub.email_finished_at
        )
        # The daily editions (a weekly one is filed under its Monday, beside that day's).
        .where(pub.digest_date >= since, (pub.sent + pub.failed) > 0, pub.edition == "daily")
        .order_by(pub.digest_date)
    )
    ev = bounce_events.c
    kinds = (
        sa.select(ev.digest_date, ev.kind, sa.func.count(sa.distinct(ev.email)))
        .where(ev.digest_date >= since)
        .group_by(ev.digest_date, ev.kind)
    )
    unsub = sa.select(suppressions.c.created_at).where(
        suppressions.c.reason == UNSUBSCRIBED,
        suppressions.c.created_at >= _utc(since, tz),
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
        by_kind: dict[dt.date, dict[str, int]] = {}
        for day, kind, n in conn.execute(kinds):
            by_kind.setdefault(day, {})[kind] = n
        left = sorted(created for (created,) in conn.execute(unsub))
    out = []
    for day, sent, failed, started, finished in rows:
        k = by_kind.get(day, {})
        start = _utc(day, tz)
        end = start + dt.timedelta(days=7)
        out.append(
            SendRow(
                date=day,
                sent=sent,
                failed=failed,
                bounced=k.get("hard", 0) + k.get("soft", 0) + k.get("blocked", 0),
                complained=k.get("complaint", 0),
                unsubscribed=sum(1 for t in left if start <= t < end),
                seconds=(finished - started).total_seconds() if started and finished else None,
            )
        )
    return out


def event_kinds(engine: sa.Engine, since: dt.date, tz: dt.tzinfo) -> dict[str, int]:
    """Bounce events by kind (hard, soft, blocked, complaint, unsubscribe, ignored...)."""
    q = (
        sa.select(bounce_events.c.kind, sa.func.count())
        .where(bounce_events.c.created_at >= _utc(since, tz))
        .group_by(bounce_events.c.kind)
    )
    with engine.connect() as conn:
        return {kind: n for kind, n in conn.execute(q)}


def history_start(engine: sa.Engine) -> tuple[dt.datetime | None, bool]:
    """When the audit trail began (naive UTC; None: no trail), and whether the database is
    older than that (upgraded from a release without one: it has subscribers or publications
    from before), so that its history starts at the upgrade."""
    with engine.connect() as conn:
        value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "audit_started")).scalar()
        if value is None:
            return None, False
        started = dt.datetime.fromisoformat(value)
        older = conn.execute(
            sa.select(
                sa.select(sa.func.min(subscribers.c.created_at)).scalar_subquery(),
                sa.select(sa.func.min(publications.c.created_at)).scalar_subquery(),
            )
        ).one()
    return started, any(t is not None and t < started for t in older)


def status_history(
    engine: sa.Engine, days: list[dt.date], tz: dt.tzinfo
) -> dict[dt.date, dict[str, int]]:
    """{day: {status: readers at the end of that day}} for `days` (ascending, in `tz`): today's
    counts, with the audit trail's status changes since each day's end undone."""
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(status_counts(engine))
    if not days:
        return {}
    actions = [a.value for a in Action if a not in _NO_STATUS]
    q = (
        sa.select(audit_log.c.at, audit_log.c.old_values, audit_log.c.new_values)
        .where(audit_log.c.action.in_(actions), audit_log.c.at >= _utc(days[0], tz))
        .order_by(audit_log.c.at.desc())
    )
    with engine.connect() as conn:
        changes = conn.execute(q).all()
    out: dict[dt.date, dict[str, int]] = {}
    i = 0
    for day in reversed(days):
        end = _utc(day + dt.timedelta(days=1), tz)
        while i < len(changes) and changes[i].at >= end:  # after this day: undo it
            old = json.loads(changes[i].old_values).get("status")
            new = json.loads(changes[i].new_values).get("status")
            if new != old:
                if new in counts:
                    counts[new] -= 1
                if old in counts:
                    counts[old] += 1
            i += 1
        out[day] = dict(counts)
    return out


_NO_STATUS = (Action.PREFERENCES, Action.SEND_STARTED, Action.SEND_FINISHED)
# What `actions_per_day` counts (the same actions as /metrics' counters).
DAILY_ACTIONS = (Action.SIGNUP, Action.CONFIRM, Action.UNSUBSCRIBE)


def actions_per_day(
    engine: sa.Engine, since: dt.date, tz: dt.tzinfo
) -> dict[tuple[dt.date, str], int]:
    """{(day, action): entries} for signups, confirmations and unsubscribes from `since` on
    (days in `tz`), from the audit trail's (action, at) index."""
    q = sa.select(audit_log.c.at, audit_log.c.action).where(
        audit_log.c.action.in_([str(a) for a in DAILY_ACTIONS]),
        audit_log.c.at >= _utc(since, tz),
    )
    out: dict[tuple[dt.date, str], int] = {}
    with engine.connect() as conn:
        for at, action in conn.execute(q):
            key = (_local_day(at, tz), action)
            out[key] = out.get(key, 0) + 1
    return out


def readers_by_cadence(engine: sa.Engine) -> dict[str, int]:
    """{cadence: active readers}."""
    q = (
        sa.select(subscribers.c.cadence, sa.func.count())
        .where(subscribers.c.status == ACTIVE)
        .group_by(subscribers.c.cadence)
    )
    with engine.connect() as conn:
        return {cadence: n for cadence, n in conn.execute(q)}


def readers_by_topic(engine: sa.Engine) -> dict[str, int]:
    """{topic name: active readers who chose it} ("" for readers of every paper); paused readers
    are left out (they get nothing)."""
    q = (
        sa.select(subscribers.c.topics, sa.func.count())
        .where(subscribers.c.status == ACTIVE, subscribers.c.cadence != "paused")
        .group_by(subscribers.c.topics)
    )
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for cell, n in conn.execute(q):
            for name in [t for t in cell.split(";") if t] or [""]:
                out[name] = out.get(name, 0) + n
    return out
