"""The subscriber lifecycle: the only code that writes a subscriber's status, its hard-bounce
count and the suppression list.

Every change of who is mailed goes through here, whoever asks for it: the operator's CLI, the
web (signup, confirm, unsubscribe), a send (a 5xx at RCPT TO), an inbound report (bounce,
complaint, mailto unsubscribe) and the CSV sync. The callers (publisher/state/subscribers.py,
publisher/state/bounces.py) open the transaction; the functions here take its connection.

The rules:

- an address that is unsubscribed, bounced or on the suppression list is never mailed again;
  only `resubscribe` (fresh consent: a confirmed opt-in, an operator's explicit add) lifts it;
- a hard bounce counts toward the limit (`[subscribers] bounce_limit`); at the limit the address
  is bounced and suppressed; an address already unsubscribed or bounced is not counted again;
- soft bounces suppress once they fell on `soft_limit` distinct days within the window, after the
  last digest that reached the reader (`soft_bounce_days`);
- a complaint or an unsubscribe (web, mail, operator) unsubscribes and suppresses at once;
- the CSV: a new address becomes active (unsubscribed if suppressed); a `removed` one that comes
  back becomes active (unless suppressed); a CSV subscriber missing from the file becomes
  `removed`.

THE AUDIT TRAIL (`audit_log`): every change made here is recorded in the same transaction, with
the time, the actor (`acting_as`: `user@host` for the operator's CLI, `web:` and a hash of the
client address for the web, `system` for what runs by itself), the action (`Action`), the
subscriber (id and address) and the changed fields before and after. A call that changes
nothing records nothing. The trail is append-only: nothing in the application updates or
deletes its rows, except an erasure (`erase`), which replaces the erased address by its
suppression hash in the entries about it (the reader's right to erasure outranks the record); on
PostgreSQL a trigger (migration 0010) refuses every other UPDATE and DELETE of it).

LOCK ORDER: the subscriber row first (SELECT ... FOR UPDATE, or the UPDATE/upsert that writes
it), then the suppression list. Every function here takes them in that order, so two writers
(an unsubscribe and a resubscribe of one address, a send's bounce and an inbound report) never
wait for each other's rows in a cycle, which PostgreSQL would end as a deadlock.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import enum
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .schema import (
    ACTIVE,
    BOUNCED,
    PENDING,
    REMOVED,
    SENT,
    UNSUBSCRIBED,
    Status,
    _now,
    audit_log,
    bounce_events,
    dialect_insert,
    ledger,
    subscribers,
    suppressions,
    upsert,
)

_HASH_PREFIX = "sha256:"
SYSTEM = "system"


class Action(enum.StrEnum):
    """What an audit entry records."""

    SIGNUP = "signup"  # the web form: a new pending subscriber
    CONFIRM = "confirm"  # a confirmed opt-in (the web link)
    ADD = "add"  # `subscribers add`
    RESUBSCRIBE = "resubscribe"  # `subscribers add --resubscribe`, the preferences page
    UNSUBSCRIBE = "unsubscribe"  # the web link, `subscribers remove`, a mailto unsubscribe
    COMPLAINT = "complaint"  # an abuse report (inbound)
    BOUNCE = "bounce"  # a hard bounce counted, or a suppression for bounces
    SUPPRESS = "suppress"  # an address suppressed with no subscriber row
    PREFERENCES = "preferences"  # cadence, topics or cap changed (web, `subscribers set`)
    IMPORT = "import"  # a CSV import or sync: added, reactivated, removed, choice changed
    DISCARD = "discard"  # a signup whose confirmation mail could not be sent, dropped
    DELETE = "delete"  # the reader deleted their data
    SEND_STARTED = "send_started"
    SEND_FINISHED = "send_finished"


_ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("publisher_actor", default=SYSTEM)


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Record the changes made inside the block as `actor`'s (default: `system`)."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def current_actor() -> str:
    return _ACTOR.get()


# One encoder (json.dumps with options builds a new one per call: an import's 10,000 entries).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _json(values: dict[str, Any]) -> str:
    return _ENCODER.encode(values)[:2000] if values else "{}"


def entry(
    action: str,
    subscriber_id: int | None,
    email: str,
    old: dict[str, Any],
    new: dict[str, Any],
    now: dt.datetime,
    actor: str | None = None,
) -> dict[str, Any]:
    """One audit row, to insert with `audit` (alone or in a batch)."""
    return {
        "at": now,
        "actor": (actor or current_actor())[:200],
        "action": str(action),
        "subscriber_id": subscriber_id,
        "email": email[:320],
        "old_values": _json(old),
        "new_values": _json(new),
    }


def audit(conn: sa.Connection, *entries: dict[str, Any]) -> None:
    """Append entries (from `entry`) to the audit trail: one statement for many."""
    if entries:
        conn.execute(audit_log.insert(), list(entries))


def record(
    conn: sa.Connection,
    action: str,
    subscriber_id: int | None,
    email: str,
    old: dict[str, Any],
    new: dict[str, Any],
    now: dt.datetime | None = None,
    actor: str | None = None,
) -> None:
    """Append one entry to the audit trail (for changes made outside this module: a send)."""
    audit(conn, entry(action, subscriber_id, email, old, new, now or _now(), actor))


# Statuses nothing but fresh consent lifts.
ENDED = (UNSUBSCRIBED, BOUNCED)


def suppression_hash(key: str) -> str:
    """How the suppression list keeps an address whose data was deleted: a one-way hash of the
    normalised address (matched on a later add, never shown)."""
    return _HASH_PREFIX + hashlib.sha256(f"publisher-suppression\x00{key}".encode()).hexdigest()


@dataclass(slots=True)
class Row:
    """A subscriber as the lifecycle reads and changes it (locked for the transaction)."""

    id: int
    email: str
    status: str
    hard_bounces: int


def lock(conn: sa.Connection, key: str) -> Row | None:
    """The subscriber with address `key`, its row locked to the end of the transaction (the
    first step of the lock order), or None."""
    r = conn.execute(
        sa.select(
            subscribers.c.id, subscribers.c.email, subscribers.c.status, subscribers.c.hard_bounces
        )
        .where(subscribers.c.email == key)
        .with_for_update()
    ).first()
    return Row(r.id, r.email, r.status, r.hard_bounces) if r else None


def lock_many(conn: sa.Connection, ids: Iterable[int], emails: Iterable[str]) -> list[Row]:
    """The subscribers with any of these ids or addresses, locked, in id order (one query)."""
    ids, emails = list(ids), list(emails)
    if not ids and not emails:
        return []
    q = sa.select(
        subscribers.c.id, subscribers.c.email, subscribers.c.status, subscribers.c.hard_bounces
    ).where(sa.or_(subscribers.c.id.in_(ids), subscribers.c.email.in_(emails)))
    rows = conn.execute(q.order_by(subscribers.c.id).with_for_update())
    return [Row(r.id, r.email, r.status, r.hard_bounces) for r in rows]


# -- the suppression list (the second step of the lock order) ---------------------------------


def is_suppressed(conn: sa.Connection, key: str) -> bool:
    """Whether the address, or the hash a deletion left (`erase`), is suppressed."""
    q = sa.select(suppressions.c.email).where(
        suppressions.c.email.in_([key, suppression_hash(key)])
    )
    return conn.execute(q).first() is not None


def suppressed_among(conn: sa.Connection, keys: Iterable[str]) -> set[str]:
    """The suppressed ones among `keys` (by their own entry or their deletion hash), one query."""
    hashed = {suppression_hash(k): k for k in keys}
    q = sa.select(suppressions.c.email).where(suppressions.c.email.in_([*hashed.values(), *hashed]))
    return {hashed.get(e, e) for (e,) in conn.execute(q)}


_SUPPRESS: dict[str, Any] = {}


def suppress(conn: sa.Connection, key: str, reason: str, now: dt.datetime | None = None) -> bool:
    """Put an address on the suppression list (idempotent): it is never mailed again. An
    existing entry keeps its reason; a concurrent one for the same address wins. True if the
    entry is new. The statement is built once per dialect (an import runs it thousands of
    times)."""
    stmt = _SUPPRESS.get(conn.dialect.name)
    if stmt is None:
        stmt = dialect_insert(conn.dialect.name, suppressions).on_conflict_do_nothing(
            index_elements=["email"]
        )
        _SUPPRESS[conn.dialect.name] = stmt
    reason = " ".join(reason.split())[:200]
    res = conn.execute(stmt, {"email": key, "reason": reason, "created_at": now or _now()})
    return res.rowcount == 1


def suppress_address(
    conn: sa.Connection, key: str, reason: str, action: str = Action.SUPPRESS
) -> bool:
    """`suppress` for an operator's or a reader's request (recorded); True if new."""
    row = lock(conn, key)
    now = _now()
    new = suppress(conn, key, reason, now)
    if new:
        audit(conn, entry(action, row.id if row else None, key, {}, {"suppressed": reason}, now))
    return new


def _lift(conn: sa.Connection, key: str) -> bool:
    res = conn.execute(
        suppressions.delete().where(suppressions.c.email.in_([key, suppression_hash(key)]))
    )
    return res.rowcount > 0


# -- one subscriber ---------------------------------------------------------------------------


def add(
    conn: sa.Connection,
    key: str,
    name: str,
    status: str,
    source: str,
    *,
    rename: bool,
    action: str = Action.ADD,
) -> tuple[Any, bool]:
    """Add an address (already normalised); (row, created). An existing subscriber keeps its
    status; a new active one is unsubscribed if suppressed. Safe against a concurrent add of the
    same address (INSERT ... ON CONFLICT). A new row is recorded as `action`."""
    now = _now()
    if status == ACTIVE and is_suppressed(conn, key):
        status = UNSUBSCRIBED
    values = {
        "email": key,
        "name": name,
        "status": status,
        "source": source,
        "created_at": now,
        "updated_at": now,
        "hard_bounces": 0,
    }
    created = upsert(conn, subscribers, values, ["email"]) == 1
    if not created and rename and name:
        conn.execute(
            subscribers.update()
            .where(subscribers.c.email == key, subscribers.c.name != name)
            .values(name=name, updated_at=now)
        )
    row = conn.execute(sa.select(subscribers).where(subscribers.c.email == key)).one()
    if created:
        audit(conn, entry(action, row.id, key, {}, {"status": status, "source": source}, now))
    return row, created


def _set_status(conn: sa.Connection, row: Row, status: str, now: dt.datetime) -> None:
    row.status = status
    conn.execute(
        subscribers.update()
        .where(subscribers.c.id == row.id)
        .values(status=status, hard_bounces=row.hard_bounces, updated_at=now)
    )


def unsubscribe(
    conn: sa.Connection, key: str, reason: str = UNSUBSCRIBED, action: str = Action.UNSUBSCRIBE
) -> bool:
    """Unsubscribe and suppress an address for good; True if a subscriber was changed.
    Idempotent. An address with no subscriber row is still suppressed (so a later CSV row
    cannot mail it)."""
    # Lock the row even when it is already unsubscribed (an UPDATE filtered on the status
    # would not): a concurrent resubscribe then either ends before this reads the row, or
    # waits for this to end; the row and the suppression list always agree.
    row = lock(conn, key)
    if row is not None:
        changed = row.status != UNSUBSCRIBED
        end(conn, row, UNSUBSCRIBED, reason, _now(), action)
        return changed
    suppress_address(conn, key, reason, action)
    return False


def end(
    conn: sa.Connection,
    row: Row,
    status: str,
    reason: str,
    now: dt.datetime,
    action: str = Action.UNSUBSCRIBE,
) -> None:
    """Make a locked subscriber unsubscribed or bounced, and suppress it (with `reason`)."""
    if status not in ENDED:
        raise ValueError(f"not an ending status: {status!r}")
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    if row.status != status:
        old["status"], new["status"] = row.status, status
        _set_status(conn, row, status, now)
    if suppress(conn, row.email, reason, now):
        new["suppressed"] = " ".join(reason.split())[:200]
    if new:
        audit(conn, entry(action, row.id, row.email, old, new, now))


def resubscribe(
    conn: sa.Connection, key: str, name: str, source: str, action: str = Action.RESUBSCRIBE
) -> Any:
    """Fresh consent (a confirmed opt-in, an operator's explicit add): lift any suppression and
    make the address active, creating it if needed (a non-empty `name` replaces the stored one).
    Safe against a concurrent add or unsubscribe. `Action.CONFIRM` also stamps the confirmation
    time. Returns the row."""
    now = _now()
    before = lock(conn, key)
    values = {
        "email": key,
        "name": name,
        "status": ACTIVE,
        "source": source,
        "created_at": now,
        "updated_at": now,
        "hard_bounces": 0,
    }
    update: dict[str, Any] = {"status": ACTIVE, "hard_bounces": 0, "updated_at": now}
    if name:
        update["name"] = name
    if action == Action.CONFIRM:
        values["confirmed_at"] = update["confirmed_at"] = now
    upsert(conn, subscribers, values, ["email"], update=update)  # the row, then
    lifted = _lift(conn, key)  # the suppression
    row = conn.execute(sa.select(subscribers).where(subscribers.c.email == key)).one()
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    if before is None or before.status != ACTIVE:
        old["status"] = before.status if before else None
        new["status"] = ACTIVE
    if before is not None and before.hard_bounces:
        old["hard_bounces"], new["hard_bounces"] = before.hard_bounces, 0
    if lifted:
        new["suppression_lifted"] = True
    if new:
        audit(conn, entry(action, row.id, key, old, new, now))
    return row


def discard_pending(conn: sa.Connection, subscriber_id: int) -> bool:
    """Delete a subscriber row that is still `pending` (a signup whose confirmation mail could
    not be sent: nobody can confirm it). True if it was deleted."""
    email = conn.execute(
        sa.select(subscribers.c.email).where(
            subscribers.c.id == subscriber_id, subscribers.c.status == PENDING
        )
    ).scalar()
    res = conn.execute(
        subscribers.delete().where(
            subscribers.c.id == subscriber_id, subscribers.c.status == PENDING
        )
    )
    if res.rowcount > 0:
        audit(
            conn, entry(Action.DISCARD, subscriber_id, email or "", {"status": PENDING}, {}, _now())
        )
    return res.rowcount > 0


def choose(conn: sa.Connection, key: str, values: dict[str, Any], source: str) -> Any:
    """Change a reader's cadence, topics or cap (`values`), recording `source` (web, csv, cli)
    as who made it; the row, or None if there is none."""
    now = _now()
    cur = conn.execute(
        sa.select(subscribers).where(subscribers.c.email == key).with_for_update()
    ).first()
    if cur is None:
        return None
    conn.execute(
        subscribers.update()
        .where(subscribers.c.id == cur.id)
        .values(**values, choice_source=source, updated_at=now)
    )
    old = {k: getattr(cur, k) for k, v in values.items() if getattr(cur, k) != v}
    if old:
        new = {k: values[k] for k in old}
        audit(conn, entry(Action.PREFERENCES, cur.id, key, old, new, now))
    return conn.execute(sa.select(subscribers).where(subscribers.c.id == cur.id)).one()


def erase(
    conn: sa.Connection, key: str, subscriber_id: int | None, status: str | None, reason: str
) -> None:
    """The suppression and audit half of a deletion (`delete_data`, the row already gone): the
    address's own suppression goes and only its hash stays, so it is never mailed again unless
    its owner signs up anew; the audit trail keeps the hash in place of the address."""
    hashed = suppression_hash(key)
    conn.execute(suppressions.delete().where(suppressions.c.email == key))
    suppress(conn, hashed, reason)
    conn.execute(audit_log.update().where(audit_log.c.email == key).values(email=hashed))
    if subscriber_id is not None:
        old = {"status": status}
        audit(conn, entry(Action.DELETE, subscriber_id, hashed, old, {"deleted": True}, _now()))


# -- bounces ----------------------------------------------------------------------------------


def hard_bounce(conn: sa.Connection, row: Row, reason: str, limit: int, now: dt.datetime) -> str:
    """Count a hard bounce of a locked subscriber (a 5xx at RCPT TO, or an inbound report); at
    `limit` it is bounced and suppressed. Returns what was done (`suppressed (...)` when this
    bounce suppressed it)."""
    if row.status in ENDED:
        return f"already {row.status}"
    row.hard_bounces += 1
    count = row.hard_bounces
    if count >= max(limit, 1):
        end(conn, row, BOUNCED, reason, now, Action.BOUNCE)
        return f"suppressed (hard bounce {count}/{limit})"
    conn.execute(
        subscribers.update()
        .where(subscribers.c.id == row.id)
        .values(hard_bounces=count, updated_at=now)
    )
    old, new = {"hard_bounces": count - 1}, {"hard_bounces": count}
    audit(conn, entry(Action.BOUNCE, row.id, row.email, old, new, now))
    return f"counted (hard bounce {count}/{limit})"


def soft_bounce(
    conn: sa.Connection,
    row: Row,
    day: dt.date,
    soft_limit: int,
    window_days: int,
    now: dt.datetime,
) -> str:
    """The soft-bounce rule for a locked subscriber whose soft bounce fell on `day` (the
    digest's date, else the day it came): suppressed once soft bounces fell on `soft_limit`
    distinct days within `window_days`, counting only those after the last digest sent that
    did not bounce (a delivery resets)."""
    if row.status in ENDED:
        return f"already {row.status}"
    days = soft_bounce_days(conn, row, day, window_days, now)
    if len(days) >= max(soft_limit, 1):
        end(conn, row, BOUNCED, f"bounced: soft bounces on {len(days)} days", now, Action.BOUNCE)
        return f"suppressed (soft bounces on {len(days)} days)"
    return f"counted (soft bounce day {len(days)}/{soft_limit})"


def soft_bounce_days(
    conn: sa.Connection, row: Row, this_day: dt.date, window_days: int, now: dt.datetime
) -> set[dt.date]:
    """The distinct days of this reader's soft bounces in the window, `this_day` included,
    after the last digest sent to them that did not bounce."""
    since = now - dt.timedelta(days=max(window_days, 1))
    rows = conn.execute(
        sa.select(bounce_events.c.kind, bounce_events.c.digest_date, bounce_events.c.created_at)
        .where(bounce_events.c.subscriber_id == row.id)
        .where(bounce_events.c.kind.in_(("soft", "hard", "blocked")))
    ).all()
    bounced_days = {r.digest_date or r.created_at.date() for r in rows} | {this_day}
    soft = {
        r.digest_date or r.created_at.date()
        for r in rows
        if r.kind == "soft" and r.created_at >= since
    } | {this_day}
    sent = conn.execute(
        sa.select(ledger.c.digest_date)
        .where(ledger.c.email == row.email, ledger.c.status == SENT)
        .where(ledger.c.digest_date < this_day)
        .order_by(ledger.c.digest_date.desc())
        .limit(200)
    ).scalars()
    last_ok = next((d for d in sent if d not in bounced_days), None)
    return {d for d in soft if last_ok is None or d > last_ok}


# -- the CSV sync -----------------------------------------------------------------------------


def csv_new_status(suppressed: bool) -> Status:
    """A new address in the CSV: active, or unsubscribed if it is suppressed."""
    return Status.UNSUBSCRIBED if suppressed else Status.ACTIVE


def csv_returning_status(status: str, suppressed: bool) -> Status | None:
    """A known address in the CSV: the status it takes (None: it keeps its own). Only the CSV's
    own `removed` is undone by the row coming back, and not for a suppressed address."""
    return Status.ACTIVE if status == REMOVED and not suppressed else None


def csv_batch(
    conn: sa.Connection,
    run: int,
    merged: dict[str, str],
    choices: dict[str, dict[str, Any]],
    source: str,
) -> tuple[int, int, int]:
    """Apply one batch of CSV rows ({address: name}, {address: reader choice values}) for
    import `run`; (added, reactivated, rows already seen in this run)."""
    now = _now()
    added = reactivated = dups = 0
    existing = {
        r.email: r
        for r in conn.execute(
            sa.select(
                subscribers.c.id,
                subscribers.c.email,
                subscribers.c.name,
                subscribers.c.status,
                subscribers.c.csv_run,
                subscribers.c.cadence,
                subscribers.c.topics,
                subscribers.c.max_papers,
                subscribers.c.choice_source,
            ).where(subscribers.c.email.in_(list(merged)))
        )
    }
    suppressed = suppressed_among(conn, merged)
    new_rows = []
    entries: list[dict[str, Any]] = []
    for email, name in merged.items():
        row = existing.get(email)
        if row is None:
            new_rows.append(
                {
                    "email": email,
                    "name": name,
                    "status": csv_new_status(email in suppressed),
                    "source": source,
                    "created_at": now,
                    "updated_at": now,
                    "hard_bounces": 0,
                    "csv_run": run,
                    "cadence": "daily",
                    "topics": "",
                    "max_papers": 0,
                    "choice_source": "csv" if choices[email] else None,
                    **choices[email],
                }
            )
            added += 1
            continue
        if row.csv_run == run:
            dups += 1
        values: dict[str, Any] = {"csv_run": run}
        if name and name != row.name:
            values["name"] = name
        audited: dict[str, Any] = {}
        status = csv_returning_status(row.status, email in suppressed)
        if status is not None:
            values["status"] = audited["status"] = status
            reactivated += 1
        # The reader's own choice on the web wins over the operator's CSV.
        if choices[email] and row.choice_source != "web":
            changed = {k: v for k, v in choices[email].items() if getattr(row, k) != v}
            if changed:
                values.update(changed, choice_source="csv")
                audited.update(changed)
        if len(values) > 1:
            values["updated_at"] = now
        conn.execute(subscribers.update().where(subscribers.c.id == row.id).values(values))
        if audited:
            old = {k: getattr(row, k) for k in audited}
            entries.append(entry(Action.IMPORT, row.id, email, old, audited, now))
    if new_rows:
        # A web signup of one of these addresses may commit meanwhile: it stays as it is (a
        # known address keeps its status), stamped as seen by this import.
        ins = dialect_insert(conn.dialect.name, subscribers)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=["email"], set_={"csv_run": ins.excluded.csv_run}
            ),
            new_rows,
        )
        # Their entries in one INSERT ... SELECT: no Python per row (an import of 10,000).
        conn.execute(_new_rows_audit(now), {"emails": [r["email"] for r in new_rows]})
    audit(conn, *entries)
    return added, reactivated, dups


def _new_rows_audit(now: dt.datetime) -> Any:
    """INSERT ... SELECT of the `import` entries of the rows this batch created (created `now`:
    not a row a concurrent signup made), their values written as `_json` writes them (sorted
    keys; every value is a plain word, a topic list or a number, nothing to escape)."""
    c = subscribers.c

    def text(value: Any) -> Any:
        return sa.cast(value, sa.String)

    new = (
        sa.literal('{"cadence":"', sa.String)
        + c.cadence
        + '","max_papers":'
        + text(c.max_papers)
        + ',"source":"'
        + c.source
        + '","status":"'
        + c.status
        + '","topics":"'
        + c.topics
        + '"}'
    )
    rows = sa.select(
        sa.literal(now, sa.DateTime),
        sa.literal(current_actor()[:200], sa.String),
        sa.literal(str(Action.IMPORT), sa.String),
        c.id,
        c.email,
        sa.literal("{}", sa.String),
        new,
    ).where(c.email.in_(sa.bindparam("emails", expanding=True)), c.created_at == now)
    cols = ["at", "actor", "action", "subscriber_id", "email", "old_values", "new_values"]
    return audit_log.insert().from_select(cols, rows)


def csv_remove_absent(conn: sa.Connection, run: int) -> int:
    """Mark `removed` the active/pending CSV subscribers that import `run` did not see."""
    now = _now()
    entries = []
    for status in (ACTIVE, PENDING):  # one UPDATE per old status: the entry names it
        res = conn.execute(
            subscribers.update()
            .where(
                subscribers.c.source == "csv",
                subscribers.c.status == status,
                sa.or_(subscribers.c.csv_run.is_(None), subscribers.c.csv_run != run),
            )
            .values(status=REMOVED, updated_at=now)
            .returning(subscribers.c.id, subscribers.c.email)
        )
        old, new = {"status": status}, {"status": REMOVED}
        entries += [entry(Action.IMPORT, r.id, r.email, old, new, now) for r in res]
    audit(conn, *entries)
    return len(entries)
