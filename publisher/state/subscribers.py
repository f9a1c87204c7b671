"""Subscribers, the suppression list, and the CSV sync's half in the database.

The rule that matters: an address that is unsubscribed, bounced or on the suppression list is
never mailed again; only `resubscribe` (fresh consent, e.g. a confirmed double opt-in) lifts it.

A reader who deletes their data (`delete_data`, the preferences page) leaves no address behind:
the suppression list keeps only `suppression_hash(address)` (`sha256:` and 64 hex digits in the
`email` column), which every suppression check also looks for, so a CSV sync or an operator's
add cannot mail the address again, and nobody reading the table sees it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from . import lifecycle
from .schema import (
    ACTIVE,
    CADENCES,
    CHOICE_SOURCES,
    SOURCES,
    STATUSES,
    UNSUBSCRIBED,
    UnknownSubscriber,
    _key,
    _now,
    bounce_events,
    bounce_messages,
    ledger,
    meta,
    normalize_email,
    normalize_name,
    subscribers,
    suppressions,
    upsert,
)

DELETED = "deleted by the reader"
# meta: the run of the last CSV sync (one that removes what the file lacks).
_LAST_SYNC = "csv_last_sync"
STAGE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class CsvSyncResult:
    """What one CSV import did: valid rows read, addresses added, `removed` ones reactivated,
    duplicate rows merged, subscribers removed."""

    rows: int
    added: int
    reactivated: int
    duplicates: int
    removed: int


def _stage(conn: sa.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Stream (email, name[, choice]) rows into `csv_stage`, in bulk."""

    def records() -> Iterator[tuple[Any, ...]]:
        for seq, (email, name, *rest) in enumerate(rows):
            values = rest[0].values() if rest and rest[0] is not None else {}
            yield (
                seq,
                email,
                name,
                values.get("cadence"),
                values.get("topics"),
                values.get("max_papers"),
            )

    columns = ", ".join(lifecycle.CSV_STAGE_COLUMNS)
    raw = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with raw.cursor() as cur, cur.copy(f"COPY csv_stage ({columns}) FROM STDIN") as copy:  # type: ignore[union-attr]
            for record in records():
                copy.write_row(record)
        return
    sql = f"INSERT INTO csv_stage ({columns}) VALUES (?, ?, ?, ?, ?, ?)"
    batch: list[tuple[Any, ...]] = []
    for record in records():
        batch.append(record)
        if len(batch) >= STAGE_BATCH:
            conn.exec_driver_sql(sql, batch)
            batch = []
    if batch:
        conn.exec_driver_sql(sql, batch)


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
    # Reader choice (publisher/topics.py): cadence, topics (empty: all), max_papers (0: all),
    # and who set it last (None: nobody, the defaults).
    cadence: str = "daily"
    topics: frozenset[str] = frozenset()
    max_papers: int = 0
    choice_source: str | None = None
    # When the reader confirmed the address on the web (None: never).
    confirmed_at: dt.datetime | None = None


def split_topics(cell: str) -> frozenset[str]:
    """The stored `a;b` form of a set of topics, back to a set (empty: all papers)."""
    return frozenset(n for n in cell.split(";") if n)


def join_topics(names: Iterable[str]) -> str:
    """A set of topics as stored: sorted names joined by `;` (one spelling per set)."""
    return ";".join(sorted(set(names)))


@dataclass(frozen=True, slots=True)
class ChoiceUpdate:
    """A change of reader choice; a field left None is kept as stored."""

    cadence: str | None = None
    topics: frozenset[str] | None = None
    max_papers: int | None = None

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cadence is not None:
            if self.cadence not in CADENCES:
                raise ValueError(f"unknown cadence {self.cadence!r}")
            out["cadence"] = self.cadence
        if self.topics is not None:
            out["topics"] = join_topics(self.topics)
        if self.max_papers is not None:
            if self.max_papers < 0:
                raise ValueError("max_papers must not be negative")
            out["max_papers"] = self.max_papers
        return out


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
        cadence=row.cadence,
        topics=split_topics(row.topics),
        max_papers=row.max_papers,
        choice_source=row.choice_source,
        confirmed_at=row.confirmed_at,
    )


class SubscribersMixin:
    engine: sa.Engine

    # -- subscribers -------------------------------------------------------------------------

    def add_subscriber(
        self,
        email: str,
        name: str = "",
        status: str = ACTIVE,
        source: str = "cli",
        *,
        rename: bool = True,
        action: str = lifecycle.Action.ADD,
    ) -> tuple[Subscriber, bool]:
        """Add an address; return (subscriber, created).

        An existing subscriber keeps its status (so this never resubscribes anyone); a non-empty
        `name` replaces the stored one unless `rename` is false. Raises InvalidAddress for a bad
        address. Safe against a concurrent add of the same address (INSERT ... ON CONFLICT).
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        key = normalize_email(email)
        with self._write() as conn:
            row, created = lifecycle.add(
                conn, key, normalize_name(name), status, source, rename=rename, action=action
            )
        return _subscriber(row), created

    def get_by_id(self, subscriber_id: int) -> Subscriber | None:
        """The subscriber with this id (what a link's token names), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(subscribers).where(subscribers.c.id == subscriber_id)
            ).first()
        return _subscriber(row) if row else None

    def get(self, email: str) -> Subscriber | None:
        """The subscriber with this address, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(subscribers).where(subscribers.c.email == _key(email))
            ).first()
        return _subscriber(row) if row else None

    def set_choice(self, email: str, choice: ChoiceUpdate, source: str) -> Subscriber:
        """Change a reader's cadence, topics or cap (the fields `choice` sets), recording
        `source` (web, csv, cli) as who made it. Raises UnknownSubscriber."""
        if source not in CHOICE_SOURCES:
            raise ValueError(f"unknown choice source {source!r}")
        key = _key(email)
        values = choice.values()
        with self._write() as conn:
            row = lifecycle.choose(conn, key, values, source)
            if row is None:
                raise UnknownSubscriber(f"no subscriber {key}")
        return _subscriber(row)

    def unsubscribe(
        self, email: str, reason: str = UNSUBSCRIBED, action: str = lifecycle.Action.UNSUBSCRIBE
    ) -> bool:
        """Unsubscribe and suppress an address for good; True if a subscriber was changed.

        Idempotent. An address with no subscriber row is still suppressed (so a later CSV row
        cannot mail it).
        """
        with self._write() as conn:
            return lifecycle.unsubscribe(conn, _key(email), reason, action)

    def resubscribe(
        self,
        email: str,
        name: str = "",
        source: str = "web",
        action: str = lifecycle.Action.RESUBSCRIBE,
    ) -> Subscriber:
        """Fresh consent (a confirmed opt-in, an operator's explicit add): lift any suppression
        and make the address active, creating it if needed (a non-empty `name` replaces the
        stored one). One transaction, safe against a concurrent add or unsubscribe."""
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}")
        key = normalize_email(email)
        with self._write() as conn:
            row = lifecycle.resubscribe(conn, key, normalize_name(name), source, action)
        return _subscriber(row)

    def discard_pending(self, subscriber_id: int) -> bool:
        """Delete a subscriber row that is still `pending` (a signup whose confirmation mail
        could not be sent: nobody can confirm it). True if it was deleted."""
        with self._write() as conn:
            return lifecycle.discard_pending(conn, subscriber_id)

    def rename(self, email: str, name: str) -> Subscriber | None:
        """Set a subscriber's name (normalised; empty clears it); None if there is no row."""
        key = _key(email)
        with self._write() as conn:
            conn.execute(
                subscribers.update()
                .where(subscribers.c.email == key)
                .values(name=normalize_name(name), updated_at=_now())
            )
            row = conn.execute(sa.select(subscribers).where(subscribers.c.email == key)).first()
        return _subscriber(row) if row else None

    def delete_data(self, email: str) -> bool:
        """The reader's right to erasure: delete the subscriber row, its sends, its bounce events
        (and the kept messages no other event needs) and its suppression, and keep only
        `suppression_hash` on the suppression list, so the address is never mailed again unless
        its owner signs up anew. One transaction; idempotent. True if a row was deleted."""
        key = _key(email)
        with self._write() as conn:
            found = conn.execute(
                sa.select(subscribers.c.id, subscribers.c.status)
                .where(subscribers.c.email == key)
                .with_for_update()
            ).first()
            sub_id, status = (found.id, found.status) if found else (None, None)
            by_reader = bounce_events.c.email == key
            if sub_id is not None:
                by_reader = sa.or_(by_reader, bounce_events.c.subscriber_id == sub_id)
            messages = {
                m
                for (m,) in conn.execute(sa.select(bounce_events.c.message_id).where(by_reader))
                if m is not None
            }
            conn.execute(bounce_events.delete().where(by_reader))
            if messages:
                still_used = sa.select(bounce_events.c.id).where(
                    bounce_events.c.message_id == bounce_messages.c.id
                )
                conn.execute(
                    bounce_messages.delete().where(
                        bounce_messages.c.id.in_(messages), ~sa.exists(still_used)
                    )
                )
            if sub_id is not None:
                conn.execute(ledger.delete().where(ledger.c.subscriber_id == sub_id))
                conn.execute(subscribers.delete().where(subscribers.c.id == sub_id))
            lifecycle.erase(conn, key, sub_id, status, DELETED)
        return sub_id is not None

    def record_hard_bounce(self, email: str, reply: str, limit: int) -> bool:
        """Count a hard bounce (5xx on RCPT); at `limit` bounces the address is bounced and
        suppressed. Returns True when this bounce suppressed it."""
        with self._write() as conn:
            row = lifecycle.lock(conn, _key(email))
            if row is None:
                return False
            action = lifecycle.hard_bounce(conn, row, f"bounced: {reply}", limit, _now())
        return action.startswith("suppressed")

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
        with self._write() as conn:
            cur = conn.execute(sa.select(sa.func.max(subscribers.c.csv_run))).scalar() or 0
            stored = conn.execute(sa.select(meta.c.value).where(meta.c.key == "csv_run")).scalar()
            run = max(cur, int(stored or 0)) + 1
            if stored is None:
                conn.execute(meta.insert().values(key="csv_run", value=str(run)))
            else:
                conn.execute(meta.update().where(meta.c.key == "csv_run").values(value=str(run)))
        return run

    def sync_csv(
        self,
        run: int,
        rows: Iterable[tuple[str, str] | tuple[str, str, ChoiceUpdate | None]],
        source: str = "csv",
        *,
        remove: bool = False,
    ) -> CsvSyncResult:
        """Apply CSV import `run`: normalised (email, name[, choice]) rows, streamed.

        Set-based: the rows go in bulk into a temporary table of this session (PostgreSQL:
        COPY; SQLite: executemany), duplicates merge there (the first row's choice, the first
        non-empty name), and lifecycle.csv_apply writes only what differs from the stored
        subscribers, in one transaction: new addresses, changed names, statuses and reader
        choices, and with `remove` (a sync of the configured list) the CSV subscribers the file
        no longer has become `removed`. A sync also records `run` as the last one
        (`csv_run_intact`). Memory does not grow with the file."""
        with self.engine.connect() as conn:
            try:
                with conn.begin():
                    lifecycle.csv_staging_create(conn)
                with conn.begin():
                    _stage(conn, rows)
                with conn.begin():
                    total, distinct = lifecycle.csv_dedupe(conn)
                conn.execution_options(write=True)
                with conn.begin():
                    added, reactivated, removed = lifecycle.csv_apply(conn, run, source, remove)
                    if remove:
                        upsert(
                            conn,
                            meta,
                            {"key": _LAST_SYNC, "value": str(run)},
                            ["key"],
                            update={"value": str(run)},
                        )
            finally:
                try:
                    if conn.in_transaction():
                        conn.rollback()
                    with conn.begin():
                        lifecycle.csv_staging_drop(conn)
                except sa.exc.SQLAlchemyError:
                    # Not back into the pool with the tables (and never masking the error
                    # that brought us here).
                    conn.invalidate()
        return CsvSyncResult(total, added, reactivated, total - distinct, removed)

    def upsert_csv_batch(
        self,
        run: int,
        rows: Iterable[tuple[str, str] | tuple[str, str, ChoiceUpdate | None]],
        source: str = "csv",
    ) -> tuple[int, int, int]:
        """`sync_csv` without removals, the names normalised: (added, reactivated,
        duplicates)."""
        named = [(email, normalize_name(name), *rest) for email, name, *rest in rows]
        result = self.sync_csv(run, named, source)  # type: ignore[arg-type]
        return result.added, result.reactivated, result.duplicates

    # -- suppressions ------------------------------------------------------------------------

    def suppress(self, email: str, reason: str) -> None:
        """Put an address on the suppression list (idempotent); it is never mailed again."""
        with self._write() as conn:
            lifecycle.suppress_address(conn, _key(email), reason)

    def is_suppressed(self, email: str) -> bool:
        with self.engine.connect() as conn:
            return lifecycle.is_suppressed(conn, _key(email))

    def stored_data(self, email: str) -> dict[str, Any]:
        """Everything the database holds about one address: subscriber row, suppression, sends
        (what `/preferences/TOKEN/data.json` shows the reader)."""
        key = normalize_email(email)
        with self.engine.connect() as conn:
            sub = conn.execute(sa.select(subscribers).where(subscribers.c.email == key)).first()
            sup = conn.execute(sa.select(suppressions).where(suppressions.c.email == key)).first()
            rows = conn.execute(
                sa.select(
                    ledger.c.edition,
                    ledger.c.digest_date,
                    ledger.c.status,
                    ledger.c.attempts,
                    ledger.c.last_reply,
                    ledger.c.updated_at,
                )
                .join(subscribers, subscribers.c.id == ledger.c.subscriber_id)
                .where(subscribers.c.email == key)
                .order_by(ledger.c.digest_date, ledger.c.edition)
            ).all()
        subscriber = None
        if sub is not None:
            subscriber = {k: v for k, v in sub._mapping.items() if k not in ("id", "csv_run")}
        return {
            "email": key,
            "subscriber": subscriber,
            "suppression": dict(sup._mapping) if sup else None,
            "sends": [dict(r._mapping) for r in rows],
        }

    def csv_run_intact(self, run: int) -> bool:
        """Whether CSV sync `run` is still the last sync, so what it left is as it left it
        (only a sync removes; another file's sync since would have). Lets a sync skip an
        unchanged file without trusting a state something else may have changed."""
        with self.engine.connect() as conn:
            last = conn.execute(sa.select(meta.c.value).where(meta.c.key == _LAST_SYNC)).scalar()
        return last == str(run)
