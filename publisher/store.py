"""The state database: subscribers, suppressions, the send ledger and publications.

SQLAlchemy Core only, and only portable SQL, so `[state] database` may be a PostgreSQL URL
instead of the default SQLite file. Tables are created when the store is opened. SQLite runs in
WAL mode with a busy timeout because the scheduler, the CLI and the web server may share the file.

Addresses are keys: every method taking an address normalises it with `normalize_email`
(email-validator, then lower-cased whole so `Ada@Example.com` and `ada@example.com` are one
subscriber). Times are naive UTC.

The rule that matters: an address that is unsubscribed, bounced or on the suppression list is
never mailed again. `queue_pending` and `pending_for` only ever pick active, unsuppressed
subscribers; only `resubscribe` (fresh consent, e.g. a confirmed double opt-in) lifts it.

Quick tour::

    store = Store.open(cfg)
    sub, created = store.add_subscriber("ada@example.com", "Ada", status="active", source="web")
    store.unsubscribe("ada@example.com")          # status unsubscribed + suppression
    store.counts_by_status()                      # {"active": 3, "unsubscribed": 1, ...}
    store.queue_pending(date(2024, 5, 15))        # one queued ledger row per active subscriber
    for entry in store.pending_for(date(2024, 5, 15)):
        store.mark_sent(entry.id, "250 OK")
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from .config import Config
from .errors import PublisherError

# Subscriber statuses. `removed` = dropped from the CSV by the person who edits it: not mailed,
# history kept, and put back to active if the row comes back (unlike unsubscribed/bounced).
ACTIVE, PENDING, UNSUBSCRIBED, BOUNCED, REMOVED = (
    "active",
    "pending",
    "unsubscribed",
    "bounced",
    "removed",
)
STATUSES = (ACTIVE, PENDING, UNSUBSCRIBED, BOUNCED, REMOVED)
SOURCES = ("csv", "web", "cli")
# Ledger statuses.
QUEUED, SENT, FAILED = "queued", "sent", "failed"
# Publication email statuses.
EMAIL_STATUSES = ("none", "sending", "sent", "partial")


class InvalidAddress(PublisherError):
    """An address email-validator refuses; the message says why."""


class UnknownSubscriber(PublisherError):
    """No subscriber with that address."""


def normalize_email(address: str, *, check_deliverability: bool = False) -> str:
    """Validate and normalise an address (the store's key); raise InvalidAddress if invalid."""
    try:
        result = validate_email(address.strip(), check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{address!r}: {exc}") from None
    # Lower-case the local part too: case-sensitive mailboxes are theory, duplicates are practice.
    return result.normalized.lower()


def _key(address: str) -> str:
    """Lookup key: the normalised form, or a lower-cased strip for something already stored."""
    try:
        return normalize_email(address)
    except InvalidAddress:
        return address.strip().lower()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


metadata = sa.MetaData()

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("hard_bounces", sa.Integer, nullable=False, default=0),
    # The CSV import that last saw this address; lets an import mark rows no longer in the
    # file as removed without holding the whole file in memory.
    sa.Column("csv_run", sa.Integer, nullable=True),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("email", sa.String(320), primary_key=True),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest_date", sa.Date, nullable=False),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # A failure that retrying cannot fix (a 5xx reply): not retried even with --retry-failed.
    sa.Column("final", sa.Boolean, nullable=False, default=False),
    sa.Column("last_reply", sa.String(500), nullable=False, default=""),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("digest_date", "email", name="uq_ledger_digest_email"),
    sa.Index("ix_ledger_digest_status", "digest_date", "status"),
)

publications = sa.Table(
    "publications",
    metadata,
    sa.Column("digest_date", sa.Date, primary_key=True),
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("content_hash", sa.String(128), nullable=False),
    sa.Column("feed_built_at", sa.DateTime, nullable=True),
    sa.Column("email_status", sa.String(8), nullable=False, default="none"),
    sa.Column("sent", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("email_started_at", sa.DateTime, nullable=True),
    sa.Column("email_finished_at", sa.DateTime, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(1000), nullable=False),
)


_MARK_SENT = (
    ledger.update()
    .where(ledger.c.id == sa.bindparam("b_id"))
    .values(
        status=SENT,
        attempts=ledger.c.attempts + sa.bindparam("b_attempts"),
        last_reply=sa.bindparam("b_reply"),
        final=False,
        updated_at=sa.bindparam("b_now"),
    )
)


def _sent_params(rows: Iterable[tuple[int, str, int]]) -> list[dict[str, Any]]:
    now = _now()
    return [{"b_id": i, "b_reply": r[:500], "b_attempts": a, "b_now": now} for i, r, a in rows]


class SentRecorder:
    """Records accepted messages on one connection; one thread at a time. Each call commits.

    The UPDATE is compiled once for the engine's dialect (so still portable SQL) and run with
    the driver's executemany on a raw connection: SQLAlchemy's per-execute machinery cost
    more than the UPDATE and COMMIT themselves, on the path each message's final "." waits on.
    """

    def __init__(self, engine: sa.Engine) -> None:
        dialect = engine.dialect
        compiled = _MARK_SENT.compile(dialect=dialect)
        self._sql = compiled.string
        # name -> (fixed value or None, the dialect's conversion or None), by rendered name
        self._binds = {
            compiled.bind_names[bind]: (
                None if bind.key.startswith("b_") else bind.value,
                bind.type.dialect_impl(dialect).bind_processor(dialect),
            )
            for bind in compiled.binds.values()
        }
        self._order = list(compiled.positiontup or ()) if compiled.positional else None
        self.conn = engine.raw_connection()

    def _params(self, rows: Iterable[tuple[int, str, int]]) -> list[Any]:
        out: list[Any] = []
        for values in _sent_params(rows):
            row = {}
            for name, (fixed, process) in self._binds.items():
                value = values[name] if fixed is None else fixed
                row[name] = value if process is None else process(value)
            out.append(row if self._order is None else [row[n] for n in self._order])
        return out

    def record(self, rows: Iterable[tuple[int, str, int]]) -> None:
        params = self._params(rows)
        if not params:
            return
        cursor = self.conn.cursor()
        try:
            cursor.executemany(self._sql, params)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            cursor.close()

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    email: str
    name: str
    status: str
    source: str
    created_at: dt.datetime
    updated_at: dt.datetime
    hard_bounces: int


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One (digest, subscriber) row waiting to be sent; `name` comes from the subscriber."""

    id: int
    digest_date: dt.date
    subscriber_id: int
    email: str
    name: str
    status: str
    attempts: int
    last_reply: str


@dataclass(frozen=True, slots=True)
class Publication:
    digest_date: dt.date
    source: str
    content_hash: str
    feed_built_at: dt.datetime | None
    email_status: str
    sent: int
    failed: int
    email_started_at: dt.datetime | None
    email_finished_at: dt.datetime | None
    created_at: dt.datetime | None = None  # when the digest was first seen


def _publication(row: Any) -> Publication:
    return Publication(
        digest_date=row.digest_date,
        source=row.source,
        content_hash=row.content_hash,
        feed_built_at=row.feed_built_at,
        email_status=row.email_status,
        sent=row.sent,
        failed=row.failed,
        email_started_at=row.email_started_at,
        email_finished_at=row.email_finished_at,
        created_at=row.created_at,
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (web server) never block the writer (a send); NORMAL sync is still durable
    # against a killed process, which is the crash the ledger must survive.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _subscriber(row: Any) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        status=row.status,
        source=row.source,
        created_at=row.created_at,
        updated_at=row.updated_at,
        hard_bounces=row.hard_bounces,
    )


class Store:
    """The state database. Thread-safe: every method takes its own short transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            db_path = self.engine.url.database
            if db_path and db_path != ":memory:":
                from pathlib import Path

                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        metadata.create_all(self.engine)

    @classmethod
    def open(cls, cfg: Config) -> Store:
        """Open (creating tables if needed) the database named by cfg.database_url."""
        return cls(cfg.database_url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- subscribers -------------------------------------------------------------------------

    def add_subscriber(
        self, email: str, name: str = "", status: str = ACTIVE, source: str = "cli"
    ) -> tuple[Subscriber, bool]:
        """Add an address; return (subscriber, created).

        An existing subscriber keeps its status (so this never resubscribes anyone); a non-empty
        `name` replaces the stored one. Raises InvalidAddress for a bad address.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        key = normalize_email(email)
        now = _now()
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(subscribers).where(subscribers.c.email == key)).first()
            if row is None:
                if self._suppressed(conn, key) and status == ACTIVE:
                    status = UNSUBSCRIBED
                conn.execute(
                    subscribers.insert().values(
                        email=key,
                        name=name.strip(),
                        status=status,
                        source=source,
                        created_at=now,
                        updated_at=now,
                        hard_bounces=0,
                    )
                )
                created = True
            else:
                if name.strip() and name.strip() != row.name:
                    conn.execute(
                        subscribers.update()
                        .where(subscribers.c.id == row.id)
                        .values(name=name.strip(), updated_at=now)
                    )
                created = False
            row = conn.execute(sa.select(subscribers).where(subscribers.c.email == key)).one()
        return _subscriber(row), created

    def get(self, email: str) -> Subscriber | None:
        """The subscriber with this address, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(subscribers).where(subscribers.c.email == _key(email))
            ).first()
        return _subscriber(row) if row else None

    def set_status(self, email: str, status: str) -> Subscriber:
        """Set a subscriber's status (e.g. pending -> active on confirmation).

        Setting `active` on a suppressed address raises PublisherError: use `resubscribe`.
        Setting unsubscribed or bounced also suppresses the address.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        key = _key(email)
        with self.engine.begin() as conn:
            if status == ACTIVE and self._suppressed(conn, key):
                raise PublisherError(
                    f"{key} is on the suppression list (unsubscribed or bounced); "
                    "only a fresh subscription can lift that"
                )
            res = conn.execute(
                subscribers.update()
                .where(subscribers.c.email == key)
                .values(status=status, updated_at=_now())
            )
            if res.rowcount == 0:
                raise UnknownSubscriber(f"no subscriber {key}")
            if status in (UNSUBSCRIBED, BOUNCED):
                self._suppress(conn, key, status)
            row = conn.execute(sa.select(subscribers).where(subscribers.c.email == key)).one()
        return _subscriber(row)

    def unsubscribe(self, email: str, reason: str = UNSUBSCRIBED) -> bool:
        """Unsubscribe and suppress an address for good; True if a subscriber was changed.

        Idempotent. An address with no subscriber row is still suppressed (so a later CSV row
        cannot mail it).
        """
        key = _key(email)
        with self.engine.begin() as conn:
            res = conn.execute(
                subscribers.update()
                .where(subscribers.c.email == key, subscribers.c.status != UNSUBSCRIBED)
                .values(status=UNSUBSCRIBED, updated_at=_now())
            )
            self._suppress(conn, key, reason)
        return res.rowcount > 0

    def resubscribe(self, email: str, name: str = "", source: str = "web") -> Subscriber:
        """Fresh consent (a confirmed opt-in, an operator's explicit add): lift any suppression
        and make the address active, creating it if needed."""
        key = normalize_email(email)
        with self.engine.begin() as conn:
            conn.execute(suppressions.delete().where(suppressions.c.email == key))
            conn.execute(
                subscribers.update()
                .where(subscribers.c.email == key)
                .values(status=ACTIVE, hard_bounces=0, updated_at=_now())
            )
        sub, _ = self.add_subscriber(key, name, status=ACTIVE, source=source)
        return sub

    def record_hard_bounce(self, email: str, reply: str, limit: int) -> bool:
        """Count a hard bounce (5xx on RCPT); at `limit` bounces the address is bounced and
        suppressed. Returns True when this bounce suppressed it."""
        key = _key(email)
        with self.engine.begin() as conn:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.email == key)
                .values(hard_bounces=subscribers.c.hard_bounces + 1, updated_at=_now())
            )
            bounces = conn.execute(
                sa.select(subscribers.c.hard_bounces).where(subscribers.c.email == key)
            ).scalar()
            if bounces is not None and bounces >= max(limit, 1):
                conn.execute(
                    subscribers.update()
                    .where(subscribers.c.email == key)
                    .values(status=BOUNCED, updated_at=_now())
                )
                self._suppress(conn, key, f"bounced: {reply}"[:200])
                return True
        return False

    def iter_subscribers(
        self, status: str | None = None, batch: int = 1000
    ) -> Iterator[Subscriber]:
        """All subscribers (or those with `status`) by id, fetched `batch` at a time so memory
        stays flat and no read transaction stays open between batches."""
        last = 0
        while True:
            q = sa.select(subscribers).where(subscribers.c.id > last)
            if status is not None:
                q = q.where(subscribers.c.status == status)
            q = q.order_by(subscribers.c.id).limit(batch)
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for row in rows:
                yield _subscriber(row)
            last = rows[-1].id

    def iter_active(self, batch: int = 1000) -> Iterator[Subscriber]:
        """Active subscribers, streamed (see iter_subscribers)."""
        return self.iter_subscribers(ACTIVE, batch)

    def counts_by_status(self) -> dict[str, int]:
        """{status: count} for every status (zeros included)."""
        counts = dict.fromkeys(STATUSES, 0)
        with self.engine.connect() as conn:
            for status, n in conn.execute(
                sa.select(subscribers.c.status, sa.func.count()).group_by(subscribers.c.status)
            ):
                counts[status] = n
        return counts

    # -- CSV synchronisation (used by publisher.subscribers) ---------------------------------

    def new_csv_run(self) -> int:
        """A fresh id for one CSV import."""
        with self.engine.begin() as conn:
            cur = conn.execute(sa.select(sa.func.max(subscribers.c.csv_run))).scalar() or 0
            stored = conn.execute(sa.select(meta.c.value).where(meta.c.key == "csv_run")).scalar()
            run = max(cur, int(stored or 0)) + 1
            if stored is None:
                conn.execute(meta.insert().values(key="csv_run", value=str(run)))
            else:
                conn.execute(meta.update().where(meta.c.key == "csv_run").values(value=str(run)))
        return run

    def upsert_csv_batch(
        self, run: int, rows: Iterable[tuple[str, str]], source: str = "csv"
    ) -> tuple[int, int, int]:
        """Apply one batch of normalised (email, name) CSV rows for import `run`.

        New addresses become active (or unsubscribed if suppressed); existing ones keep their
        status except `removed`, which becomes active again; names are updated. Returns
        (added, reactivated, duplicates) where duplicates were already seen in this run.
        """
        merged: dict[str, str] = {}
        dups = 0
        for email, name in rows:
            if email in merged:
                dups += 1
                merged[email] = merged[email] or name
            else:
                merged[email] = name
        if not merged:
            return 0, 0, dups
        now = _now()
        added = reactivated = 0
        with self.engine.begin() as conn:
            existing = {
                r.email: r
                for r in conn.execute(
                    sa.select(
                        subscribers.c.id,
                        subscribers.c.email,
                        subscribers.c.name,
                        subscribers.c.status,
                        subscribers.c.csv_run,
                    ).where(subscribers.c.email.in_(list(merged)))
                )
            }
            suppressed = {
                e
                for (e,) in conn.execute(
                    sa.select(suppressions.c.email).where(suppressions.c.email.in_(list(merged)))
                )
            }
            new_rows = []
            for email, name in merged.items():
                row = existing.get(email)
                if row is None:
                    new_rows.append(
                        {
                            "email": email,
                            "name": name,
                            "status": UNSUBSCRIBED if email in suppressed else ACTIVE,
                            "source": source,
                            "created_at": now,
                            "updated_at": now,
                            "hard_bounces": 0,
                            "csv_run": run,
                        }
                    )
                    added += 1
                    continue
                if row.csv_run == run:
                    dups += 1
                values: dict[str, Any] = {"csv_run": run}
                if name and name != row.name:
                    values["name"] = name
                if row.status == REMOVED and email not in suppressed:
                    values["status"] = ACTIVE
                    reactivated += 1
                if len(values) > 1:
                    values["updated_at"] = now
                conn.execute(subscribers.update().where(subscribers.c.id == row.id).values(values))
            if new_rows:
                conn.execute(subscribers.insert(), new_rows)
        return added, reactivated, dups

    def remove_csv_absent(self, run: int) -> int:
        """Mark `removed` the active/pending CSV subscribers that import `run` did not see."""
        with self.engine.begin() as conn:
            res = conn.execute(
                subscribers.update()
                .where(
                    subscribers.c.source == "csv",
                    subscribers.c.status.in_([ACTIVE, PENDING]),
                    sa.or_(subscribers.c.csv_run.is_(None), subscribers.c.csv_run != run),
                )
                .values(status=REMOVED, updated_at=_now())
            )
        return res.rowcount

    def get_meta(self, key: str) -> str | None:
        """A small key/value setting kept in the database (e.g. the last imported CSV's hash)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as conn:
            res = conn.execute(meta.update().where(meta.c.key == key).values(value=value))
            if res.rowcount == 0:
                conn.execute(meta.insert().values(key=key, value=value))

    # -- suppressions ------------------------------------------------------------------------

    @staticmethod
    def _suppressed(conn: sa.Connection, key: str) -> bool:
        q = sa.select(suppressions.c.email).where(suppressions.c.email == key)
        return conn.execute(q).first() is not None

    @staticmethod
    def _suppress(conn: sa.Connection, key: str, reason: str) -> None:
        if not Store._suppressed(conn, key):
            conn.execute(suppressions.insert().values(email=key, reason=reason, created_at=_now()))

    def suppress(self, email: str, reason: str) -> None:
        """Put an address on the suppression list (idempotent); it is never mailed again."""
        with self.engine.begin() as conn:
            self._suppress(conn, _key(email), reason)

    def unsuppress(self, email: str) -> bool:
        """Take an address off the suppression list; True if it was on it."""
        with self.engine.begin() as conn:
            res = conn.execute(suppressions.delete().where(suppressions.c.email == _key(email)))
        return res.rowcount > 0

    def is_suppressed(self, email: str) -> bool:
        with self.engine.connect() as conn:
            return self._suppressed(conn, _key(email))

    def suppression_reason(self, email: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(suppressions.c.reason).where(suppressions.c.email == _key(email))
            ).scalar()

    # -- the ledger --------------------------------------------------------------------------

    def _mailable(self) -> Any:
        """Subscribers that may be mailed: active and not suppressed."""
        return sa.and_(
            subscribers.c.status == ACTIVE,
            ~sa.exists().where(suppressions.c.email == subscribers.c.email),
        )

    def queue_pending(self, digest_date: dt.date) -> int:
        """Add a queued ledger row for every mailable subscriber without one for this digest.

        One INSERT ... SELECT: no subscriber list in memory. Returns the number of rows added.
        """
        now = _now()
        sel = sa.select(
            sa.literal(digest_date, sa.Date),
            subscribers.c.id,
            subscribers.c.email,
            sa.literal(QUEUED),
            sa.literal(0),
            sa.literal(False),
            sa.literal(""),
            sa.literal(now, sa.DateTime),
        ).where(
            self._mailable(),
            ~sa.exists().where(
                ledger.c.digest_date == digest_date, ledger.c.email == subscribers.c.email
            ),
        )
        ins = ledger.insert().from_select(
            [
                "digest_date",
                "subscriber_id",
                "email",
                "status",
                "attempts",
                "final",
                "last_reply",
                "updated_at",
            ],
            sel,
        )
        with self.engine.begin() as conn:
            res = conn.execute(ins)
        return max(res.rowcount, 0)

    @staticmethod
    def _wanted(retry_failed: bool) -> Any:
        wanted = ledger.c.status == QUEUED
        if retry_failed:
            wanted = sa.or_(wanted, sa.and_(ledger.c.status == FAILED, ~ledger.c.final))
        return wanted

    def count_pending(self, digest_date: dt.date, retry_failed: bool = False) -> int:
        """How many rows `pending_for` would yield now."""
        q = (
            sa.select(sa.func.count())
            .select_from(ledger.join(subscribers, subscribers.c.id == ledger.c.subscriber_id))
            .where(ledger.c.digest_date == digest_date, self._wanted(retry_failed))
            .where(self._mailable())
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def pending_for(
        self, digest_date: dt.date, retry_failed: bool = False, batch: int = 1000
    ) -> Iterator[LedgerEntry]:
        """Ledger rows still to send for a digest, streamed by id in batches.

        Queued rows, plus (with retry_failed) failed rows whose failure was not final; only for
        subscribers who are still mailable right now.
        """
        wanted = self._wanted(retry_failed)
        last = 0
        while True:
            q = (
                sa.select(
                    ledger.c.id,
                    ledger.c.digest_date,
                    ledger.c.subscriber_id,
                    ledger.c.email,
                    subscribers.c.name,
                    ledger.c.status,
                    ledger.c.attempts,
                    ledger.c.last_reply,
                )
                .join(subscribers, subscribers.c.id == ledger.c.subscriber_id)
                .where(ledger.c.digest_date == digest_date, ledger.c.id > last, wanted)
                .where(self._mailable())
                .order_by(ledger.c.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield LedgerEntry(
                    id=r.id,
                    digest_date=r.digest_date,
                    subscriber_id=r.subscriber_id,
                    email=r.email,
                    name=r.name,
                    status=r.status,
                    attempts=r.attempts,
                    last_reply=r.last_reply,
                )
            last = rows[-1].id

    def mark_sent(self, entry_ids: int | Iterable[int], reply: str, attempts: int = 1) -> None:
        """Record that the server accepted these messages (one id or a small batch), each after
        `attempts` more attempts. Commits before returning: this is what makes resume exact."""
        ids = [entry_ids] if isinstance(entry_ids, int) else list(entry_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                ledger.update()
                .where(ledger.c.id.in_(ids))
                .values(
                    status=SENT,
                    attempts=ledger.c.attempts + attempts,
                    last_reply=reply[:500],
                    final=False,
                    updated_at=_now(),
                )
            )

    def mark_sent_many(self, rows: Iterable[tuple[int, str, int]]) -> None:
        """`mark_sent` for a batch of (entry id, reply, attempts), in one transaction."""
        params = _sent_params(rows)
        if params:
            with self.engine.begin() as conn:
                conn.execute(_MARK_SENT, params)

    def sent_recorder(self) -> SentRecorder:
        """A `mark_sent_many` on one long-lived connection, used by one thread at a time
        (checking a connection out of the pool per batch costs more than the UPDATE)."""
        return SentRecorder(self.engine)

    def mark_failed(self, entry_id: int, reply: str, *, final: bool, attempts: int = 1) -> None:
        """Record a failure after `attempts` more attempts; `final` (a 5xx) is never retried."""
        with self.engine.begin() as conn:
            conn.execute(
                ledger.update()
                .where(ledger.c.id == entry_id)
                .values(
                    status=FAILED,
                    final=final,
                    attempts=ledger.c.attempts + attempts,
                    last_reply=reply[:500],
                    updated_at=_now(),
                )
            )

    def ledger_counts(self, digest_date: dt.date) -> dict[str, int]:
        """{queued, sent, failed} counts for a digest (zeros included)."""
        counts = dict.fromkeys((QUEUED, SENT, FAILED), 0)
        with self.engine.connect() as conn:
            for status, n in conn.execute(
                sa.select(ledger.c.status, sa.func.count())
                .where(ledger.c.digest_date == digest_date)
                .group_by(ledger.c.status)
            ):
                counts[status] = n
        return counts

    def unsent_active(self, digest_date: dt.date) -> int:
        """Mailable subscribers that have no `sent` ledger row for this digest (0 = all done)."""
        q = (
            sa.select(sa.func.count())
            .select_from(subscribers)
            .where(
                self._mailable(),
                ~sa.exists().where(
                    ledger.c.digest_date == digest_date,
                    ledger.c.email == subscribers.c.email,
                    ledger.c.status == SENT,
                ),
            )
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def ledger_entry(self, digest_date: dt.date, email: str) -> dict[str, Any] | None:
        """The raw ledger row for (digest, address), for inspection and tests."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(ledger).where(
                    ledger.c.digest_date == digest_date, ledger.c.email == _key(email)
                )
            ).first()
        return dict(row._mapping) if row else None

    # -- publications (used by the scheduler) ------------------------------------------------

    def get_publication(self, digest_date: dt.date) -> Publication | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(publications).where(publications.c.digest_date == digest_date)
            ).first()
        return None if row is None else _publication(row)

    def list_publications(self, limit: int | None = None) -> list[Publication]:
        """Publications, newest digest date first."""
        query = sa.select(publications).order_by(publications.c.digest_date.desc())
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_publication(row) for row in conn.execute(query)]

    def record_publication(self, digest_date: dt.date, source: str, content_hash: str) -> None:
        """Create or update the publication row of a digest (source path and content hash)."""
        now = _now()
        with self.engine.begin() as conn:
            res = conn.execute(
                publications.update()
                .where(publications.c.digest_date == digest_date)
                .values(source=source, content_hash=content_hash, updated_at=now)
            )
            if res.rowcount == 0:
                conn.execute(
                    publications.insert().values(
                        digest_date=digest_date,
                        source=source,
                        content_hash=content_hash,
                        email_status="none",
                        sent=0,
                        failed=0,
                        created_at=now,
                        updated_at=now,
                    )
                )

    def update_publication(self, digest_date: dt.date, **values: Any) -> None:
        """Set columns of an existing publication row: feed_built_at, email_status, sent,
        failed, email_started_at, email_finished_at."""
        allowed = {
            "feed_built_at",
            "email_status",
            "sent",
            "failed",
            "email_started_at",
            "email_finished_at",
        }
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"not publication columns: {sorted(bad)}")
        if values.get("email_status", "none") not in EMAIL_STATUSES:
            raise ValueError(f"unknown email_status {values['email_status']!r}")
        with self.engine.begin() as conn:
            conn.execute(
                publications.update()
                .where(publications.c.digest_date == digest_date)
                .values(updated_at=_now(), **values)
            )
