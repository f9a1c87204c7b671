"""The PostgreSQL claim statement against its earlier forms, on a ledger of several months (one
partition each), interleaved in one run.

    python bench/claims.py [--readers 100000] [--months 4] [--rounds 60] [--show]

1. starts a throwaway PostgreSQL cluster on disk with production durability (tests/pg.py, as
   bench/deliver.py), imports --readers readers and queues --months editions a month apart,
   so the ledger has that many month partitions of --readers rows each;
2. records the statement one real `Store.claim` of 1,000 rows sends (the tree's: the chosen
   rows a MATERIALIZED CTE, the UPDATE naming the edition's date), and makes the earlier forms
   from its text: without the outer `AND ledger.digest_date = ...`, and as before 2026-12-06
   (`WHERE ledger.id IN (the same SELECT)`, no outer date);
3. runs each --rounds times, the order rotated every round, each in a transaction rolled back
   (every run claims the same 1,000 rows, checked), and prints the median time of each and
   its ratio to the tree's. --show prints the statements;
4. claims 1,000 rows and times what a sender asks of them while it sends: the revocation
   check (`revoked_claims`, every quarter second) and the lease renewal (`renew_claims`),
   given the edition's date as the tree's senders do, and by id alone as before 2026-12-07.

What it shows: without the date, the UPDATE looks each chosen id up in every month's partition
(publisher/state/claims.py, `_take`); so do the check and the renewal (`_held`). Needs
PostgreSQL's server binaries (apt-get install postgresql).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import deliver as bench_deliver  # noqa: E402  (the cluster and the project)

from publisher.state import Store  # noqa: E402
from tests.pg import config_for  # noqa: E402

OUTER_DATE = " AND ledger.digest_date = %(digest_date_2)s::DATE"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", type=int, default=100_000)
    ap.add_argument("--months", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--show", action="store_true", help="print the statements")
    args = ap.parse_args()
    os.environ.setdefault("PUBLISHER_SECRET", "Ufd2xj9Qe7mWcL4tZr0NbK8sHaY3vGp1oE6iTqJ5nRw")
    cluster = bench_deliver.start_postgresql()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(cluster, Path(tmp), args)
    finally:
        cluster.stop()


def run(cluster: object, tmp: Path, args: argparse.Namespace) -> None:
    url = cluster.url(cluster.create_database())  # type: ignore[attr-defined]
    cfg = bench_deliver.make_project(tmp, 2525, args.readers, 4, database=url)
    bench_deliver.import_subscribers(cfg)
    store = Store.open(config_for(tmp, url))
    day = dt.date(2026, 12, 1)
    for back in range(args.months - 1, -1, -1):
        store.queue_pending(day - dt.timedelta(days=30 * back))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    seen: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "UPDATE ledger" in statement and "RETURNING" in statement:
            seen.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", keep)
    claimed = store.claim(day, "bench", 1000, lease_seconds=60)
    sa.event.remove(store.engine, "before_cursor_execute", keep)
    store.release_claims("bench", [e.id for e in claimed])
    statement, parameters = seen[0]
    update = statement[statement.index("UPDATE ledger") :]
    chosen = statement[statement.index("(SELECT") : statement.index(")\n UPDATE") + 1]
    texts = {
        "tree": statement,
        "no outer date": statement.replace(OUTER_DATE, ""),
        "IN, no date": update.replace(
            "FROM chosen, subscribers WHERE ledger.id = chosen.id" + OUTER_DATE,
            f"FROM subscribers WHERE ledger.id IN {chosen}",
        ),
    }
    if len(set(texts.values())) != len(texts) or "IN (SELECT" not in texts["IN, no date"]:
        sys.exit("the claim statement is not the expected shape (an older tree?)")
    if args.show:
        for name, text in texts.items():
            print(f"-- {name}\n{text}\n")
    times: dict[str, list[float]] = {name: [] for name in texts}
    raw = store.engine.raw_connection()
    cur = raw.cursor()
    for n in range(args.rounds):
        names = list(texts)[n % len(texts) :] + list(texts)[: n % len(texts)]
        for name in names:
            t0 = time.perf_counter()
            cur.execute(texts[name], parameters)
            rows = cur.fetchall()
            times[name].append(time.perf_counter() - t0)
            raw.rollback()
            assert len(rows) == 1000, len(rows)
    raw.close()
    held = [e.id for e in store.claim(day, "bench", 1000, lease_seconds=60)]
    checks = held_statements(store, day, held, args.rounds)
    store.release_claims("bench", held, digest_date=day)
    store.close()
    print(
        f"claims of 1,000 rows, {args.readers:,} readers x {args.months} months "
        f"({args.months} partitions), {args.rounds} rounds, {os.cpu_count()} cores"
    )
    report(times, "tree")
    print("a sender's check and renewal of the 1,000 rows it holds (every 0.25 s / 1/3 lease):")
    report(checks, "check, date")


def held_statements(
    store: Store, day: dt.date, held: list[int], rounds: int
) -> dict[str, list[float]]:
    """`revoked_claims` and `renew_claims` of the rows a sender holds, given the edition's date
    (the tree's senders) and by id alone (before 2026-12-07), interleaved."""
    runs = {
        "check, date": lambda: store.revoked_claims("bench", held, digest_date=day),
        "check, by id": lambda: store.revoked_claims("bench", held),
        "renew, date": lambda: store.renew_claims("bench", held, 60, digest_date=day),
        "renew, by id": lambda: store.renew_claims("bench", held, 60),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for n in range(rounds):
        names = list(runs)[n % len(runs) :] + list(runs)[: n % len(runs)]
        for name in names:
            t0 = time.perf_counter()
            got = runs[name]()
            times[name].append(time.perf_counter() - t0)
            assert got in (set(), len(held)), (name, got)
    return times


def report(times: dict[str, list[float]], reference: str) -> None:
    ref = statistics.median(times[reference])
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"  {name:14} {median * 1000:7.2f} ms (median), {median / ref:.2f} x {reference!r}")


if __name__ == "__main__":
    main()
