"""The send ledger: one row per (digest, subscriber), queued -> sent | failed."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa

from ..mailrules import TokenData
from . import partitions
from .health import StorageError
from .locks import advisory_key
from .schema import (
    ACTIVE,
    DAILY,
    FAILED,
    NOMATCH,
    QUEUED,
    SENT,
    _key,
    _now,
    dialect_insert,
    ledger,
    ledger_totals,
    subscribers,
    suppressions,
)

log = logging.getLogger("publisher.state")

# Rows queued at once from which queue_pending refreshes PostgreSQL's statistics (below).
ANALYZE_AFTER = 1000
# Now, naive UTC, by PostgreSQL's clock (what LedgerMixin._clock reads there), in a statement.
_PG_NOW = sa.func.timezone("UTC", sa.func.now(), type_=sa.DateTime)

# The values a sent mark binds from its row (entry id, reply, attempts), by index in the row.
_ROW_FIELDS = {"b_id": 0, "b_reply": 1, "b_attempts": 2}
_REPLY = _ROW_FIELDS["b_reply"]
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


# PostgreSQL: _MARK_SENT for a whole batch in one statement, the rows' values as three arrays
# (SentRecorder._record_pg). Same columns, same values, same id order (the arrays are sorted,
# and for a batch's few rows the plan is a nested loop over them: the rows lock in that order).
_PG_MARK_SENT = (
    f"UPDATE ledger SET status = '{SENT}', attempts = ledger.attempts + v.attempts, "
    "last_reply = v.reply, final = false, updated_at = $4::timestamp "
    "FROM unnest($1::bigint[], $2::text[], $3::integer[]) AS v(id, reply, attempts) "
    "WHERE ledger.id = v.id"
).encode()
_PG_MARK_NAME = b"publisher_mark_sent"
# One row, the batch most marks are (1.4 rows a commit in a 20,000 send): the same UPDATE
# without the arrays to unpack and join, 62 against 82 us of the server's CPU a mark, and 100
# against 121 us of round trip (4 x 5,000 marks interleaved, 2026-12-07).
_PG_MARK_ONE = (
    f"UPDATE ledger SET status = '{SENT}', attempts = ledger.attempts + $3::integer, "
    "last_reply = $2::text, final = false, updated_at = $4::timestamp "
    "WHERE ledger.id = $1::bigint"
).encode()
_PG_MARK_ONE_NAME = b"publisher_mark_one"
# With the edition's date: the ledger's primary key is (id, digest_date), and a plan that knows
# the date runs in the month's partition alone (pruned as the plan starts). By id alone each row
# is looked up in every month's index: four with 90 days kept.
_ON_DATE = b" AND ledger.digest_date = $5::date"
_PG_MARK_SENT_ON = _PG_MARK_SENT + _ON_DATE
_PG_MARK_ONE_ON = _PG_MARK_ONE + _ON_DATE
# The recorder's connection prepares _PG_MARK_SENT once, with one plan for every batch: planning
# an UPDATE of the partitioned ledger took longer than running it (62 us a batch of 1-2 rows,
# 0.76 s of the server's 3.6 s of CPU in a 20,000 send; PostgreSQL parsed it each time too).
# That plan is made without the batch's arrays, so the planner is told how: a nested loop over
# the arrays in their (id) order, an index lookup of each row (the rows lock in that order), as
# it chose for a batch's few rows. Left to itself it may choose a hash join over sequential
# scans (it did, for a month's partition still empty or not analyzed), which a cached plan
# would then keep doing on a million rows.
_PG_MARK_SETTINGS = (
    "SET synchronous_commit = off",
    "SET plan_cache_mode = force_generic_plan",
    "SET enable_seqscan = off",
    "SET enable_bitmapscan = off",
    "SET enable_hashjoin = off",
    "SET enable_mergejoin = off",
)
_REPLY_CHARS = 500  # ledger.last_reply's length


def _sent_rows(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # In id order: a batch locks its rows in statement order, so two batches that meet on the
    # same rows (a sender whose lease ran out and the one that took its rows over) take them
    # in one order and cannot each hold a row the other waits for. The renewal, the statement
    # that meets a batch's rows most, never waits for a row lock at all (renew_claims).
    return sorted(rows, key=lambda row: row[0])


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back as a
# whole and nothing of it happened, so running it again is safe, and right.
CONFLICTS = frozenset({"40P01", "40001"})
CONFLICT_TRIES = 8  # attempts of one ledger transaction before giving up (a StorageError)
CONFLICT_PAUSE = 0.02  # seconds before the second attempt, doubled for each next one


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` (the driver's error, or SQLAlchemy's wrapping it) is a deadlock or a
    serialization failure, after which the whole transaction may simply be run again."""
    for err in (exc, getattr(exc, "orig", None)):
        if str(getattr(err, "sqlstate", None) or "") in CONFLICTS:
            return True
    return False


_T = TypeVar("_T")
_P = ParamSpec("_P")


def retry_conflicts(what: str, attempt: Callable[[], _T]) -> _T:
    """Run `attempt` (one whole transaction) again after a deadlock or a serialization failure,
    up to CONFLICT_TRIES times with a growing pause; then a StorageError, never a traceback."""
    for n in range(1, CONFLICT_TRIES + 1):
        try:
            return attempt()
        except Exception as exc:
            if not is_conflict(exc):
                raise
            if n == CONFLICT_TRIES:
                first = (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0]
                raise StorageError(
                    f"state database: {what} failed {n} times in a row on a conflict with "
                    f"another transaction: {first}"
                ) from exc
            log.info("%s: %s; trying again (%d/%d)", what, type(exc).__name__, n, CONFLICT_TRIES)
            time.sleep(CONFLICT_PAUSE * 2 ** (n - 1))
    raise AssertionError("unreachable")


def _retrying(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """A ledger method that is one transaction, retried on a deadlock or serialization
    failure (`retry_conflicts`)."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        return retry_conflicts(method.__name__, lambda: method(*args, **kwargs))

    return wrapper


class SentRecorder:
    """Records accepted messages on one connection; one thread at a time. Each call commits
    its batch as one transaction: all of it or none of it, retried whole after a deadlock.

    On SQLite the UPDATE is compiled once for the dialect (so still portable SQL) and run on
    one cursor of the driver's own connection (`_record_sqlite`): SQLAlchemy's per-execute
    machinery, and even its pool's commit and cursor wrappers, cost more than the UPDATE and
    COMMIT themselves, on the path each message's final "." waits on. On PostgreSQL a batch
    is one statement sent with libpq itself (`_record_pg`).
    """

    def __init__(self, engine: sa.Engine, digest_date: dt.date | None = None) -> None:
        dialect = engine.dialect
        self._date = digest_date
        self.conn = engine.raw_connection()
        self._checkpoints: _Checkpointer | None = None
        self._pg: Any = None  # the psycopg connection, on PostgreSQL
        self._sqlite: Any = None  # the sqlite3 connection, on SQLite
        if dialect.name == "sqlite":
            # SQLite copies the WAL back into the database (a checkpoint, with two fsyncs) in
            # the commit that takes the WAL past 1,000 pages: every few hundred marks, one
            # commit took milliseconds, and every connection of the send waited on it (a
            # fifth of all commit time at 20,000 readers). This connection's commits never
            # checkpoint; a thread of its own does, without blocking them (PASSIVE). The
            # connection leaves the pool, so the setting reaches no other user.
            self.conn.detach()
            self._sqlite = self.conn.dbapi_connection
            self._sqlite.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpoints = _Checkpointer(engine)
            self._prepare_sqlite(dialect)
        if dialect.name == "postgresql":
            # Each call here is what a message's final "." waits for. With PostgreSQL's
            # default synchronous_commit every commit waits for a WAL flush to disk (a few ms),
            # and BEGIN, the UPDATEs and COMMIT were three round trips: a send ran at half
            # SQLite's speed. So, for this connection only:
            # - synchronous_commit off. A committed row still survives any crash of this
            #   process, the crash the ledger must survive; only a crash of the database server
            #   itself may lose the last fraction of a second of `sent` marks: re-sends, never
            #   losses. The same durability as SQLite's here (WAL, synchronous=NORMAL).
            # - autocommit, and one statement per batch (_PG_MARK_SENT): a call is one round
            #   trip and one transaction. It holds all its rows' locks until it ends, is rolled
            #   back whole if it fails, and may be run again whole (`record`). That is why the
            #   rows go in id order (_sent_rows).
            # - the statement prepared once, with its one plan (_PG_MARK_SETTINGS).
            # The connection leaves the pool, so none of this reaches another user.
            self.conn.detach()
            pg = self.conn.dbapi_connection
            pg.autocommit = True
            for setting in _PG_MARK_SETTINGS:
                pg.execute(setting)
            # The statement goes through libpq directly (PGconn.exec_prepared, which releases
            # the interpreter lock while it waits): psycopg's cursor machinery (adaptation,
            # prepared-statement bookkeeping, its pipeline's generators) cost more CPU than the
            # round trip itself. The replies' array is quoted by psycopg's own list dumper.
            from psycopg.adapt import PyFormat, Transformer

            self._pg = pg
            dated = digest_date is not None
            for name, sql in (
                (_PG_MARK_NAME, _PG_MARK_SENT_ON if dated else _PG_MARK_SENT),
                (_PG_MARK_ONE_NAME, _PG_MARK_ONE_ON if dated else _PG_MARK_ONE),
            ):
                self._pg_check(pg.pgconn.prepare(name, sql))
            transformer = Transformer(pg)
            self._texts = transformer.get_dumper([""], PyFormat.TEXT)
            self._text = transformer.get_dumper("", PyFormat.TEXT)

    def _prepare_sqlite(self, dialect: sa.Dialect) -> None:
        """_MARK_SENT compiled for SQLite (qmark: positional parameters) and what fills each
        parameter: a template holding the fixed values (the status...), converted once, the
        slot of the batch's time, and the slots of a row's id, reply and attempts."""
        compiled = _MARK_SENT.compile(dialect=dialect)
        self._sql = compiled.string
        order = list(compiled.positiontup or ())
        self._template: list[Any] = [None] * len(order)
        self._row_slots: list[tuple[int, int]] = []  # (slot, index in the row)
        self._now_slot, self._now_process = -1, None
        for bind in compiled.binds.values():
            slot = order.index(compiled.bind_names[bind])
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.key == "b_now":
                self._now_slot, self._now_process = slot, process
            elif bind.key in _ROW_FIELDS:
                if process is not None:  # ids, texts and integers go to sqlite3 as they are
                    raise TypeError(f"{bind.key} would need a conversion on SQLite")
                self._row_slots.append((slot, _ROW_FIELDS[bind.key]))
            else:
                self._template[slot] = bind.value if process is None else process(bind.value)
        self._cursor = self._sqlite.cursor()  # one for every batch: the connection is ours

    def _sqlite_params(self, rows: list[tuple[Any, ...]]) -> list[list[Any]]:
        now = _now()
        template = self._template.copy()
        template[self._now_slot] = now if self._now_process is None else self._now_process(now)
        out = []
        for values in rows:
            params = template.copy()
            for slot, index in self._row_slots:
                value = values[index]
                # the reply, as long as its column
                params[slot] = value[:_REPLY_CHARS] if index == _REPLY else value
            out.append(params)
        return out

    def record(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Mark the rows sent, in one transaction. The server has accepted these messages:
        a deadlock or serialization failure must not lose the marks (each lost mark is a
        message sent twice), so the batch, rolled back whole, is run again whole."""
        ordered = _sent_rows(rows)
        if not ordered:
            return
        if self._pg is not None:
            statement = self._pg_values(ordered)
            retry_conflicts("marking messages sent", lambda: self._record_pg(statement))
            return
        params = self._sqlite_params(ordered)
        retry_conflicts("marking messages sent", lambda: self._record_sqlite(params))

    def _pg_values(self, rows: list[tuple[Any, ...]]) -> tuple[bytes, list[bytes]]:
        """The statement for these rows (_PG_MARK_ONE for one, _PG_MARK_SENT for more) and its
        parameters, in PostgreSQL's text form."""
        now = _now().isoformat(sep=" ").encode()
        if len(rows) == 1:
            ((entry_id, reply, tries),) = rows
            text = bytes(self._text.dump(reply[:_REPLY_CHARS]))
            name, values = _PG_MARK_ONE_NAME, [str(entry_id).encode(), text, b"%d" % tries, now]
        else:
            ids = ",".join(str(row[0]) for row in rows)
            attempts = ",".join(str(row[2]) for row in rows)
            replies = bytes(self._texts.dump([row[_REPLY][:_REPLY_CHARS] for row in rows]))
            arrays = [f"{{{ids}}}".encode(), replies, f"{{{attempts}}}".encode()]
            name, values = _PG_MARK_NAME, [*arrays, now]
        if self._date is not None:
            values.append(self._date.isoformat().encode())
        return name, values

    def _record_pg(self, statement: tuple[bytes, list[bytes]]) -> None:
        self._pg_check(self._pg.pgconn.exec_prepared(*statement))

    def _pg_check(self, result: Any) -> None:
        from psycopg import errors, pq

        if result.status != pq.ExecStatus.COMMAND_OK:
            # The driver's own exception, SQLSTATE and all: retry_conflicts runs a deadlock
            # victim again; anything else reaches the workers as it would from a cursor.
            raise errors.error_from_result(result, encoding=self._pg.info.encoding)

    def _record_sqlite(self, params: list[list[Any]]) -> None:
        cursor = self._cursor
        if len(params) == 1:
            # One statement is a transaction by itself (the driver is in autocommit,
            # schema._sqlite_connect): no BEGIN nor COMMIT on the path most messages take.
            cursor.execute(self._sql, params[0])
            return
        cursor.execute("BEGIN IMMEDIATE")
        try:
            cursor.executemany(self._sql, params)
            cursor.execute("COMMIT")
        except BaseException:
            if self._sqlite.in_transaction:
                cursor.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
        if self._sqlite is not None:
            self._cursor.close()
        self.conn.close()


class _Checkpointer:
    """A thread that checkpoints a SQLite database's WAL every `INTERVAL` seconds (PASSIVE:
    as far as it can without waiting for a reader or blocking a writer), for a connection
    whose own commits do not (SentRecorder). Between two checkpoints a fast send adds a
    thousand pages or so, the size at which SQLite's own automatic checkpoint runs."""

    INTERVAL = 0.1

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="checkpoint", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = self.engine.raw_connection()
        try:
            while not self.closed.wait(self.INTERVAL):
                self.checkpoint(conn)
            self.checkpoint(conn)  # what the last marks added, once the send is over
        finally:
            conn.close()

    @staticmethod
    def checkpoint(conn: Any) -> None:
        cursor = conn.cursor()
        try:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            cursor.fetchall()
        except Exception:  # noqa: BLE001 - a checkpoint missed is done by the next one
            log.debug("WAL checkpoint failed; the next one catches up", exc_info=True)
        finally:
            cursor.close()

    def close(self) -> None:
        self.closed.set()
        self.thread.join()


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
    # The reader's choice when the row was queued: the segment the message is rendered for.
    topics: str = ""  # names joined by ";" (empty: all papers)
    max_papers: int = 0  # 0: all

    @property
    def segment(self) -> tuple[str, int]:
        return (self.topics, self.max_papers)


def _readers_of(edition: str) -> Any:
    """SQL: the readers an edition is queued for, those whose cadence is that edition's
    (daily readers get the daily edition, weekly readers the weekly one, paused ones none)."""
    return subscribers.c.cadence == edition


def _matches(present: frozenset[str] | None) -> Any:
    """SQL: the reader's topics match something in an edition whose papers have the topics
    `present` (None: not known, everyone matches). Stored as `a;b`: compared as `;a;b;`."""
    if present is None:
        return sa.true()
    wrapped = sa.literal(";") + subscribers.c.topics + sa.literal(";")
    return sa.or_(
        subscribers.c.topics == "",
        *(wrapped.contains(f";{name};", autoescape=True) for name in sorted(present)),
    )


class LedgerMixin:
    engine: sa.Engine

    # -- the ledger --------------------------------------------------------------------------

    def _mailable(self) -> Any:
        """Subscribers that may be mailed: active and not suppressed."""
        return sa.and_(
            subscribers.c.status == ACTIVE,
            ~sa.exists().where(suppressions.c.email == subscribers.c.email),
        )

    def segment_sizes(self, edition: str = DAILY) -> list[tuple[str, int, int]]:
        """(topics, max_papers, readers) for each segment of the mailable readers of `edition`
        (`publisher send --dry-run`): one grouped query."""
        q = (
            sa.select(subscribers.c.topics, subscribers.c.max_papers, sa.func.count())
            .where(self._mailable(), _readers_of(edition))
            .group_by(subscribers.c.topics, subscribers.c.max_papers)
            .order_by(subscribers.c.topics, subscribers.c.max_papers)
        )
        with self.engine.connect() as conn:
            return [(t, int(m), int(n)) for t, m, n in conn.execute(q)]

    @_retrying
    def queue_pending(
        self,
        digest_date: dt.date,
        present_topics: frozenset[str] | None = None,
        *,
        edition: str = DAILY,
    ) -> int:
        """Add a ledger row for every mailable reader of `edition` (daily: the readers whose
        cadence is daily; weekly: the weekly ones) without one for this edition.

        One INSERT ... SELECT: no subscriber list in memory; idempotent, and safe when several
        senders queue at once. Each row keeps the reader's topics and cap (its segment). With
        `present_topics` (the topics of the edition's papers), a reader whose topics match none
        of them gets a `nomatch` row (served, nothing to send) instead of a queued one. Rows
        are inserted in segment order, so a sender claiming by id meets one segment after the
        other (the rendered segments' cache stays small). Returns the number of rows added.
        """
        now = _now()
        status = sa.case((_matches(present_topics), sa.literal(QUEUED)), else_=sa.literal(NOMATCH))
        sel = (
            sa.select(
                sa.literal(edition),
                sa.literal(digest_date, sa.Date),
                subscribers.c.id,
                status,
                sa.literal(0),
                sa.literal(False),
                sa.literal(""),
                sa.literal(now, sa.DateTime),
                subscribers.c.topics,
                subscribers.c.max_papers,
            )
            .where(
                self._mailable(),
                _readers_of(edition),
                ~sa.exists().where(
                    ledger.c.digest_date == digest_date,
                    ledger.c.edition == edition,
                    ledger.c.subscriber_id == subscribers.c.id,
                ),
            )
            .order_by(subscribers.c.topics, subscribers.c.max_papers, subscribers.c.id)
        )
        ins = dialect_insert(self.engine.dialect.name, ledger).from_select(
            [
                "edition",
                "digest_date",
                "subscriber_id",
                "status",
                "attempts",
                "final",
                "last_reply",
                "updated_at",
                "topics",
                "max_papers",
            ],
            sel,
        )
        # Senders queue one at a time (below); the NOT EXISTS skips the rows that are there,
        # and ON CONFLICT stays as the guard that no reader is queued twice.
        ins = ins.on_conflict_do_nothing(index_elements=["edition", "digest_date", "subscriber_id"])
        self.ensure_ledger_partition(digest_date)
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                # One queuer of a date at a time, daily or weekly edition (SQLite's BEGIN
                # IMMEDIATE does the same for the whole database).
                # Several senders starting together each planned the INSERT on the empty
                # ledger: a nested loop whose NOT EXISTS read, for every reader, every row the
                # others had inserted but not yet committed. The first one took 0.5 s and the
                # others 50 to 200 s at 20,000 readers (3 senders, 2026-12-07). Waiting here,
                # before the INSERT is planned, the next one plans it on the rows and the
                # statistics the first committed, and adds nothing in a hash anti join.
                key = advisory_key(f"queue:{digest_date.isoformat()}")
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            added = max(conn.execute(ins).rowcount, 0)
            if added >= ANALYZE_AFTER and conn.dialect.name == "postgresql":
                # The claims' plan rests on the tables' statistics, which autovacuum refreshes
                # only some time after a big change: with none yet (a day's rows just queued, a
                # list just imported) PostgreSQL planned each claim as a scan of every
                # subscriber per ledger row (seconds per claim at 5,000, for the first minute
                # of a send). In this transaction: a sender queueing at the same moment waits
                # for it (the queueing lock), so no claim runs on the stale statistics.
                conn.exec_driver_sql("ANALYZE ledger, subscribers")
        return added

    def ensure_ledger_partition(self, day: dt.date) -> None:
        """PostgreSQL: make the ledger's partition for `day`'s month if it has none yet
        (partitions.py); a row of that month can be inserted from then on. A no-op on SQLite.
        Every insert into the ledger comes after it (`queue_pending`)."""
        if self.engine.dialect.name == "postgresql":
            with self._write() as conn:
                partitions.ensure(conn, day)

    @staticmethod
    def _wanted(
        retry_failed: bool,
        include_final: bool = False,
        failed_before: dt.datetime | None = None,
    ) -> Any:
        """Rows to send: queued; with retry_failed also failed ones not final; with
        include_final every failed one (a 5xx the operator wants tried again). With
        `failed_before` (naive UTC), only failures recorded before then: a send passes its
        start, so a row it failed itself (max_attempts used up) is not taken again by it."""
        wanted = ledger.c.status == QUEUED
        failed = ledger.c.status == FAILED
        if failed_before is not None:
            failed = sa.and_(failed, ledger.c.updated_at < failed_before)
        if include_final:
            wanted = sa.or_(wanted, failed)
        elif retry_failed:
            wanted = sa.or_(wanted, sa.and_(failed, ~ledger.c.final))
        return wanted

    def count_pending(
        self,
        digest_date: dt.date,
        retry_failed: bool = False,
        include_final: bool = False,
        *,
        edition: str = DAILY,
    ) -> int:
        """How many rows `pending_for` would yield now."""
        q = (
            sa.select(sa.func.count())
            .select_from(ledger.join(subscribers, subscribers.c.id == ledger.c.subscriber_id))
            .where(ledger.c.digest_date == digest_date, ledger.c.edition == edition)
            .where(self._wanted(retry_failed, include_final))
            .where(self._mailable())
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def pending_for(
        self,
        digest_date: dt.date,
        retry_failed: bool = False,
        batch: int = 1000,
        *,
        edition: str = DAILY,
    ) -> Iterator[LedgerEntry]:
        """Ledger rows still to send for a digest, streamed by id in batches.

        Queued rows, plus (with retry_failed) failed rows whose failure was not final; only for
        subscribers who are still mailable right now.
        """
        wanted = self._wanted(retry_failed)
        last = 0
        while True:
            q = (
                _entries()
                .where(
                    ledger.c.digest_date == digest_date,
                    ledger.c.edition == edition,
                    ledger.c.id > last,
                    wanted,
                )
                .where(self._mailable())
                .order_by(ledger.c.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield _entry(r)
            last = rows[-1].id

    def sent_recorder(self, digest_date: dt.date | None = None) -> SentRecorder:
        """Sent marks for batches of (entry id, reply, attempts) on one long-lived connection,
        used by one thread at a time (checking a connection out of the pool per batch costs
        more than the UPDATE). With `digest_date`, every row marked must be of that edition
        (on PostgreSQL the marks then look in its month's partition alone)."""
        return SentRecorder(self.engine, digest_date)

    @_retrying
    def mark_failed(
        self,
        entry_id: int,
        reply: str,
        *,
        final: bool,
        attempts: int = 1,
        owner: str | None = None,
    ) -> bool:
        """Record a failure after `attempts` more attempts; `final` (a 5xx) is never retried.

        With `owner`, only while that sender still holds the row's claim (a sender whose lease
        was taken over must not fail a row the new holder may have sent). True if recorded."""
        fence = sa.true() if owner is None else ledger.c.claimed_by == owner
        with self._write() as conn:
            res = conn.execute(
                ledger.update()
                .where(ledger.c.id == entry_id, ledger.c.status != SENT, fence)
                .values(
                    status=FAILED,
                    final=final,
                    lease_until=None,  # settled: a --retry-failed may claim it at once
                    attempts=ledger.c.attempts + attempts,
                    last_reply=reply[:500],
                    updated_at=_now(),
                )
            )
        return res.rowcount > 0

    def ledger_counts(
        self,
        digest_date: dt.date,
        *,
        edition: str = DAILY,
        statuses: tuple[str, ...] | None = None,
    ) -> dict[str, int]:
        """{queued, sent, failed} counts for a digest (zeros included), and `nomatch` (readers
        served with nothing matched) when there are any: its ledger rows plus what compaction
        folded of them (`ledger_totals`, publisher/state/compaction.py). `statuses`: count only
        those (an index range: `publisher status` asks a million-row digest for its few
        `nomatch`)."""
        wanted = statuses or (QUEUED, SENT, FAILED, NOMATCH)
        counts = dict.fromkeys(statuses or (QUEUED, SENT, FAILED), 0)
        q = sa.select(ledger.c.status, sa.func.count()).where(
            ledger.c.digest_date == digest_date, ledger.c.edition == edition
        )
        if statuses is not None:
            q = q.where(ledger.c.status.in_(statuses))
        t = ledger_totals.c
        folded = sa.select(*(sa.func.sum(t[s]) for s in wanted)).where(
            t.digest_date == digest_date, t.edition == edition
        )
        with self.engine.connect() as conn:
            for status, n in conn.execute(q.group_by(ledger.c.status)):
                counts[status] = n
            for status, n in zip(wanted, conn.execute(folded).one(), strict=True):
                if n:
                    counts[status] = counts.get(status, 0) + int(n)
        return counts

    def unsent_active(self, digest_date: dt.date, *, edition: str = DAILY) -> int:
        """Mailable readers of `edition` whose ledger row for it is not settled: neither
        `sent`, `nomatch` nor failed for good (`final`, a 5xx that no re-run would change).
        0 = all done."""
        settled = sa.or_(
            ledger.c.status.in_([SENT, NOMATCH]),
            sa.and_(ledger.c.status == FAILED, ledger.c.final),
        )
        q = (
            sa.select(sa.func.count())
            .select_from(subscribers)
            .where(
                self._mailable(),
                _readers_of(edition),
                ~sa.exists().where(
                    ledger.c.digest_date == digest_date,
                    ledger.c.edition == edition,
                    ledger.c.subscriber_id == subscribers.c.id,
                    settled,
                ),
            )
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def ledger_by_message_id(
        self, ledger_ids: Sequence[int], provider_ids: Sequence[str] = ()
    ) -> TokenData | None:
        """The reader and digest of the sent message whose ledger row is one of `ledger_ids`
        (read from our own signed Message-IDs, `mailer.message_ledger_ids`), or whose server's
        reply named one of `provider_ids` (Amazon SES answers ``250 Ok <its id>``); None if
        none is ours."""
        ids = list(ledger_ids)[:20]
        replies = [f"250 Ok {p.strip()}" for p in provider_ids if p and p.strip()][:20]
        if not ids and not replies:
            return None
        cond = []
        if ids:
            cond.append(ledger.c.id.in_(ids))
        if replies:
            cond.append(ledger.c.last_reply.in_(replies))
        q = (
            sa.select(ledger.c.subscriber_id, ledger.c.digest_date)
            .where(sa.or_(*cond), ledger.c.status == SENT)
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return TokenData(row.subscriber_id, row.digest_date) if row else None

    def ledger_entry(
        self, digest_date: dt.date, email: str, *, edition: str = DAILY
    ) -> dict[str, Any] | None:
        """The raw ledger row for (digest, the reader at this address), with the address as
        `email`, for inspection and tests."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(ledger, subscribers.c.email)
                .join(subscribers, subscribers.c.id == ledger.c.subscriber_id)
                .where(
                    ledger.c.digest_date == digest_date,
                    ledger.c.edition == edition,
                    subscribers.c.email == _key(email),
                )
            ).first()
        return dict(row._mapping) if row else None


def _entries() -> sa.Select[Any]:
    """SELECT of what a LedgerEntry holds (the ledger row and its subscriber's name)."""
    return sa.select(
        ledger.c.id,
        ledger.c.digest_date,
        ledger.c.subscriber_id,
        subscribers.c.email,
        subscribers.c.name,
        ledger.c.status,
        ledger.c.attempts,
        ledger.c.last_reply,
        ledger.c.topics,
        ledger.c.max_papers,
    ).join(subscribers, subscribers.c.id == ledger.c.subscriber_id)


def _entry(r: Any) -> LedgerEntry:
    return LedgerEntry(
        id=r.id,
        digest_date=r.digest_date,
        subscriber_id=r.subscriber_id,
        email=r.email,
        name=r.name,
        status=r.status,
        attempts=r.attempts,
        last_reply=r.last_reply,
        topics=r.topics,
        max_papers=r.max_papers,
    )
