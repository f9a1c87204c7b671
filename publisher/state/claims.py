"""Claims: the ledger as a work queue. A sender claims batches of rows under a lease, renews
the lease while it works, checks its claim before a message's final ".", and gives back what it
did not send; rows whose holder's lease ran out are taken over by the others
(publisher/delivery/claims.py is the sender's side). A mixin of `Store`, beside `LedgerMixin`
(publisher/state/ledger.py), whose `_wanted` and `_mailable` it uses."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from .ledger import _PG_NOW, LedgerEntry, _entries, _retrying
from .schema import DAILY, QUEUED, SENT, _now, ledger, publications, subscribers


def _ids(engine: sa.Engine, ids: list[int]) -> sa.ColumnElement[bool]:
    """`ledger.id IN ids` for the claim statements that name a sender's open rows (up to
    CLAIM_BATCH_MAX, every quarter of a second for `revoked_claims`). On PostgreSQL one array
    parameter, `id = ANY(:ids)`: an expanding IN renders, binds and sends a parameter per id,
    and its text differs with their number, so no statement cache kept it (a PostgreSQL send
    went from 1,893 to 2,078 msg/s with the array, bench/compare.py, 2026-12-06). SQLite keeps
    the IN: json_each was slower at 100 ids and only a quarter faster at 1,000. (SQLAlchemy's
    generic ARRAY, which the PostgreSQL dialect renders as its own: a send on SQLite does not
    import that dialect, 20 ms.)"""
    if engine.dialect.name == "postgresql":
        return ledger.c.id == sa.any_(sa.bindparam("ids", ids, type_=sa.ARRAY(sa.Integer)))
    # SQLite's IN list is padded to a power of two with the last id repeated (the same rows).
    # Its text differs with the number of ids, and Python's sqlite3 keeps every text it runs
    # prepared, up to 128 per connection, each with up to 1,000 parameters: a send's checks,
    # asking about a different number of rows every quarter second, grew SQLite's memory by
    # 12 MiB in 40 s of a 300,000-reader send (bench/deliver.py's memory check: peak RSS
    # 1.25x from 1,000 to 100,000 readers). Padded, a statement has at most 11 texts.
    size = 1 << (len(ids) - 1).bit_length() if ids else 0
    return ledger.c.id.in_(ids + ids[-1:] * (size - len(ids)))


def _held(
    engine: sa.Engine, owner: str, ids: list[int], digest_date: dt.date | None
) -> sa.ColumnElement[bool]:
    """Rows among `ids` that `owner` holds, of the edition dated `digest_date` if given. On
    PostgreSQL the date lets each id be looked up in that month's partition alone, where by id
    alone it probes every month's primary key (three or four with 90 days kept); the checks
    and renewals ask about up to CLAIM_BATCH_MAX rows four times a second. SQLite has no
    partitions, and given the date its planner walks the edition's rows by
    ix_ledger_digest_status instead of looking the ids up by rowid (a check of 1,000 ids in a
    20,000-reader edition: 8.4 against 4.5 ms): there the ids alone."""
    held = sa.and_(_ids(engine, ids), ledger.c.claimed_by == owner)
    if digest_date is not None and engine.dialect.name == "postgresql":
        held = sa.and_(held, ledger.c.digest_date == digest_date)
    return held


class ClaimsMixin:
    engine: sa.Engine

    def _clock(self, conn: sa.Connection) -> dt.datetime:
        """Now, naive UTC, by the database's clock on PostgreSQL (senders on several machines
        compare leases on one clock) and by this machine's on SQLite (one machine)."""
        if conn.dialect.name == "postgresql":
            return conn.execute(sa.select(sa.func.timezone("UTC", sa.func.now()))).scalar_one()
        return _now()

    @_retrying
    def claim(
        self,
        digest_date: dt.date,
        owner: str,
        limit: int,
        lease_seconds: float,
        retry_failed: bool = False,
        include_final: bool = False,
        *,
        failed_before: dt.datetime | None = None,
        edition: str = DAILY,
    ) -> list[LedgerEntry]:
        """Claim up to `limit` rows to send (oldest first): wanted rows of mailable
        subscribers that nobody holds or whose holder's lease has run out. The claim is
        `owner`'s until `lease_seconds` from now (renewed by `renew_claims`). With
        `failed_before` (the send's start), failed rows are taken only if they failed before
        it: a row that used up its attempts in this send stays failed until the next one
        (without it, `--retry-failed` against a mailbox that is always full never ended).

        PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent senders take disjoint batches
        without waiting on each other; SQLite: the write lock of BEGIN IMMEDIATE.

        Each claim of `owner` starts after the last row its previous claim took: rows are
        sent roughly in id order, so looking from the start again would step over every row
        already sent, each claim slower than the last (at 20,000 subscribers most of a claim's
        time on PostgreSQL). Rows before that point which are free again (given back by a
        sender that stopped, or of a dead one) are claimed once nothing is left after it."""
        hints = self.__dict__.setdefault("_claim_hints", {})
        key = (edition, digest_date, owner)
        # Not when failed rows are wanted again: they are claimed in order.
        again = retry_failed or include_final
        after = 0 if again else hints.pop(key, 0)
        if self.engine.dialect.name == "postgresql":
            # Each claim query is one statement, so a transaction by itself: no BEGIN and
            # COMMIT round trips.
            session = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        else:
            session = self._write()
        with session as conn:
            wanted = self._wanted(retry_failed, include_final, failed_before)
            entries = self._take(
                conn, digest_date, owner, limit, lease_seconds, wanted, after, edition
            )
            if after and len(entries) < limit:
                more = limit - len(entries)
                entries += self._take(
                    conn, digest_date, owner, more, lease_seconds, wanted, 0, edition
                )
        if entries and not again:
            hints[key] = max(after, max(e.id for e in entries))
        return sorted(entries, key=lambda e: e.id)

    def _take(
        self,
        conn: sa.Connection,
        digest_date: dt.date,
        owner: str,
        limit: int,
        lease_seconds: float,
        wanted: Any,
        after: int,
        edition: str = DAILY,
    ) -> list[LedgerEntry]:
        """One claim query of `claim`: `wanted` rows with an id above `after`."""
        pg = conn.dialect.name == "postgresql"
        # PostgreSQL: the database's clock inside the statement (the same now() _clock reads),
        # not a query of its own.
        now = _PG_NOW if pg else self._clock(conn)
        # Free: nobody's, or a lease run out, except this owner's own: a send whose clock jumped
        # (or that was paused) past its leases is still sending those rows, and claiming them
        # again would hand one reader to two of its connections. Another sender may take them
        # over; the holder's check before the final "." then leaves them out.
        free = sa.or_(
            ledger.c.lease_until.is_(None),
            sa.and_(ledger.c.lease_until < now, ledger.c.claimed_by.is_distinct_from(owner)),
        )
        where = [ledger.c.digest_date == digest_date, ledger.c.edition == edition, wanted, free]
        if after:
            where.append(ledger.c.id > after)
        lease_until = now + dt.timedelta(seconds=lease_seconds)
        # The rows come back as plain tuples in LedgerEntry's field order, the digest's date
        # given, not read back: at a few microseconds a row, building entries by column name
        # (and parsing each row's date) was most of a claim's time.
        columns = [c for c in _entries().selected_columns if c.name != "digest_date"]
        if pg:
            candidates = (
                sa.select(ledger.c.id)
                .join(subscribers, subscribers.c.id == ledger.c.subscriber_id)
                .where(*where, self._mailable())
                .order_by(ledger.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=ledger)
            )
            # One statement: UPDATE ... FROM subscribers RETURNING hands back the entries with
            # their names (SQLite cannot return another table's columns). A claim holds up all
            # of a sender's connections once its batch is used up, and the clock, the claim and
            # a SELECT of the rows (planned as a hash join over every subscriber) were three
            # round trips.
            # The chosen rows are a MATERIALIZED CTE, so the locking SELECT runs exactly once.
            # As `id IN (subquery)` the planner may put it on the inner side of a join and run
            # it again for each row: each run skips the rows the UPDATE has just changed and
            # returns the next ones, and the claim took every row, not `limit` (it did, once
            # the UPDATE also named the edition's date). The outer UPDATE names that date
            # though the ids imply it: the ledger is partitioned by month
            # (publisher/state/partitions.py), and without it each chosen id was looked up in
            # every month's partition.
            chosen = candidates.cte("chosen").prefix_with("MATERIALIZED")
            take = (
                ledger.update()
                .where(ledger.c.id == chosen.c.id)
                .where(ledger.c.digest_date == digest_date)
                .where(subscribers.c.id == ledger.c.subscriber_id)
                .values(claimed_by=owner, lease_until=lease_until)
                .returning(*columns)
            )
            rows = conn.execute(take).all()
        else:
            # SQLite: this transaction holds the database's write lock (BEGIN IMMEDIATE), so
            # the rows the SELECT finds are the rows the UPDATE's identical subquery claims;
            # no list of ids travels back as a thousand bound parameters.
            chosen = (
                sa.select(*columns)
                .select_from(ledger.join(subscribers, subscribers.c.id == ledger.c.subscriber_id))
                .where(*where, self._mailable())
                .order_by(ledger.c.id)
                .limit(limit)
            )
            rows = conn.execute(chosen).all()
            if not rows:
                return []
            ids = chosen.with_only_columns(ledger.c.id).scalar_subquery()
            conn.execute(
                ledger.update()
                .where(ledger.c.id.in_(ids))
                .values(claimed_by=owner, lease_until=lease_until)
            )
        return [LedgerEntry(r[0], digest_date, *r[1:]) for r in rows]

    @_retrying
    def renew_claims(
        self,
        owner: str,
        ids: Iterable[int],
        lease_seconds: float,
        *,
        digest_date: dt.date | None = None,
    ) -> int:
        """Extend `owner`'s lease on those of `ids` it still holds (rows of the edition dated
        `digest_date`, if given: see `_held`); returns how many."""
        ids = list(ids)
        if not ids:
            return 0
        # The rows are locked first, by ascending id, skipping those locked by someone else.
        # A plain UPDATE ... WHERE id IN (...) locks them in whatever order its plan reads
        # them (physical order in a bitmap scan), and waits for each. This sender's own
        # mark-sent batch (SentRecorder, another connection) holds the rows it marks until it
        # ends and may want a row the renewal already holds: each waited for the other, and
        # PostgreSQL killed one (DeadlockDetected). If it was the batch, messages the server
        # had accepted lost their `sent` mark and were sent again by another sender. A
        # renewal that never waits for a row lock can never be part of such a cycle. A row
        # it skips is being marked sent (its lease no longer matters), failed, or claimed by
        # another sender because the lease has run out (then it is no longer this sender's):
        # none needs renewing now, and if the lock was for nothing the next renewal, a third
        # of a lease later, catches up. (SQLite has no row locks: FOR UPDATE is left out and
        # BEGIN IMMEDIATE serialises writers.)
        held = _held(self.engine, owner, ids, digest_date)
        mine = (
            sa.select(ledger.c.id)
            .where(held)
            .where(ledger.c.status != SENT)
            .order_by(ledger.c.id)
            .with_for_update(skip_locked=True)
        )
        with self._write() as conn:
            until = self._clock(conn) + dt.timedelta(seconds=lease_seconds)
            res = conn.execute(
                ledger.update()
                .where(held, ledger.c.id.in_(mine.scalar_subquery()))
                .values(lease_until=until)
            )
        return res.rowcount

    def revoked_claims(
        self, owner: str, ids: Iterable[int], *, digest_date: dt.date | None = None
    ) -> set[int]:
        """Those of `ids` that must not be sent now: the subscriber unsubscribed, bounced or
        was suppressed since the claim, or the row is sent or held by another sender (a lease
        taken over). One indexed query, however many rows are asked about; `digest_date`, the
        edition's date, if the rows are all of it (`_held`)."""
        ids = list(ids)
        if not ids:
            return set()
        q = (
            sa.select(ledger.c.id)
            .join(subscribers, subscribers.c.id == ledger.c.subscriber_id)
            .where(_held(self.engine, owner, ids, digest_date))
            .where(ledger.c.status != SENT)
            .where(self._mailable())
        )
        with self.engine.connect() as conn:
            ok = set(conn.execute(q).scalars())
        return set(ids) - ok

    @_retrying
    def release_claims(
        self, owner: str, ids: Iterable[int], *, digest_date: dt.date | None = None
    ) -> int:
        """Give back claimed rows not sent (a stop): any sender may take them at once.
        `digest_date`: the edition's date, if the rows are all of it (`_held`)."""
        ids = list(ids)
        if not ids:
            return 0
        with self._write() as conn:
            res = conn.execute(
                ledger.update()
                .where(_held(self.engine, owner, ids, digest_date))
                .where(ledger.c.status != SENT)
                .values(claimed_by=None, lease_until=None)
            )
        return res.rowcount

    def other_claimants(
        self,
        digest_date: dt.date,
        owner: str,
        retry_failed: bool = False,
        include_final: bool = False,
        *,
        edition: str = DAILY,
    ) -> set[str]:
        """The other senders holding rows still to send for this digest under a live lease."""
        with self.engine.connect() as conn:
            now = self._clock(conn)
            q = (
                sa.select(ledger.c.claimed_by)
                .distinct()
                .join(subscribers, subscribers.c.id == ledger.c.subscriber_id)
                .where(ledger.c.digest_date == digest_date, ledger.c.edition == edition)
                .where(self._wanted(retry_failed, include_final))
                .where(ledger.c.lease_until >= now, ledger.c.claimed_by != owner)
                .where(self._mailable())
            )
            return set(conn.execute(q).scalars())

    def abandoned_claims(self, lease_seconds: float) -> tuple[int, dt.datetime | None]:
        """Unsent rows whose claim ran out more than one lease ago without anyone taking them
        over (a sender died and no other is running): how many, and the oldest lease's end."""
        with self.engine.connect() as conn:
            cutoff = self._clock(conn) - dt.timedelta(seconds=lease_seconds)
            n, oldest = conn.execute(abandoned_query(cutoff)).one()
        return int(n or 0), oldest

    @_retrying
    def expire_claims(self, digest_date: dt.date, owner: str, *, edition: str = DAILY) -> int:
        """End `owner`'s leases on this digest's unsent rows (a sender known to be dead)."""
        with self._write() as conn:
            res = conn.execute(
                ledger.update()
                .where(
                    ledger.c.digest_date == digest_date,
                    ledger.c.edition == edition,
                    ledger.c.claimed_by == owner,
                )
                .where(ledger.c.status != SENT)
                .values(claimed_by=None, lease_until=None)
            )
        return res.rowcount


def abandoned_query(cutoff: dt.datetime) -> sa.Select[Any]:
    """`abandoned_claims`'s question, asked of each edition's `queued` rows through
    ix_ledger_digest_status (digest_date, status, edition): `status`, /healthz and the alerts
    ask it on every call, and asked of the whole ledger it read every row of 90 days of every
    reader (1.5 s at a million readers). The editions come from `publications` (one row each). An
    index of the queued rows alone would answer it too, but would cost every sent mark one
    more index write (about 12% of a mark on SQLite)."""
    editions = sa.select(publications.c.digest_date).distinct().scalar_subquery()
    return sa.select(sa.func.count(), sa.func.min(ledger.c.lease_until)).where(
        ledger.c.digest_date.in_(editions),
        ledger.c.status == QUEUED,
        ledger.c.claimed_by.is_not(None),
        ledger.c.lease_until < cutoff,
    )
