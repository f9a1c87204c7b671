"""The state database's tables, the address key, and the engine every part shares.

SQLAlchemy Core only, and only portable SQL, so `[state] database` may be a PostgreSQL URL
instead of the default SQLite file. SQLite runs in WAL mode with a busy timeout because the
scheduler, the CLI and the web server may share the file.

Addresses are keys: every method taking an address normalises it with `normalize_email`
(email-validator, then lower-cased whole so `Ada@Example.com` and `ada@example.com` are one
subscriber). Times are naive UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Self

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from ..config import Config
from ..errors import PublisherError

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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (web server) never block the writer (a send); NORMAL sync is still durable
    # against a killed process, which is the crash the ledger must survive.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class StoreBase:
    """The engine; the concerns (publisher/state/*.py) add their methods as mixins."""

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
    def open(cls, cfg: Config) -> Self:
        """Open (creating tables if needed) the database named by cfg.database_url."""
        return cls(cfg.database_url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
