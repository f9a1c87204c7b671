"""The ledger's size per digest, and what compaction leaves of it (issue 25, part 5).

For each backend, a fresh state database with READERS active readers; DIGESTS daily editions are
queued (`queue_pending`, the send's own INSERT ... SELECT), then claimed and marked sent as a send
leaves them (two updates of every row, as a send's claim and sent mark: the sender and lease,
then the status and the server's reply; the Message-ID is not stored: it names the row itself,
signed). Printed: the ledger's bytes per digest, rows plus indexes
(SQLite: page_count delta of the file after a checkpoint; PostgreSQL: pg_total_relation_size of
the ledger's partitions, as written and after VACUUM FULL), per reader, and per year (365
digests); then `publisher compact`'s time for those editions (on PostgreSQL their month's
partition, wholly expired, is folded in one pass and dropped) and what `ledger_totals` keeps.

    python bench/ledger_size.py                      # 10,000 readers, 3 digests, both backends
    python bench/ledger_size.py --readers 100000 --backends postgresql

PostgreSQL runs on a throwaway cluster at production durability (tests/pg.py, on disk).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from publisher.config import default_config  # noqa: E402
from publisher.state import Store  # noqa: E402
from publisher.state.compaction import compact  # noqa: E402
from publisher.state.schema import EmailStatus, ledger, ledger_totals, subscribers  # noqa: E402
from tests.pg import with_database  # noqa: E402

FIRST = dt.date(2024, 5, 15)  # expired by today's clock: compact() folds them


def _readers(store: Store, n: int) -> None:
    now = dt.datetime(2024, 5, 1)
    rows = [
        {
            "email": f"reader{i:07d}@mail{i % 97}.example.org",
            "name": f"Reader {i}",
            "status": "active",
            "source": "csv",
            "created_at": now,
            "updated_at": now,
            "hard_bounces": 0,
        }
        for i in range(n)
    ]
    with store.engine.begin() as conn:
        for start in range(0, n, 10_000):
            conn.execute(subscribers.insert(), rows[start : start + 10_000])


def _send(store: Store, day: dt.date) -> None:
    """The rows a send leaves: queued, then each claimed (its sender and lease written), then
    marked sent with the server's reply: two updates of every row, as a send makes them."""
    store.record_publication(day, f"digests/{day:%Y/%m/%d}.md", "0" * 64)
    store.queue_pending(day)
    this = ledger.c.digest_date == day
    claim = {"claimed_by": "host-01.example.org:12345:9f8e7d6c", "lease_until": ledger.c.updated_at}
    mark = {"status": "sent", "attempts": 1, "last_reply": "250 2.0.0 Ok: queued as 4Xk9Lm2PqRz"}
    for values in (claim, mark):
        with store.engine.begin() as conn:
            conn.execute(ledger.update().where(this).values(**values))
    counts = store.ledger_counts(day)
    store.update_publication(day, email_status=EmailStatus.SENT, sent=counts["sent"])


def _size(store: Store, *, full: bool = False) -> int:
    """The ledger's bytes (rows and indexes); SQLite: the whole file's pages (its other tables
    do not change between two measures)."""
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar()
            size = conn.exec_driver_sql("PRAGMA page_size").scalar()
        return int((pages - free) * size)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM FULL ledger" if full else "ANALYZE ledger")
        # the partitioned ledger's own size is 0: its partitions hold the rows and indexes
        return int(
            conn.exec_driver_sql(
                "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('ledger')"
            ).scalar()
        )


def measure(url: str, readers: int, digests: int, tmp: Path) -> list[str]:
    cfg = with_database(default_config(tmp), url)
    out = []
    with Store(url) as store:
        _readers(store, readers)
        base = _size(store)
        days = [FIRST + dt.timedelta(days=i) for i in range(digests)]
        for day in days:
            _send(store, day)
        written = (_size(store) - base) / digests
        out.append(
            f"  per digest: {written / 1e6:,.2f} MB ({written / readers:,.0f} bytes a reader); "
            f"a year of daily digests: {written * 365 / 1e9:,.2f} GB"
        )
        if store.engine.dialect.name == "postgresql":
            full = (_size(store, full=True) - base) / digests
            out.append(f"  after VACUUM FULL: {full / 1e6:,.2f} MB per digest")
        start = time.perf_counter()
        report = compact(cfg, store)
        seconds = time.perf_counter() - start
        with store.engine.connect() as conn:
            kept = conn.execute(sa.select(sa.func.count()).select_from(ledger_totals)).scalar()
        out.append(
            f"  publisher compact: {report.rows:,} rows of {len(report.folded)} digests folded "
            f"in {seconds:.1f} s ({report.rows / max(seconds, 1e-9):,.0f} rows/s); "
            f"{kept} ledger_totals rows kept"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=10_000)
    parser.add_argument("--digests", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print(
        f"ledger size, {args.readers:,} readers, {args.digests} digests, "
        f"{dt.date.today()}, {os.cpu_count()} cores"
    )
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                print("sqlite:")
                url = f"sqlite:///{tmp}/state/publisher.sqlite3"
                Path(tmp, "state").mkdir()
                print("\n".join(measure(url, args.readers, args.digests, Path(tmp))))
                continue
            from tests.pg import Cluster, find_bindir

            bindir = find_bindir()
            if bindir is None:
                sys.exit("PostgreSQL server binaries not found (apt-get install postgresql)")
            cluster: Any = Cluster(bindir, durable=True)
            cluster.start()
            try:
                print("postgresql (durable, on disk):")
                name = cluster.create_database()
                print("\n".join(measure(cluster.url(name), args.readers, args.digests, Path(tmp))))
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
