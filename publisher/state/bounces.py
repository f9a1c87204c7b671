"""Inbound mail in the database: the messages read, the events found in them, and the policy.

`record_inbound` stores one message and its events and acts on each, in one transaction:

- ``complaint``: the reader is unsubscribed and suppressed at once (reason ``complaint``);
- ``unsubscribe`` (a mail to the List-Unsubscribe mailto address): unsubscribed and suppressed;
- ``hard``: counts toward `[subscribers] bounce_limit`, as a 5xx at RCPT TO does;
- ``soft``: suppresses once `soft_limit` soft bounces fell on distinct days (the digest's date
  when the VERP token names it, else the day the bounce came) within `soft_window_days`, counting
  only those after the last digest sent to the reader that did not bounce (a delivery resets);
- ``blocked``, ``ignored`` and ``unverified`` (a report without a valid VERP token while
  `return_path` is set, with what it claimed in ``reported_kind``): recorded, nothing else.

An event matched by address, not by a token (`return_path` unset), acts only on an address the
ledger shows was sent a digest within `mailed_within_days`: anyone can mail the bounce address,
and this bounds who a forged report can reach to the readers mailed lately. An address that is
no subscriber is recorded (action ``unknown address``), never dropped. A message already
imported (same SHA-256 of its bytes) changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..mailrules import enhanced_status
from . import lifecycle
from .schema import (
    SENT,
    UNSUBSCRIBED,
    _key,
    _now,
    bounce_events,
    bounce_messages,
    dialect_insert,
    ledger,
    subscribers,
    suppressions,
)


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One recipient's event in an inbound message, before the policy acts on it."""

    email: str
    kind: str
    status: str = ""
    reason: str = ""
    subscriber_id: int | None = None
    digest_date: dt.date | None = None
    # `unverified` events: the kind the report claimed.
    reported_kind: str = ""
    # Sisimai's reason (publisher/mailrules.py CAUSES).
    cause: str = ""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One inbound message to record: its key, where it came from, its bytes and events."""

    sha256: str
    source: str
    raw: bytes
    summary: str
    events: list[InboundEvent]
    # The size of the message as received, when `raw` is only what is kept of it.
    size: int | None = None


_Sub = lifecycle.Row

# Kinds that act on a reader (the others are only recorded).
_ACTING = ("complaint", "unsubscribe", "hard", "soft")


class _Subscribers:
    """The subscribers a batch of events is about, read (and locked) in one query, and which
    of the addresses matched without a token were mailed lately (one more query)."""

    def __init__(
        self,
        conn: sa.Connection,
        events: list[InboundEvent],
        mailed_within_days: int,
        now: dt.datetime,
    ) -> None:
        events = [e for e in events if e.kind != "unverified"]
        ids = {e.subscriber_id for e in events if e.subscriber_id is not None}
        emails = {_key(e.email) for e in events if e.email}
        self.by_id: dict[int, _Sub] = {}
        self.by_email: dict[str, _Sub] = {}
        self.mailed: set[str] = set()
        by_address = {
            _key(e.email)
            for e in events
            if e.subscriber_id is None and e.email and e.kind in _ACTING
        }
        if by_address:
            since = now.date() - dt.timedelta(days=max(mailed_within_days, 1))
            self.mailed = set(
                conn.execute(
                    sa.select(subscribers.c.email)
                    .join(ledger, ledger.c.subscriber_id == subscribers.c.id)
                    .where(subscribers.c.email.in_(by_address), ledger.c.status == SENT)
                    .where(ledger.c.digest_date >= since)
                    .distinct()
                ).scalars()
            )
        if not ids and not emails:
            return
        for sub in lifecycle.lock_many(conn, ids, emails):
            self.by_id[sub.id] = self.by_email[sub.email] = sub

    def find(self, event: InboundEvent) -> _Sub | None:
        if event.kind == "unverified":
            return None  # a claim nobody signed is about nobody
        sub = self.by_id.get(event.subscriber_id) if event.subscriber_id is not None else None
        if sub is None and event.email:
            sub = self.by_email.get(_key(event.email))
        return sub


@dataclass(frozen=True, slots=True)
class BouncePolicy:
    hard_limit: int = 1
    soft_limit: int = 3
    soft_window_days: int = 30
    # An event matched by address (no token) acts only on a reader sent a digest within this
    # many days ([bounces] token_max_age_days).
    mailed_within_days: int = 180


@dataclass(frozen=True, slots=True)
class BounceEvent:
    id: int
    message_id: int | None
    email: str
    subscriber_id: int | None
    digest_date: dt.date | None
    kind: str
    status: str
    reason: str
    action: str
    created_at: dt.datetime
    source: str
    reported_kind: str = ""
    cause: str = ""


class BouncesMixin:
    engine: sa.Engine

    def known_bounce_messages(self, shas: list[str]) -> list[str]:
        """The ones among `shas` already imported (one query)."""
        if not shas:
            return []
        with self.engine.connect() as conn:
            q = sa.select(bounce_messages.c.sha256).where(bounce_messages.c.sha256.in_(shas))
            return list(conn.execute(q).scalars())

    def record_inbound(
        self,
        *,
        sha256: str,
        source: str,
        raw: bytes,
        summary: str,
        events: list[InboundEvent],
        policy: BouncePolicy,
        now: dt.datetime | None = None,
    ) -> list[str] | None:
        """Store one inbound message and act on its events; the action taken for each event,
        or None if this message was imported before (then nothing changes)."""
        item = InboundMessage(sha256, source, raw, summary, events)
        return self.record_inbound_batch([item], policy, now=now)[0]

    def record_inbound_batch(
        self,
        items: list[InboundMessage],
        policy: BouncePolicy,
        *,
        now: dt.datetime | None = None,
    ) -> list[list[str] | None]:
        """`record_inbound` for many messages in one transaction (an import of thousands pays
        one commit a batch, one query for the known messages and one for the subscribers)."""
        now = now or _now()
        results: list[list[str] | None] = []
        with self._write() as conn:  # type: ignore[attr-defined]
            shas = [i.sha256 for i in items]
            known = set(
                conn.execute(
                    sa.select(bounce_messages.c.sha256).where(bounce_messages.c.sha256.in_(shas))
                ).scalars()
            )
            events = [e for i in items for e in i.events]
            subs = _Subscribers(conn, events, policy.mailed_within_days, now)
            insert = dialect_insert(conn.dialect.name, bounce_messages).on_conflict_do_nothing(
                index_elements=["sha256"]
            )
            pending: list[dict[str, Any]] = []
            for item in items:
                if item.sha256 in known:
                    results.append(None)
                    continue
                known.add(item.sha256)
                res = conn.execute(
                    insert,
                    {
                        "sha256": item.sha256,
                        "source": item.source[:1000],
                        "size": item.size if item.size is not None else len(item.raw),
                        "summary": item.summary[:500],
                        "raw": item.raw,
                        "received_at": now,
                    },
                )
                if res.rowcount == 0:  # imported meanwhile by another process
                    results.append(None)
                    continue
                message_id = res.inserted_primary_key[0]
                actions = []
                for event in item.events:
                    if event.kind == "soft" and pending:
                        # the soft count reads this reader's earlier events: write them first
                        conn.execute(bounce_events.insert(), pending)
                        pending = []
                    row = subs.find(event)
                    action = self._act(conn, row, event, policy, now, subs.mailed)
                    email = row.email if row else _key(event.email) if event.email else ""
                    pending.append(
                        {
                            "message_id": message_id,
                            "email": email[:320],
                            "subscriber_id": row.id if row else None,
                            "digest_date": event.digest_date,
                            "kind": event.kind,
                            "status": event.status[:16],
                            "reason": event.reason[:500],
                            "action": action[:200],
                            "created_at": now,
                            "reported_kind": event.reported_kind[:16],
                            "cause": event.cause[:16],
                        }
                    )
                    actions.append(action)
                results.append(actions)
            if pending:
                conn.execute(bounce_events.insert(), pending)
        return results

    def record_send_refusal(
        self, email: str, digest_date: dt.date, kind: str, reply: str, action: str, cause: str = ""
    ) -> None:
        """Record a refusal during the send (RCPT TO or DATA) as an event with no message."""
        key = _key(email)
        with self._write() as conn:  # type: ignore[attr-defined]
            sub_id = conn.execute(
                sa.select(subscribers.c.id).where(subscribers.c.email == key)
            ).scalar()
            conn.execute(
                bounce_events.insert().values(
                    message_id=None,
                    email=key,
                    subscriber_id=sub_id,
                    digest_date=digest_date,
                    kind=kind,
                    status=_status_of(reply),
                    reason=reply[:500],
                    action=action[:200],
                    created_at=_now(),
                    cause=cause[:16],
                )
            )

    def _act(
        self,
        conn: sa.Connection,
        row: Any,
        event: InboundEvent,
        policy: BouncePolicy,
        now: dt.datetime,
        mailed: set[str],
    ) -> str:
        kind = event.kind
        if kind == "unverified":
            return "recorded: no valid VERP token, acted on nobody"
        if kind in ("blocked", "ignored"):
            return "recorded"
        if row is None:
            return "unknown address"
        if event.subscriber_id is None and row.email not in mailed:
            days = policy.mailed_within_days
            return f"recorded: not mailed within {days} days (no token), acted on nobody"
        if kind in ("complaint", "unsubscribe"):
            reason = "complaint" if kind == "complaint" else "unsubscribed by mail"
            action = lifecycle.Action.COMPLAINT if kind == "complaint" else None
            lifecycle.end(conn, row, UNSUBSCRIBED, reason, now, action or "unsubscribe")
            return f"suppressed ({reason})"
        if kind == "hard":
            reason = f"bounced: {event.status} {event.reason}"
            return lifecycle.hard_bounce(conn, row, reason, policy.hard_limit, now)
        if kind == "soft":
            day = event.digest_date or now.date()
            limit, window = policy.soft_limit, policy.soft_window_days
            return lifecycle.soft_bounce(conn, row, day, limit, window, now)
        return "recorded"

    # -- reading ----------------------------------------------------------------------------

    def iter_bounce_events(
        self, kind: str | None = None, email: str | None = None, *, event_id: int | None = None
    ) -> Iterator[BounceEvent]:
        q = sa.select(bounce_events, bounce_messages.c.source).select_from(
            bounce_events.outerjoin(
                bounce_messages, bounce_messages.c.id == bounce_events.c.message_id
            )
        )
        if kind:
            q = q.where(bounce_events.c.kind == kind)
        if email:
            q = q.where(bounce_events.c.email == _key(email))
        if event_id is not None:
            q = q.where(bounce_events.c.id == event_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(bounce_events.c.id)).all()
        for r in rows:
            yield BounceEvent(
                id=r.id,
                message_id=r.message_id,
                email=r.email,
                subscriber_id=r.subscriber_id,
                digest_date=r.digest_date,
                kind=r.kind,
                status=r.status,
                reason=r.reason,
                action=r.action,
                created_at=r.created_at,
                source=r.source or "smtp (during the send)",
                reported_kind=r.reported_kind,
                cause=r.cause,
            )

    def suppression_notes(self, emails: list[str]) -> dict[str, str]:
        """{address: why it is suppressed, and the event that did it when one did} for the
        suppressed ones among `emails` (what `subscribers list` shows)."""
        keys = [_key(e) for e in emails]
        if not keys:
            return {}
        with self.engine.connect() as conn:
            reasons = dict(
                conn.execute(
                    sa.select(suppressions.c.email, suppressions.c.reason).where(
                        suppressions.c.email.in_(keys)
                    )
                ).all()
            )
            if not reasons:
                return {}
            last = dict(
                conn.execute(
                    sa.select(bounce_events.c.email, sa.func.max(bounce_events.c.id))
                    .where(bounce_events.c.email.in_(list(reasons)))
                    .where(bounce_events.c.action.like("suppressed%"))
                    .group_by(bounce_events.c.email)
                ).all()
            )
        return {
            email: reason + (f" (bounce event {last[email]})" if email in last else "")
            for email, reason in reasons.items()
        }

    def bounce_message(self, message_id: int) -> tuple[str, bytes] | None:
        """(source, raw bytes) of a kept inbound message."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(bounce_messages.c.source, bounce_messages.c.raw).where(
                    bounce_messages.c.id == message_id
                )
            ).first()
        return (row.source, bytes(row.raw)) if row else None

    def bounce_counts(self, digest_dates: list[dt.date]) -> dict[dt.date, dict[str, int]]:
        """{digest date: {kind: distinct addresses}} for the events that name a digest."""
        out: dict[dt.date, dict[str, int]] = {d: {} for d in digest_dates}
        if not digest_dates:
            return out
        q = (
            sa.select(
                bounce_events.c.digest_date,
                bounce_events.c.kind,
                sa.func.count(sa.distinct(bounce_events.c.email)),
            )
            .where(bounce_events.c.digest_date.in_(digest_dates))
            .group_by(bounce_events.c.digest_date, bounce_events.c.kind)
        )
        with self.engine.connect() as conn:
            for date, kind, n in conn.execute(q):
                out[date][kind] = n
        return out


def _status_of(reply: str) -> str:
    return enhanced_status(reply) or reply[:3]
