"""The state database's tables, the address key, and the engine every part shares.

SQLAlchemy Core, portable SQL where it can be: `[state] database` is a SQLite file or a
PostgreSQL URL, and any number of processes (`run`, `serve`, `send`, several machines on
PostgreSQL) share it. Write transactions go through `StoreBase._write`; the schema is created
and upgraded by Alembic migrations (publisher/state/migrate.py), never by `create_all`.
An insert that may meet a concurrent insert of the same key (two web processes, one signup)
goes through `upsert` (INSERT ... ON CONFLICT), so it never fails on the unique key.

Addresses are keys: every method taking an address normalises it with `normalize_email`
(email-validator, then lower-cased whole so `Ada@Example.com` and `ada@example.com` are one
subscriber). Times are naive UTC.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa

from ..config import Config
from ..errors import PublisherError
from .files import check_sqlite_files, private_dir, private_file
from .health import translate


class Status(enum.StrEnum):
    """A subscriber's status. `removed` = dropped from the CSV by the person who edits it: not
    mailed, history kept, and put back to active if the row comes back (unlike unsubscribed and
    bounced, which only fresh consent lifts). Only publisher/state/lifecycle.py writes it."""

    ACTIVE = "active"
    PENDING = "pending"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    REMOVED = "removed"


class Source(enum.StrEnum):
    """Where a subscriber came from (and who made a reader-choice change)."""

    CSV = "csv"
    WEB = "web"
    CLI = "cli"


class SendStatus(enum.StrEnum):
    """A ledger row's status. NOMATCH: served with nothing matched (the reader's topics matched
    no paper of the edition): settled like `sent`, but no message was sent."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    NOMATCH = "nomatch"


class EmailStatus(enum.StrEnum):
    """A publication's email status. `final`: a partial send whose failed rows `publisher run`
    retried `[schedule] retry_failed_times` times; it retries them no more
    (publisher/scheduler.py)."""

    NONE = "none"
    SENDING = "sending"
    SENT = "sent"
    PARTIAL = "partial"
    FINAL = "final"


ACTIVE, PENDING, UNSUBSCRIBED, BOUNCED, REMOVED = Status
STATUSES = tuple(Status)
SOURCES = tuple(Source)
QUEUED, SENT, FAILED, NOMATCH = SendStatus


class Edition(enum.StrEnum):
    """A send's edition: a digest's daily edition, or a week's weekly edition (its readers of
    that cadence, the ledger and publications keyed by the week's Monday)."""

    DAILY = "daily"
    WEEKLY = "weekly"


DAILY, WEEKLY = Edition
EDITIONS = tuple(Edition)
# Reader choice.
CADENCES = ("daily", "weekly", "paused")
CHOICE_SOURCES = tuple(Source)
EMAIL_STATUSES = tuple(EmailStatus)


class InvalidAddress(PublisherError):
    """An address email-validator refuses; the message says why."""


class UnknownSubscriber(PublisherError):
    """No subscriber with that address."""


def normalize_email(address: str, *, check_deliverability: bool = False) -> str:
    """Validate and normalise an address (the store's key); raise InvalidAddress if invalid."""
    # email-validator loads here, not with the state package: `status`, `compact` and the other
    # commands that validate no address do not pay for its import (~40 ms).
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(address.strip(), check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{address!r}: {exc}") from None
    # Lower-case the local part too: case-sensitive mailboxes are theory, duplicates are practice.
    return result.normalized.lower()


# A domain part the fast path of AddressNormalizer leaves to email-validator: one that could
# split or parse differently once a local part is put before it (quotes, brackets, spaces...).
_ODD_DOMAIN = re.compile(r"[\s<>\"\\()\[\],;:@]")


class AddressNormalizer:
    """`normalize_email` for a long list (a CSV of a million rows): the same result and the
    same InvalidAddress message for every address, about 30 times faster.

    email-validator spends most of its time on the domain, and a list has few domains: each one
    is validated (and with `check_deliverability`, looked up) once per normalizer, with a
    stand-in local part. An address whose local part is a plain ASCII dot-atom (email-validator
    returns those unchanged) and whose domain passed takes that result, if it is within
    email-validator's length limits; every other address, valid or not, goes through
    `normalize_email` itself. Make one per import: DNS answers are not kept longer."""

    def __init__(self, *, check_deliverability: bool = False, max_domains: int = 100_000) -> None:
        from email_validator.rfc_constants import DOT_ATOM_TEXT, EMAIL_MAX_LENGTH

        self._dot_atom = DOT_ATOM_TEXT
        self._max = EMAIL_MAX_LENGTH
        self._check = check_deliverability
        self._max_domains = max_domains
        # domain -> (normalised form, IDNA ASCII form), or None when the domain fails
        self._domains: dict[str, tuple[str, int] | None] = {}

    def _domain(self, domain: str) -> tuple[str, int] | None:
        """(the normalised domain, the longest of its UTF-8, normalised and IDNA ASCII
        forms), or None when it fails."""
        try:
            return self._domains[domain]
        except KeyError:
            pass
        if len(self._domains) >= self._max_domains:
            self._domains.clear()
        from email_validator import EmailNotValidError, validate_email

        try:
            result = validate_email("a@" + domain, check_deliverability=self._check)
            lengths = (len(domain.encode()), len(result.domain.encode()), len(result.ascii_domain))
            found: tuple[str, int] | None = (result.domain, max(lengths))
        except EmailNotValidError:
            found = None
        self._domains[domain] = found
        return found

    def __call__(self, original: str) -> str:
        address = original.strip()
        local, at, domain = address.rpartition("@")
        if at and self._dot_atom.match(local) and domain and not _ODD_DOMAIN.search(domain):
            known = self._domain(domain)
            # The local part is ASCII: its length in bytes is its length.
            if known is not None and len(local) + 1 + known[1] <= self._max:
                return f"{local}@{known[0]}".lower()
        return normalize_email(original, check_deliverability=self._check)


# A subscriber's name (README "Subscribers"): what the CSV, `subscribers add --name` and the web
# form give, with line breaks and tabs turned into spaces, control and bidi-override characters
# removed, runs of spaces collapsed, and at most NAME_MAX characters.
NAME_MAX = 200
_NAME_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]")
_NAME_DROP = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b\u202a-\u202e\u2066-\u2069\ufeff]")
_NAME_SPACES = re.compile(r"\s+")


def normalize_name(name: str) -> str:
    """A name safe to store, export and write into a header (see NAME_MAX above)."""
    if name.isascii() and name.isprintable():  # the usual case: only spaces to collapse
        return " ".join(name.split())[:NAME_MAX].rstrip()
    return _clean_name(name)


def _clean_name(name: str) -> str:
    """normalize_name for any text (the rules in full)."""
    name = _NAME_DROP.sub("", _NAME_BREAKS.sub(" ", name))
    return _NAME_SPACES.sub(" ", name).strip()[:NAME_MAX].rstrip()


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
    # Reader choice (publisher/topics.py): daily | weekly | paused; topic names sorted and
    # joined by ";" (empty: all papers); at most this many papers (0: all). `choice_source`
    # says who set them last (web, csv, cli; NULL: nobody, the defaults): a CSV import never
    # overwrites a choice made on the web.
    sa.Column("cadence", sa.String(8), nullable=False, server_default="daily"),
    sa.Column("topics", sa.String(1000), nullable=False, server_default=""),
    sa.Column("max_papers", sa.Integer, nullable=False, server_default="0"),
    sa.Column("choice_source", sa.String(8), nullable=True),
    # When the reader confirmed the address (a double opt-in on the web); None: never did.
    sa.Column("confirmed_at", sa.DateTime, nullable=True),
    # /metrics and the report count active readers by cadence.
    sa.Index("ix_subscribers_status_cadence", "status", "cadence"),
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
    # The edition (EDITIONS): `daily`, or `weekly`, whose digest_date is its week's Monday.
    sa.Column("edition", sa.String(8), nullable=False, server_default="daily"),
    sa.Column("digest_date", sa.Date, nullable=False),
    # The reader, by id (migration 0012): the address is read from `subscribers` when the row
    # is claimed, so a row is a few integers and dates, and one reader has one row an edition.
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # A failure that retrying cannot fix (a 5xx reply): not retried even with --retry-failed.
    sa.Column("final", sa.Boolean, nullable=False, default=False),
    sa.Column("last_reply", sa.String(500), nullable=False, default=""),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    # The claim (a work queue, publisher/state/ledger.py): which sender holds this row, and
    # until when its lease runs; another sender takes the row over once the lease has expired.
    sa.Column("claimed_by", sa.String(100), nullable=True),
    sa.Column("lease_until", sa.DateTime, nullable=True),
    # The reader's topics and cap when the row was queued: the segment its message is rendered
    # for, so a change of choice during a send applies from the next edition.
    sa.Column("topics", sa.String(1000), nullable=False, server_default=""),
    sa.Column("max_papers", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint(
        "edition", "digest_date", "subscriber_id", name="uq_ledger_edition_digest_subscriber"
    ),
    # The edition too (migration 0014): an edition's counts by status are read from the index
    # alone, where with (digest_date, status) PostgreSQL read every row of the month.
    sa.Index("ix_ledger_digest_status", "digest_date", "status", "edition"),
)

# What compaction (publisher/state/compaction.py) folded of the ledger: per edition and segment
# (the rows' topics and cap), how many rows of each status were deleted, and how many of those
# readers a bounce or complaint event names the edition's date for. An edition's counts are its
# ledger rows plus these (`LedgerMixin.ledger_counts`).
ledger_totals = sa.Table(
    "ledger_totals",
    metadata,
    sa.Column("edition", sa.String(8), primary_key=True),
    sa.Column("digest_date", sa.Date, primary_key=True),
    sa.Column("topics", sa.String(1000), primary_key=True),
    sa.Column("max_papers", sa.Integer, primary_key=True),
    sa.Column("queued", sa.Integer, nullable=False, server_default="0"),
    sa.Column("sent", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("nomatch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("bounced", sa.Integer, nullable=False, server_default="0"),
    sa.Column("complained", sa.Integer, nullable=False, server_default="0"),
    sa.Column("compacted_at", sa.DateTime, nullable=False),
)

publications = sa.Table(
    "publications",
    metadata,
    # A digest's daily edition, or a week's weekly edition (digest_date: the week's Monday).
    sa.Column("edition", sa.String(8), primary_key=True, server_default="daily"),
    sa.Column("digest_date", sa.Date, primary_key=True),
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("content_hash", sa.String(128), nullable=False),
    sa.Column("feed_built_at", sa.DateTime, nullable=True),
    sa.Column("email_status", sa.String(8), nullable=False, default="none"),
    sa.Column("sent", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("email_started_at", sa.DateTime, nullable=True),
    sa.Column("email_finished_at", sa.DateTime, nullable=True),
    # Retries of a partial send's failed rows by `publisher run` (at most retry_failed_times).
    sa.Column("email_retries", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(1000), nullable=False),
)

# Rate limits shared by every web process (publisher/state/limits.py): one token bucket a key.
# A row whose bucket has refilled (`expires_at` passed) is the same as no row, and is deleted.
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False, index=True),
)

# Inbound mail (publisher/bounces, publisher/state/bounces.py): every message read, kept for
# review and keyed by the SHA-256 of its bytes (the same message imported twice counts once),
# and the events found in it, one per recipient (bounce, complaint, unsubscribe, ignored).
bounce_messages = sa.Table(
    "bounce_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("source", sa.String(1000), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("summary", sa.String(500), nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False),
)

bounce_events = sa.Table(
    "bounce_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.Integer, sa.ForeignKey("bounce_messages.id"), nullable=True),
    sa.Column("email", sa.String(320), nullable=False, index=True),
    # The subscriber it was matched to (a VERP token, else the address); None when unknown.
    sa.Column("subscriber_id", sa.Integer, nullable=True),
    sa.Column("digest_date", sa.Date, nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    # What the policy did: counted, suppressed, unknown address...
    sa.Column("action", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # What an `unverified` report (no valid VERP token) claimed: hard, soft, complaint...; it
    # acted on nobody, but the operator sees what it said. Empty for every other kind.
    sa.Column("reported_kind", sa.String(16), nullable=False, server_default=""),
    # Sisimai's reason (publisher/mailrules.py CAUSES); the kind follows from it.
    sa.Column("cause", sa.String(16), nullable=False, server_default=""),
    sa.Index("ix_bounce_events_digest_kind", "digest_date", "kind"),
    sa.Index("ix_bounce_events_subscriber", "subscriber_id", "kind"),
)


# The audit trail (publisher/state/lifecycle.py writes it, in the transaction of each change):
# who (`actor`) did what (`action`) to which subscriber, with the values before and after (JSON
# objects of the changed fields). Append-only: the application has no UPDATE or DELETE of it,
# apart from an erasure (`delete_data`), which replaces the address by its suppression hash.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("subscriber_id", sa.Integer, nullable=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("old_values", sa.String(2000), nullable=False),
    sa.Column("new_values", sa.String(2000), nullable=False),
    # /metrics counts actions and the report draws them per day: (action, at) answers both.
    sa.Index("ix_audit_log_action_at", "action", "at"),
    sa.Index("ix_audit_log_email", "email"),
)


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """The dialect's INSERT construct, which has ON CONFLICT (SQLite and PostgreSQL)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    values: dict[str, Any],
    index_elements: Sequence[str],
    update: dict[str, Any] | None = None,
) -> int:
    """INSERT one row; if a row with the same `index_elements` (a primary key or unique
    constraint) exists or is being inserted concurrently, do nothing (`update` None) or set the
    `update` columns on it instead. Never raises an integrity error for that key: the database
    decides (INSERT ... ON CONFLICT on SQLite and PostgreSQL). Returns the row count: for "do
    nothing", 1 if the row was inserted and 0 if it existed."""
    if conn.dialect.name in ("sqlite", "postgresql"):
        stmt = dialect_insert(conn.dialect.name, table).values(values)
        if update is None:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(index_elements))
        else:
            stmt = stmt.on_conflict_do_update(index_elements=list(index_elements), set_=update)
        return conn.execute(stmt).rowcount
    # Another database: insert in a savepoint, and update (or not) if that hits the key.
    try:
        with conn.begin_nested():
            return conn.execute(table.insert().values(values)).rowcount
    except sa.exc.IntegrityError:
        if update is None:
            return 0
        where = sa.and_(*(table.c[k] == values[k] for k in index_elements))
        return conn.execute(table.update().where(where).values(update)).rowcount


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling is off (isolation_level None) so that `_begin`
    # decides how each transaction starts.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # busy_timeout first: switching to WAL needs a lock another process may hold.
    cur.execute("PRAGMA busy_timeout=30000")
    # WAL: readers (web server) never block the writer (a send); NORMAL sync is still durable
    # against a killed process, which is the crash the ledger must survive.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # A write transaction takes SQLite's write lock at BEGIN (IMMEDIATE), waiting up to the
    # busy timeout. A deferred one that reads and then writes fails at once with "database is
    # locked" when another process wrote in between (no busy wait can save a stale snapshot),
    # which is what two processes on one file do all day.
    write = conn.get_execution_options().get("write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str) -> sa.Engine:
    """The engine for a state database URL: SQLite with WAL and write transactions that take
    the lock up front, or PostgreSQL with psycopg 3 (the two publisher runs on: config.py's
    `check_database` refuses other URLs)."""
    # preserve_rowcount: psycopg 3 resets rowcount when the cursor closes; callers count rows.
    engine = sa.create_engine(url, execution_options={"preserve_rowcount": True})
    # A full disk, a damaged file, an unreachable server: one line, not a driver traceback.
    sa.event.listen(engine, "handle_error", translate)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
        db_path = engine.url.database
        if db_path and db_path != ":memory:" and not db_path.startswith("file:"):
            # Every address and raw bounce lives here: the folder 0700 and the file 0600 when
            # created (SQLite gives -wal and -shm the file's mode), whatever the umask; an
            # existing one that others can read is one WARNING.
            database = Path(db_path)
            check_sqlite_files(database)
            private_dir(database.parent)
            private_file(database)
    return engine


# The Alembic revision these tables are (publisher/state/migrations/versions/, its head): a
# database stamped with it is opened without loading Alembic. A new migration moves it
# (tests/test_state_upgrade.py checks it is the head).
SCHEMA_REVISION = "0014"


def _at_revision(engine: sa.Engine, revision: str) -> bool:
    """Whether the database is stamped `revision` (False too when it cannot tell: no tables
    yet, or no `alembic_version`; the upgrade, which knows every case, then decides)."""
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
            return list(found) == [revision]
    except sa.exc.DBAPIError:
        return False


class StoreBase:
    """The engine; the concerns (publisher/state/*.py) add their methods as mixins."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if upgrade and not _at_revision(self.engine, SCHEMA_REVISION):
            # Alembic (with Mako and Pygments) is slow to import, a tenth of a second here and
            # more on a busy machine: only an open that has something to upgrade loads it, not
            # every `publisher` command on a database already at this code's revision.
            from .migrate import upgrade as _upgrade

            _upgrade(self.engine)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """A write transaction (`with self._write() as conn:`, committed at the end): on SQLite
        it holds the write lock from BEGIN, so a read-then-write never meets a stale snapshot."""
        with self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    @classmethod
    def open(cls, cfg: Config) -> Self:
        """Open the database named by cfg.database_url, creating or upgrading its tables (an
        Alembic migration, serialised between processes) when it is empty or older."""
        return cls(cfg.database_url)

    def ping(self) -> None:
        """One round trip to the database; raises (a StorageError) if it does not answer."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
