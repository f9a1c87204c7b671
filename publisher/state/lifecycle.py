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
        .where(ledger.c.subscriber_id == row.id, ledger.c.status == SENT)
        .where(ledger.c.digest_date < this_day)
        .order_by(ledger.c.digest_date.desc())
        .limit(200)
    ).scalars()
    last_ok = next((d for d in sent if d not in bounced_days), None)
    return {d for d in soft if last_ok is None or d > last_ok}


# -- the CSV sync -----------------------------------------------------------------------------
#
# Set-based: the caller (SubscribersMixin.sync_csv) streams the file's valid rows into the
# session's temporary table `csv_stage` (COPY on PostgreSQL), `csv_dedupe` merges duplicates
# into `csv_rows`, and `csv_apply` compares them with `subscribers` in SQL and writes only the
# differences, each rule below one statement: an unchanged row costs no write at all.

_staging = sa.MetaData()

# The file's valid rows in file order; a choice column the file lacks is NULL (keep as stored).
csv_stage = sa.Table(
    "csv_stage",
    _staging,
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("cadence", sa.String(8)),
    sa.Column("topics", sa.String(1000)),
    sa.Column("max_papers", sa.Integer),
    prefixes=["TEMPORARY"],
)
# One row per address: the first row's choice, the first non-empty name.
csv_rows = sa.Table(
    "csv_rows",
    _staging,
    sa.Column("email", sa.String(320), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("cadence", sa.String(8)),
    sa.Column("topics", sa.String(1000)),
    sa.Column("max_papers", sa.Integer),
    sa.Column("n", sa.Integer, nullable=False),  # the rows of the file with this address
    prefixes=["TEMPORARY"],
)
# The known subscribers the file changes: the new value of each changed field (NULL: kept),
# and the old ones the audit trail records.
csv_changes = sa.Table(
    "csv_changes",
    _staging,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("name", sa.String(200)),
    sa.Column("status", sa.String(16)),
    sa.Column("cadence", sa.String(8)),
    sa.Column("topics", sa.String(1000)),
    sa.Column("max_papers", sa.Integer),
    sa.Column("old_status", sa.String(16)),
    sa.Column("old_cadence", sa.String(8)),
    sa.Column("old_topics", sa.String(1000)),
    sa.Column("old_max_papers", sa.Integer),
    prefixes=["TEMPORARY"],
)
CSV_STAGE_COLUMNS = ("seq", "email", "name", "cadence", "topics", "max_papers")
CHOICE_COLUMNS = ("cadence", "topics", "max_papers")
_SQLITE_HASH = "publisher_suppression_hash"


def csv_staging_create(conn: sa.Connection) -> None:
    """The sync's temporary tables, empty, in this connection's session (and on SQLite the
    suppression hash as an SQL function)."""
    csv_staging_drop(conn)
    _staging.create_all(conn)
    if conn.dialect.name == "sqlite":
        raw = conn.connection.driver_connection
        raw.create_function(_SQLITE_HASH, 1, suppression_hash, deterministic=True)  # type: ignore[union-attr]


def csv_staging_drop(conn: sa.Connection) -> None:
    _staging.drop_all(conn, checkfirst=True)


def _suppressed_sql(conn: sa.Connection, column: str) -> str:
    """SQL: whether the address in `column` is suppressed, by its own entry or the hash a
    deletion left (`suppression_hash`, computed in SQL)."""
    if conn.dialect.name == "postgresql":
        hashed = (
            f"'{_HASH_PREFIX}' || encode(sha256(:hash_prefix || convert_to({column}, 'UTF8')),"
            " 'hex')"
        )
    else:
        hashed = f"{_SQLITE_HASH}({column})"
    return f"EXISTS (SELECT 1 FROM suppressions x WHERE x.email IN ({column}, {hashed}))"


def _sql(conn: sa.Connection, text: str) -> Any:
    stmt = sa.text(text)
    if ":now" in text:
        stmt = stmt.bindparams(sa.bindparam("now", type_=sa.DateTime))
    return stmt


def csv_dedupe(conn: sa.Connection) -> tuple[int, int]:
    """Merge `csv_stage` into `csv_rows`; (rows, distinct addresses). One sort: each address's
    first row, and how many it has; only an address listed twice whose first row has no name
    then looks further for its first name (through an index made for the purpose)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL work_mem = '64MB'"))
    conn.execute(
        sa.text(
            "INSERT INTO csv_rows (email, name, cadence, topics, max_papers, n)"
            " SELECT email, name, cadence, topics, max_papers, n FROM ("
            "  SELECT email, name, cadence, topics, max_papers,"
            "   ROW_NUMBER() OVER (PARTITION BY email ORDER BY seq) AS rn,"
            "   COUNT(*) OVER (PARTITION BY email) AS n"
            "  FROM csv_stage) t"
            " WHERE rn = 1"
        )
    )
    unnamed = "csv_rows.n > 1 AND csv_rows.name = ''"
    if conn.execute(sa.text(f"SELECT 1 FROM csv_rows WHERE {unnamed} LIMIT 1")).first():
        conn.execute(sa.text("CREATE INDEX ix_csv_stage_email ON csv_stage (email, seq)"))
        conn.execute(
            sa.text(
                "UPDATE csv_rows SET name = COALESCE((SELECT s.name FROM csv_stage s"
                "  WHERE s.email = csv_rows.email AND s.name <> '' ORDER BY s.seq LIMIT 1), '')"
                f" WHERE {unnamed}"
            )
        )
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("ANALYZE csv_rows"))
    rows = conn.execute(sa.text("SELECT count(*) FROM csv_stage")).scalar() or 0
    distinct = conn.execute(sa.text("SELECT count(*) FROM csv_rows")).scalar() or 0
    return rows, distinct


def csv_apply(conn: sa.Connection, run: int, source: str, remove: bool) -> tuple[int, int, int]:
    """Apply the deduplicated rows (`csv_rows`) of CSV import `run`; (added, reactivated,
    removed). The rules, each one statement:

    - a known address keeps its status: only the CSV's own `removed` is undone by the row
      coming back (to active), and not for a suppressed address; a non-empty name replaces the
      stored one; the file's reader choice (the columns it has) applies unless the reader made
      their choice on the web, which wins;
    - a new address becomes active, or unsubscribed if it is suppressed;
    - with `remove` (a sync of the configured list): an active or pending subscriber that came
      from the CSV and is not in the file becomes `removed`.

    Status and choice changes, new rows and removals are recorded in the audit trail; a name
    change is not; an unchanged row is not written at all."""
    now = _now()
    pg = conn.dialect.name == "postgresql"
    params: dict[str, Any] = {"now": now, "run": run, "source": source}
    if pg:
        conn.execute(sa.text("SET LOCAL work_mem = '64MB'"))
        params["hash_prefix"] = b"publisher-suppression\x00"
    choice = " OR ".join(f"s.{c} IS NOT NULL" for c in CHOICE_COLUMNS)

    # Known addresses: what the file changes, then one UPDATE of those rows.
    new_choice = ", ".join(
        f"CASE WHEN sub.choice_source = 'web' THEN NULL WHEN s.{c} <> sub.{c} THEN s.{c} END"
        f" AS new_{c}"
        for c in CHOICE_COLUMNS
    )
    conn.execute(
        _sql(
            conn,
            "INSERT INTO csv_changes (id, email, name, status, cadence, topics, max_papers,"
            " old_status, old_cadence, old_topics, old_max_papers)"
            " SELECT id, email, new_name, new_status, new_cadence, new_topics, new_max_papers,"
            " status, cadence, topics, max_papers FROM ("
            "  SELECT sub.id, sub.email, sub.status, sub.cadence, sub.topics, sub.max_papers,"
            "   CASE WHEN s.name <> '' AND s.name <> sub.name THEN s.name END AS new_name,"
            f"   CASE WHEN sub.status = '{REMOVED}' AND NOT {_suppressed_sql(conn, 'sub.email')}"
            f"    THEN '{ACTIVE}' END AS new_status, {new_choice}"
            "  FROM csv_rows s JOIN subscribers sub ON sub.email = s.email) t"
            " WHERE new_name IS NOT NULL OR new_status IS NOT NULL OR new_cadence IS NOT NULL"
            " OR new_topics IS NOT NULL OR new_max_papers IS NOT NULL",
        ),
        params,
    )
    chosen = " OR ".join(f"c.{c} IS NOT NULL" for c in CHOICE_COLUMNS)
    kept = ", ".join(f"{c} = COALESCE(c.{c}, subscribers.{c})" for c in ("name", "status"))
    kept += ", " + ", ".join(f"{c} = COALESCE(c.{c}, subscribers.{c})" for c in CHOICE_COLUMNS)
    conn.execute(
        _sql(
            conn,
            f"UPDATE subscribers SET {kept},"
            f" choice_source = CASE WHEN {chosen} THEN 'csv' ELSE subscribers.choice_source END,"
            " updated_at = :now, csv_run = :run"
            " FROM csv_changes c WHERE subscribers.id = c.id",
        ),
        params,
    )
    reactivated = 0
    last = 0
    audited = "status IS NOT NULL OR " + " OR ".join(f"{c} IS NOT NULL" for c in CHOICE_COLUMNS)
    while True:  # their entries, a batch at a time (a change is rare; a mass edit is not)
        rows = conn.execute(
            sa.text(
                f"SELECT * FROM csv_changes WHERE id > :last AND ({audited}) ORDER BY id LIMIT 1000"
            ),
            {"last": last},
        ).all()
        if not rows:
            break
        entries = []
        for r in rows:
            new = {
                k: getattr(r, k) for k in ("status", *CHOICE_COLUMNS) if getattr(r, k) is not None
            }
            old = {k: getattr(r, "old_" + k) for k in new}
            reactivated += "status" in new
            entries.append(entry(Action.IMPORT, r.id, r.email, old, new, now))
        audit(conn, *entries)
        last = rows[-1].id

    # New addresses. A web signup of one of them may commit meanwhile: it stays as it is.
    res = conn.execute(
        _sql(
            conn,
            "INSERT INTO subscribers (email, name, status, source, created_at, updated_at,"
            " hard_bounces, csv_run, cadence, topics, max_papers, choice_source)"
            f" SELECT s.email, s.name, CASE WHEN {_suppressed_sql(conn, 's.email')}"
            f" THEN '{UNSUBSCRIBED}' ELSE '{ACTIVE}' END, :source, :now, :now, 0, :run,"
            " COALESCE(s.cadence, 'daily'), COALESCE(s.topics, ''), COALESCE(s.max_papers, 0),"
            f" CASE WHEN {choice} THEN 'csv' END"
            " FROM csv_rows s"
            " WHERE NOT EXISTS (SELECT 1 FROM subscribers sub WHERE sub.email = s.email)"
            " ON CONFLICT (email) DO NOTHING",
        ),
        params,
    )
    added = max(res.rowcount, 0)
    if added:
        conn.execute(_new_rows_audit(now, run))

    removed = 0
    if remove:
        for status in (ACTIVE, PENDING):  # one statement per old status: the entry names it
            removed += _remove_absent(conn, status, now)
    return added, reactivated, removed


def _remove_absent(conn: sa.Connection, status: str, now: dt.datetime) -> int:
    """Mark `removed` the CSV subscribers with `status` that the file does not have, with
    their audit entries; how many. PostgreSQL: one statement (the UPDATE's RETURNING feeds the
    entries); SQLite, whose write transaction excludes every other writer: the entries, then
    the UPDATE, with the same condition."""
    where = (
        "source = 'csv' AND status = :old"
        " AND NOT EXISTS (SELECT 1 FROM csv_rows s WHERE s.email = subscribers.email)"
    )
    values = ":now, :actor, :action, id, email, :old_values, :new_values"
    params = {
        "now": now,
        "old": status,
        "actor": current_actor()[:200],
        "action": str(Action.IMPORT),
        "old_values": _json({"status": status}),
        "new_values": _json({"status": REMOVED}),
    }
    cols = "INSERT INTO audit_log (at, actor, action, subscriber_id, email, old_values, new_values)"
    update = f"UPDATE subscribers SET status = '{REMOVED}', updated_at = :now WHERE {where}"
    if conn.dialect.name == "postgresql":
        sql = f"WITH r AS ({update} RETURNING id, email) {cols} SELECT {values} FROM r"
        return max(conn.execute(_sql(conn, sql), params).rowcount, 0)
    conn.execute(_sql(conn, f"{cols} SELECT {values} FROM subscribers WHERE {where}"), params)
    return max(conn.execute(_sql(conn, update), params).rowcount, 0)


def _new_rows_audit(now: dt.datetime, run: int) -> Any:
    """INSERT ... SELECT of the `import` entries of the rows import `run` created (created
    `now`: not a row a concurrent signup made), their values written as `_json` writes them
    (sorted keys; every value is a plain word, a topic list or a number, nothing to escape)."""
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
    ).where(c.csv_run == run, c.created_at == now)
    cols = ["at", "actor", "action", "subscriber_id", "email", "old_values", "new_values"]
    return audit_log.insert().from_select(cols, rows)
