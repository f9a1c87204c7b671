"""The ledger's monthly partitions, on PostgreSQL (migration 0013; SQLite has none).

The ledger is partitioned by range of `digest_date`, one partition a calendar month, named
`ledger_yYYYYmMM`. Why: past `[state] keep_ledger_days` an edition's rows are folded into
`ledger_totals` (compaction.py), and a month whose editions are all folded is dropped whole (a
DROP TABLE: no row deleted one by one, nothing left for VACUUM), where deleting a million
readers' month row by row leaves tens of millions of dead rows behind.

- A partition is made when the first edition of its month is queued (`ensure`, from
  `queue_pending`, the only place a send inserts ledger rows), its pages half filled
  (FILLFACTOR: the claims then update most rows in place). A row of a month without one
  cannot be inserted: there is no default partition, which would have to be emptied into each
  new month's partition under a lock on the whole ledger.
- Two senders queueing at once serialise on an advisory lock; the second finds the partition
  (tests/test_compaction.py starts eight at once).
- CREATE and DROP of a partition take a short ACCESS EXCLUSIVE lock on the ledger (once a
  month each). Both wait at most LOCK_TIMEOUT for it, so a long transaction on the ledger
  delays them instead of queueing every send behind them: `ensure` then fails the queueing
  (the send stops with the error, and its next run retries), `drop` leaves the partition for
  the next compaction.
"""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa

LOCK_TIMEOUT = "5s"
# Half of each page left free when the rows are queued: a claim then writes most rows' new
# version beside the old one, with no new index entries (a HOT update: the claim changes no
# indexed column; about 94% of them, the rest no longer fit as the claim adds its sender and
# lease to each row), and the sent mark can go on the same page once the claim's old version
# is pruned. With full pages every claimed row went to another page, with a new entry in all
# three of the partition's indexes: a claim of 1,000 rows took 34 against 20 ms (median of 20
# claims, interleaved, 2026-12-07), and after a whole send the heap is no bigger (4.7 against
# 4.6 MB at 20,000 readers) and the indexes 10% smaller.
FILLFACTOR = 50
_NAME = re.compile(r"ledger_y(\d{4})m(\d{2})")
# pg_advisory_xact_lock's key for "making a ledger partition" (any fixed number, ours alone)
_ADVISORY_KEY = 0x7075626C  # "publ"


def month(day: dt.date) -> tuple[dt.date, dt.date]:
    """The first day of `day`'s month and of the next one: a partition's bounds."""
    start = day.replace(day=1)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end


def name(day: dt.date) -> str:
    """The partition holding `day`'s rows."""
    return f"ledger_y{day.year:04d}m{day.month:02d}"


def ensure(conn: sa.Connection, day: dt.date) -> bool:
    """Make the partition of `day`'s month if there is none (PostgreSQL; a no-op elsewhere).
    Run in a transaction of its own: the lock it takes lasts until that ends. True if made."""
    if conn.dialect.name != "postgresql":
        return False
    table = name(day)
    if _exists(conn, table):
        return False
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
    if _exists(conn, table):  # another sender made it while this one waited
        return False
    start, end = month(day)
    conn.exec_driver_sql(
        f"CREATE TABLE {table} PARTITION OF ledger FOR VALUES FROM ('{start}') TO ('{end}') "
        f"WITH (fillfactor = {FILLFACTOR})"
    )
    return True


def expired(conn: sa.Connection, before: dt.date) -> list[tuple[str, dt.date, dt.date]]:
    """The ledger's partitions that hold only dates before `before`: (name, start, end), oldest
    first. [] on SQLite."""
    if conn.dialect.name != "postgresql":
        return []
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'ledger'::regclass"
        )
    ).scalars()
    out = []
    for table in names:
        m = _NAME.fullmatch(table)
        if m is None:
            continue  # not one of ours: left alone
        start, end = month(dt.date(int(m[1]), int(m[2]), 1))
        if end <= before:
            out.append((table, start, end))
    return sorted(out, key=lambda p: p[1])


def drop(conn: sa.Connection, table: str) -> None:
    """Detach and drop one partition, in the caller's transaction (whose rows it has folded)."""
    if _NAME.fullmatch(table) is None:
        raise ValueError(f"not a ledger partition: {table}")
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    conn.exec_driver_sql(f"ALTER TABLE ledger DETACH PARTITION {table}")
    conn.exec_driver_sql(f"DROP TABLE {table}")


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's `include_name` hook: the partitions (and their indexes) are the ledger's own
    storage, made at run time, not tables of the schema; autogenerate and the schema tests
    compare without them."""
    return not (type_ == "table" and name is not None and _NAME.fullmatch(name))


def _exists(conn: sa.Connection, table: str) -> bool:
    # A query of pg_class, read with this statement's snapshot: to_regclass (and CREATE TABLE
    # IF NOT EXISTS) look the name up in the backend's catalog cache, which still says "no
    # such table" after another sender made it while this one waited for the advisory lock
    # (taking that lock does not refresh the cache): its CREATE then failed (DuplicateTable).
    return conn.execute(
        sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = :t"
            " AND relnamespace = current_schema()::regnamespace)"
        ),
        {"t": table},
    ).scalar()
