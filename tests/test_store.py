"""The state database, on a real SQLite file and on a real PostgreSQL (conftest's `db_url`)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from publisher.config import default_config
from publisher.errors import PublisherError
from publisher.state import InvalidAddress, Store
from publisher.state.limits import canonical_mailbox
from publisher.state.migrate import current, head

from .pg import config_for
from .statehelpers import set_status, suppression_reason

DAY = dt.date(2024, 5, 15)


TABLES = {"subscribers", "suppressions", "ledger", "publications", "meta"}


@pytest.fixture
def store(tmp_path: Path, db_url: str) -> Store:
    s = Store.open(config_for(tmp_path, db_url))
    yield s
    s.close()


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            return set(sa.inspect(con).get_table_names())
    finally:
        engine.dispose()


def test_an_empty_database_gets_its_tables_on_open(tmp_path: Path, empty_db_url: str) -> None:
    if empty_db_url.startswith("sqlite"):
        (tmp_path / "state").mkdir()
    assert table_names(empty_db_url) == set()
    with Store.open(config_for(tmp_path, empty_db_url)):
        pass
    assert table_names(empty_db_url) >= TABLES


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_its_own_copy_of_the_migrated_template(
    tmp_path: Path, db_url: str, turn: str
) -> None:
    """conftest's `db_url`: at the head revision before the library opens it, with no rows, and
    a copy: what one test writes, the next does not see."""
    assert table_names(db_url) >= TABLES
    engine = sa.create_engine(db_url)
    try:
        assert current(engine) == head()
    finally:
        engine.dispose()
    with Store.open(config_for(tmp_path, db_url)) as store:
        assert sum(store.counts_by_status().values()) == 0
        store.add_subscriber(f"{turn}@example.com", "", status="active", source="csv")


def test_open_creates_tables_in_wal_mode(tmp_path: Path) -> None:
    Store.open(default_config(tmp_path)).close()
    db = tmp_path / "state" / "publisher.sqlite3"
    assert db.exists()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"subscribers", "suppressions", "ledger", "publications"} <= tables


def test_addresses_are_normalised_and_unique(store: Store) -> None:
    sub, created = store.add_subscriber("  Ada@Example.COM ", "Ada", source="csv")
    assert created and sub.email == "ada@example.com" and sub.status == "active"
    again, created = store.add_subscriber("ada@example.com", "")
    assert not created and again.id == sub.id and again.name == "Ada"
    assert store.get("ADA@example.com") == sub
    with pytest.raises(InvalidAddress):
        store.add_subscriber("not an address")


def test_unsubscribed_is_never_queued_and_add_does_not_resubscribe(store: Store) -> None:
    store.add_subscriber("a@example.com")
    store.add_subscriber("b@example.com")
    assert store.unsubscribe("b@example.com")
    sub, created = store.add_subscriber("b@example.com", "B")
    assert not created and sub.status == "unsubscribed"
    with pytest.raises(PublisherError, match="suppression"):
        set_status(store, "b@example.com", "active")
    # Suppressed before ever being a subscriber: added as unsubscribed.
    store.suppress("c@example.com", "complaint")
    assert store.add_subscriber("c@example.com")[0].status == "unsubscribed"
    assert store.queue_pending(DAY) == 1
    assert [e.email for e in store.pending_for(DAY)] == ["a@example.com"]
    assert store.counts_by_status()["unsubscribed"] == 2
    # Fresh consent lifts it.
    assert store.resubscribe("b@example.com").status == "active"
    assert not store.is_suppressed("b@example.com")


def mark_sent(store: Store, ids: list[int], reply: str) -> None:
    """Sent marks through the recorder the sender uses."""
    recorder = store.sent_recorder()
    try:
        recorder.record((i, reply, 1) for i in ids)
    finally:
        recorder.close()


def test_ledger_lifecycle(store: Store) -> None:
    for i in range(5):
        store.add_subscriber(f"u{i}@example.com", f"U{i}")
    assert store.queue_pending(DAY) == 5
    assert store.queue_pending(DAY) == 0  # idempotent
    entries = list(store.pending_for(DAY, batch=2))
    assert [e.email for e in entries] == [f"u{i}@example.com" for i in range(5)]
    assert entries[0].name == "U0"
    mark_sent(store, [entries[0].id, entries[1].id], "250 ok")
    store.mark_failed(entries[2].id, "451 later", final=False, attempts=3)
    store.mark_failed(entries[3].id, "550 no", final=True)
    assert store.ledger_counts(DAY) == {"queued": 1, "sent": 2, "failed": 2}
    assert [e.email for e in store.pending_for(DAY)] == ["u4@example.com"]
    retry = [e.email for e in store.pending_for(DAY, retry_failed=True)]
    assert retry == ["u2@example.com", "u4@example.com"]
    row = store.ledger_entry(DAY, "u2@example.com")
    assert row["attempts"] == 3 and row["last_reply"] == "451 later"
    # u2 (a temporary failure) and u4 (queued) still lack it; u3's final 5xx is settled.
    assert store.unsent_active(DAY) == 2
    # Unsubscribing between runs takes a queued address out of the send.
    store.unsubscribe("u4@example.com")
    assert list(store.pending_for(DAY)) == []


def test_hard_bounces_suppress_at_the_limit(store: Store) -> None:
    store.add_subscriber("x@example.com")
    assert not store.record_hard_bounce("x@example.com", "550 no such user", limit=2)
    assert store.get("x@example.com").status == "active"
    assert store.record_hard_bounce("x@example.com", "550 no such user", limit=2)
    assert store.get("x@example.com").status == "bounced"
    assert suppression_reason(store, "x@example.com").startswith("bounced: 550")


def test_iter_subscribers_streams_one_status_in_batches(store: Store) -> None:
    for i in range(7):
        store.add_subscriber(f"s{i}@example.com")
    set_status(store, "s3@example.com", "pending")
    got = [s.email for s in store.iter_subscribers("active", batch=3)]
    assert len(got) == 6 and "s3@example.com" not in got


def test_publications(store: Store) -> None:
    assert store.get_publication(DAY) is None
    store.record_publication(DAY, "digests/2024/05/15.md", "abc")
    store.update_publication(DAY, email_status="sent", sent=3)
    pub = store.get_publication(DAY)
    assert pub.email_status == "sent" and pub.sent == 3 and pub.content_hash == "abc"


def test_claims_go_on_after_the_last_one_and_take_rows_given_back_at_the_end(
    store: Store,
) -> None:
    for i in range(6):
        store.add_subscriber(f"c{i}@example.com", f"C{i}")
    store.queue_pending(DAY)

    def claim(owner: str, limit: int) -> list[str]:
        return [e.email for e in store.claim(DAY, owner, limit, lease_seconds=60)]

    first = store.claim(DAY, "a", 2, lease_seconds=60)
    assert [e.email for e in first] == ["c0@example.com", "c1@example.com"]
    assert first[0].name == "C0"
    mark_sent(store, [e.id for e in first], "250 ok")
    second = store.claim(DAY, "a", 2, lease_seconds=60)
    store.release_claims("a", [second[0].id])  # c2 given back, as by a sender that stopped
    mark_sent(store, [second[1].id], "250 ok")
    # Sender a goes on after c3; c2 waits until nothing is left after it.
    assert claim("a", 2) == ["c4@example.com", "c5@example.com"]
    assert claim("a", 2) == ["c2@example.com"]
    assert claim("a", 2) == []
    assert claim("b", 2) == []  # all held by a


def test_a_sender_never_claims_again_the_rows_it_holds_once_their_lease_ran_out(
    store: Store,
) -> None:
    """A lease runs out under a sender still sending (its clock jumped, a VM paused): another
    sender may take the rows over (each checks its claim before the final "."), but the same
    send must not claim them a second time, or two of its own connections mail one reader (the
    soak test's clock jump met it: a reader mailed twice)."""
    for i in range(3):
        store.add_subscriber(f"l{i}@example.com")
    store.queue_pending(DAY)
    held = store.claim(DAY, "a", 3, lease_seconds=60)
    assert len(held) == 3
    with store.engine.begin() as conn:  # the lease ran out while `a` was still sending
        conn.execute(sa.text("UPDATE ledger SET lease_until = :t"), {"t": dt.datetime(2000, 1, 1)})
    assert store.claim(DAY, "a", 3, lease_seconds=60) == []
    assert [e.id for e in store.claim(DAY, "b", 3, lease_seconds=60)] == [e.id for e in held]


def _queued_in_two_months(store: Store, prefix: str, n: int) -> dt.date:
    """n readers queued for DAY (May) and for a day of April: two month partitions with rows.
    Returns the April day."""
    for i in range(n):
        store.add_subscriber(f"{prefix}{i}@example.com")
    earlier = DAY - dt.timedelta(days=40)
    store.queue_pending(earlier)
    store.queue_pending(DAY)
    return earlier


def test_the_postgresql_recorder_of_one_edition_marks_in_its_month_s_partition_alone(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL: a recorder made for one edition's date looks each marked row up in that
    month's partition only (the others pruned as the plan starts), where one without the date
    probes every month's index; and it marks the rows all the same."""
    with Store.open(config_for(tmp_path, pg_url)) as store:
        earlier = _queued_in_two_months(store, "m", 2)
        ids = [e.id for e in store.pending_for(DAY)]
        plans = {}
        for date in (None, DAY):
            recorder = store.sent_recorder(date)
            try:
                for name, args in (
                    ("publisher_mark_sent", "'{1,2}', '{a,b}', '{1,1}', '2024-05-15 00:00:00'"),
                    ("publisher_mark_one", "'1', 'a', '1', '2024-05-15 00:00:00'"),
                ):
                    if date is not None:
                        args += ", '2024-05-15'"
                    (plan,) = recorder._pg.execute(
                        f"EXPLAIN (FORMAT JSON) EXECUTE {name}({args})"
                    ).fetchone()[0]
                    plans[name, date] = plan["Plan"]
                if date is not None:
                    recorder.record([(ids[0], "250 ok", 1)])
                    recorder.record([(i, "250 ok", 1) for i in ids[1:]])
            finally:
                recorder.close()

        def scanned(plan: dict) -> set[str]:
            found = {plan["Relation Name"]} if "Index" in plan["Node Type"] else set()
            for child in plan.get("Plans", []):
                found |= scanned(child)
            return found

        for name in ("publisher_mark_sent", "publisher_mark_one"):
            assert scanned(plans[name, None]) == {"ledger_y2024m04", "ledger_y2024m05"}
            assert scanned(plans[name, DAY]) == {"ledger_y2024m05"}
        assert {store.ledger_entry(DAY, f"m{i}@example.com")["status"] for i in range(2)} == {
            "sent"
        }
        assert {store.ledger_entry(earlier, f"m{i}@example.com")["status"] for i in range(2)} == {
            "queued"
        }


def test_a_postgresql_claim_updates_its_edition_s_month_partition_alone(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL: the claim's UPDATE looks its rows up in the partition of the edition's month
    only, not in every month's (the ledger is partitioned by month), and claims the same rows."""
    with Store.open(config_for(tmp_path, pg_url)) as store:
        _queued_in_two_months(store, "p", 3)
        taken: list[tuple[str, dict]] = []

        def keep(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
            if "UPDATE ledger" in statement and "RETURNING" in statement:
                taken.append((statement, parameters))

        sa.event.listen(store.engine, "before_cursor_execute", keep)
        try:
            claimed = store.claim(DAY, "s", 10, lease_seconds=60)
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", keep)
        assert sorted(e.email for e in claimed) == [f"p{i}@example.com" for i in range(3)]
        assert {e.digest_date for e in claimed} == {DAY}
        assert len(taken) == 1
        statement, parameters = taken[0]
        with store.engine.connect() as conn:
            (plan,) = conn.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) " + statement, parameters
            ).scalar_one()

        def relations(node: dict) -> set[str]:
            found = {node["Relation Name"]} if "Relation Name" in node else set()
            for child in node.get("Plans", []):
                found |= relations(child)
            return found

        partitions = {r for r in relations(plan["Plan"]) if r.startswith("ledger_")}
        assert partitions == {"ledger_y2024m05"}


def _check_renew_release(store: Store, held: list[int]) -> list[tuple[str, Any]]:
    """A sender's revocation check, lease renewal and release of `held` (all its rows, of
    DAY), given the edition's date, as Claims makes them; the three ledger statements run."""
    seen: list[tuple[str, Any]] = []

    def keep(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", keep)
    try:
        assert store.revoked_claims("s", held, digest_date=DAY) == set()
        assert store.renew_claims("s", held, 60, digest_date=DAY) == len(held)
        assert store.release_claims("s", held, digest_date=DAY) == len(held)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", keep)
    asked = [(st, params) for st, params in seen if "FROM ledger" in st or "UPDATE ledger" in st]
    assert len(asked) == 3, asked
    return asked


def test_postgresql_checks_renewals_and_releases_of_one_edition_read_its_month_alone(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL: a sender's revocation check, lease renewal and release, given its edition's
    date, look their rows up in that month's partition only (by id alone, each id was looked
    up in every month's primary key), and still find the rows the sender holds."""
    with Store.open(config_for(tmp_path, pg_url)) as store:
        _queued_in_two_months(store, "c", 3)
        held = [e.id for e in store.claim(DAY, "s", 10, lease_seconds=60)]
        assert len(held) == 3
        asked = _check_renew_release(store, held)
        assert store.other_claimants(DAY, "another sender") == set()  # given back

        def relations(node: dict) -> set[str]:
            found = {node["Relation Name"]} if "Relation Name" in node else set()
            for child in node.get("Plans", []):
                found |= relations(child)
            return found

        with store.engine.connect() as conn:
            for statement, parameters in asked:
                (plan,) = conn.exec_driver_sql(
                    "EXPLAIN (FORMAT JSON) " + statement, parameters
                ).scalar_one()
                months = {r for r in relations(plan["Plan"]) if r.startswith("ledger_")}
                assert months == {"ledger_y2024m05"}, statement


def test_an_editions_counts_by_status_are_read_from_the_index_alone(db_url: str) -> None:
    """`publisher status`, the send's end and /metrics count an edition's rows by status
    (`ledger_counts`, all statuses or a few). Each count is answered by ix_ledger_digest_status
    alone, without reading the rows: the index holds the edition the counts name. Without it,
    counting a million-reader edition read its whole month's partition on PostgreSQL (0.5 s of
    `publisher status`'s 1.05 s). (Sequential and bitmap scans are turned off on PostgreSQL so
    the plan shows what the index can answer, whatever the table's size here.)"""
    with Store(db_url) as store:
        for i in range(50):
            store.add_subscriber(f"c{i}@example.com")
        store.queue_pending(DAY)
        asked: list[tuple[str, Any]] = []

        def keep(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
            if "FROM ledger" in statement and "ledger_totals" not in statement:
                asked.append((statement, parameters))

        sa.event.listen(store.engine, "before_cursor_execute", keep)
        try:
            assert store.ledger_counts(DAY)["queued"] == 50
            assert store.ledger_counts(DAY, statuses=("nomatch",)) == {"nomatch": 0}
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", keep)
        assert len(asked) == 2
        pg = store.engine.dialect.name == "postgresql"
        if pg:  # all-visible pages, as autovacuum leaves them after a send
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ledger")
        with store.engine.connect() as conn:
            if pg:
                conn.exec_driver_sql("SET enable_seqscan = off")
                conn.exec_driver_sql("SET enable_bitmapscan = off")
            for statement, parameters in asked:
                explain = "EXPLAIN " if pg else "EXPLAIN QUERY PLAN "
                plan = " | ".join(
                    str(r[-1]) for r in conn.exec_driver_sql(explain + statement, parameters)
                )
                if pg:
                    assert (
                        "Index Only Scan using ledger_y2024m05_digest_date_status_edition_idx"
                        in (plan)
                    ), plan
                else:
                    assert "USING COVERING INDEX ix_ledger_digest_status" in plan, plan


def test_sqlite_checks_renewals_and_releases_look_the_held_rows_up_by_rowid(
    tmp_path: Path,
) -> None:
    """SQLite: a sender's revocation check, lease renewal and release look up each held row by
    its rowid even when given the edition's date (which PostgreSQL uses to read one month's
    partition): with the date in the query SQLite walked the whole edition by
    ix_ledger_digest_status, twice the time at 20,000 readers, four times a second."""
    store = Store.open(default_config(tmp_path))
    try:
        for i in range(200):
            store.add_subscriber(f"q{i}@example.com")
        store.queue_pending(DAY)
        held = [e.id for e in store.claim(DAY, "s", 100, lease_seconds=60)]
        assert len(held) == 100
        asked = _check_renew_release(store, held)
        with store.engine.connect() as conn:
            for statement, parameters in asked:
                plan = " | ".join(
                    r[-1]
                    for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                )
                assert "SEARCH ledger USING INTEGER PRIMARY KEY" in plan, plan
                assert "ix_ledger_digest_status" not in plan, plan
    finally:
        store.close()


def test_a_postgresql_claim_updates_each_row_in_place_on_its_page(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL: a month's partition is made with half of each page free, so a claim writes
    nearly every row's new version on the row's own page (an update PostgreSQL makes without
    touching the indexes; 282 of these 300), where with full pages every claimed row moved to
    another page and got new entries in all three indexes (0 of 300 stayed)."""
    from publisher.state import partitions

    with Store.open(config_for(tmp_path, pg_url)) as store:
        for i in range(300):
            store.add_subscriber(f"h{i}@example.com")
        store.queue_pending(DAY)
        table = partitions.name(DAY)
        page = sa.text(f"SELECT id, (ctid::text::point)[0] FROM {table}")  # noqa: S608
        with store.engine.connect() as conn:
            before = dict(conn.execute(page).all())
            options = conn.execute(
                sa.text("SELECT reloptions FROM pg_class WHERE relname = :t"), {"t": table}
            ).scalar_one()
        assert options == [f"fillfactor={partitions.FILLFACTOR}"]
        claimed = store.claim(DAY, "s", 300, lease_seconds=60)
        assert len(claimed) == 300
        with store.engine.connect() as conn:
            after = dict(conn.execute(page).all())
        stayed = sum(after[i] == before[i] for i in before)
        assert stayed >= 0.9 * len(before), (stayed, len(before))


def test_the_postgresql_claim_statements_have_one_text_whatever_the_number_of_ids(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL: renewing, checking and giving back a sender's claims send the ids as one
    array parameter, so each statement has one text for a batch of any size (which PostgreSQL's
    statement cache can keep), where an expanding IN sends a parameter per id and a new text per
    batch size. The statements still act on exactly the ids they are given."""
    with Store.open(config_for(tmp_path, pg_url)) as store:
        for i in range(5):
            store.add_subscriber(f"a{i}@example.com")
        store.queue_pending(DAY)
        held = [e.id for e in store.claim(DAY, "s", 5, lease_seconds=60)]
        seen: list[str] = []

        def keep(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
            if "ledger" in statement and "claimed_by" in statement:
                seen.append(statement)

        sa.event.listen(store.engine, "before_cursor_execute", keep)
        try:
            texts = []
            for ids in (held[:1], held[:3], held):
                seen.clear()
                assert store.renew_claims("s", ids, lease_seconds=60) == len(ids)
                assert len(store.revoked_claims("s", ids)) == 0
                texts.append(tuple(seen))
            assert texts[0] == texts[1] == texts[2], texts
            seen.clear()
            assert store.release_claims("s", held[:2]) == 2
            assert store.release_claims("s", held) == 3
            assert seen[0] == seen[1], seen
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", keep)
        again = [e.id for e in store.claim(DAY, "t", 5, lease_seconds=60)]
        assert sorted(again) == sorted(held)


def test_the_claim_statements_have_a_few_texts_whatever_the_number_of_ids(store: Store) -> None:
    """Checking a sender's claims every quarter second, about a different number of rows each
    time, runs a handful of statement texts: on SQLite the ids' IN list is padded to a power of
    two (sqlite3 keeps each text it meets prepared: one per size had grown a 300,000-reader
    send's memory by 12 MiB), on PostgreSQL they are one array. The statements still act on
    exactly the ids given."""
    for i in range(40):
        store.add_subscriber(f"a{i}@example.com")
    store.queue_pending(DAY)
    held = [e.id for e in store.claim(DAY, "s", 40, lease_seconds=60)]
    store.add_subscriber("gone@example.com")  # not claimed by "s": never in its answers
    seen: set[str] = set()

    def keep(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if "ledger" in statement and "claimed_by" in statement:
            seen.add(statement)

    sa.event.listen(store.engine, "before_cursor_execute", keep)
    try:
        for n in range(1, 41):
            assert store.renew_claims("s", held[:n], lease_seconds=60) == n
            assert store.revoked_claims("s", held[:n]) == set()
        set_status(store, "a0@example.com", "unsubscribed")
        assert store.revoked_claims("s", held[:3]) == {held[0]}
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", keep)
    # 40 sizes of each statement; padded to 1, 2, 4, ..., 64: 7 texts of each.
    assert len(seen) <= 2 * 7, len(seen)
    assert store.release_claims("s", held[:5]) == 5
    again = [e.id for e in store.claim(DAY, "t", 40, lease_seconds=60)]
    assert sorted(again) == sorted(held[1:5])  # a0 unsubscribed; the 35 others still held


def test_the_sent_recorder_commits_each_call_on_a_connection_of_its_own(store: Store) -> None:
    store.add_subscriber("r@example.com")
    store.queue_pending(DAY)
    entry = next(store.pending_for(DAY))
    recorder = store.sent_recorder()
    try:
        recorder.record([(entry.id, "250 ok", 1)])
        assert store.ledger_entry(DAY, "r@example.com")["status"] == "sent"
    finally:
        recorder.close()
    if store.engine.dialect.name == "postgresql":
        # Its settings (synchronous_commit = off, autocommit) stay on its own connection,
        # closed with it: none of the pool's has them.
        q = "SELECT source FROM pg_settings WHERE name = 'synchronous_commit'"
        conns = [store.engine.connect() for _ in range(6)]  # every pooled one, and more
        try:
            for conn in conns:
                assert conn.exec_driver_sql(q).scalar() != "session"
                assert not conn.connection.dbapi_connection.autocommit
        finally:
            for conn in conns:
                conn.close()


def test_a_batch_of_sent_marks_is_all_or_nothing_and_the_recorder_goes_on(store: Store) -> None:
    """A batch that fails on one of its rows marks none of them (one transaction), and the same
    recorder marks the next batch: nothing of the failed one is left open on its connection."""
    for i in range(3):
        store.add_subscriber(f"r{i}@example.com")
    store.queue_pending(DAY)
    ids = {e.email: e.id for e in store.pending_for(DAY)}
    refused = ids["r1@example.com"]
    with store.engine.begin() as conn:  # the database refuses r1's mark
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE UPDATE ON ledger WHEN NEW.id = {refused} "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.id = {refused} THEN RAISE EXCEPTION 'refused by the test'; END IF; "
                "RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON ledger "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    recorder = store.sent_recorder()
    try:
        with pytest.raises(Exception, match="refused by the test"):
            recorder.record([(ids["r0@example.com"], "250 ok", 1), (refused, "250 ok", 1)])
        assert store.ledger_entry(DAY, "r0@example.com")["status"] == "queued"
        recorder.record(
            [(ids["r0@example.com"], "250 ok", 1), (ids["r2@example.com"], "250 ok", 1)]
        )
    finally:
        recorder.close()
    statuses = [store.ledger_entry(DAY, f"r{i}@example.com")["status"] for i in range(3)]
    assert statuses == ["sent", "queued", "sent"]


@pytest.mark.parametrize("singly", [False, True], ids=["a batch", "one by one"])
def test_the_sent_recorder_keeps_each_reply_and_attempt_count_of_a_batch(
    store: Store, singly: bool
) -> None:
    """A batch of marks (one statement on PostgreSQL, its values as arrays), and marks of one row
    each (another statement there), keep each row's own reply verbatim, whatever it holds
    (quotes, backslashes, braces, commas, the word NULL, CRLF, Korean), cut at the column's 500
    characters, and add each row's own attempts."""
    replies = [
        '250 2.0.0 Ok: queued as "A1", {x,y}',
        "250 ok \\ back\\slash",
        "NULL",
        "",
        "250 접수됨\r\n250 also",
        "2" * 600,
    ]
    for i in range(len(replies)):
        store.add_subscriber(f"r{i}@example.com")
    store.queue_pending(DAY)
    entry = {e.email: e.id for e in store.pending_for(DAY)}
    recorder = store.sent_recorder()
    try:
        # out of id order, and the attempts differ per row
        marks = [(entry[f"r{n}@example.com"], reply, n + 1) for n, reply in enumerate(replies)]
        for batch in [[mark] for mark in marks[::-1]] if singly else [marks[::-1]]:
            recorder.record(batch)
    finally:
        recorder.close()
    for n, reply in enumerate(replies):
        row = store.ledger_entry(DAY, f"r{n}@example.com")
        assert row is not None
        assert (row["status"], row["last_reply"], row["attempts"]) == ("sent", reply[:500], n + 1)


def _plan_nodes(plan: dict) -> list[str]:
    return [plan["Node Type"]] + [n for sub in plan.get("Plans", []) for n in _plan_nodes(sub)]


def test_the_postgresql_recorder_marks_with_one_prepared_plan_of_index_lookups(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL: the mark statements (one for a single row, one for a batch) are prepared
    once on the recorder's connection and every mark runs its one generic plan (no planning
    per mark), and those plans are index lookups (a nested loop of them in the batch's order)
    even where the planner would pick sequential scans: a month's partition still empty and
    never analyzed, and a batch of a thousand rows. The settings that fix the plans stay on the
    recorder's connection."""
    with Store.open(config_for(tmp_path, pg_url)) as store:
        for i in range(3):
            store.add_subscriber(f"p{i}@example.com")
        store.queue_pending(DAY)
        ids = [e.id for e in store.pending_for(DAY)]
        with store.engine.begin() as conn:  # next month's partition: empty, no statistics
            conn.exec_driver_sql(
                "CREATE TABLE ledger_y2024m06 PARTITION OF ledger "
                "FOR VALUES FROM ('2024-06-01') TO ('2024-07-01')"
            )
        recorder = store.sent_recorder()
        try:
            recorder.record([(ids[0], "250 ok 0", 1)])  # one row
            recorder.record([(ids[1], "250 ok 1", 1), (ids[2], "250 ok 2", 1)])  # a batch
            pg = recorder._pg
            plans = dict(
                pg.execute(
                    "SELECT name, array[generic_plans, custom_plans] FROM pg_prepared_statements"
                ).fetchall()
            )
            assert plans == {"publisher_mark_one": [1, 0], "publisher_mark_sent": [1, 0]}
            (one,) = pg.execute(
                "EXPLAIN (FORMAT JSON) EXECUTE publisher_mark_one("
                "'1', '250 ok', '1', '2024-05-15 00:00:00')"
            ).fetchone()[0]
            assert "Index Scan" in _plan_nodes(one["Plan"])
            assert not {"Seq Scan", "Bitmap Heap Scan"} & set(_plan_nodes(one["Plan"]))
            many = "{" + ",".join(str(i) for i in range(1, 1001)) + "}"
            replies = "{" + ",".join(["250 ok"] * 1000) + "}"
            attempts = "{" + ",".join(["1"] * 1000) + "}"
            (plan,) = pg.execute(  # literals: EXPLAIN EXECUTE takes no bound parameters
                "EXPLAIN (FORMAT JSON) EXECUTE publisher_mark_sent("
                f"'{many}', '{replies}', '{attempts}', '2024-05-15 00:00:00')"
            ).fetchone()[0]
        finally:
            recorder.close()
        nodes = _plan_nodes(plan["Plan"])
        assert "Nested Loop" in nodes and "Index Scan" in nodes, nodes
        assert not {"Seq Scan", "Hash Join", "Merge Join", "Bitmap Heap Scan"} & set(nodes)
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW enable_seqscan").scalar() == "on"
            assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "auto"
        assert [store.ledger_entry(DAY, f"p{i}@example.com")["status"] for i in range(3)] == [
            "sent"
        ] * 3


def test_the_sent_recorder_checkpoints_the_wal_off_its_commit_path(tmp_path: Path) -> None:
    """SQLite: the recorder's commits (what each message's final "." waits for) never copy the
    WAL back into the database; its own thread does, while the send goes on. So the marks reach
    the database file itself without another commit, and the recorder's connection has
    automatic checkpoints off, which no pooled connection inherits."""
    store = Store.open(default_config(tmp_path))
    try:
        for i in range(20):
            store.add_subscriber(f"r{i}@example.com")
        store.queue_pending(DAY)
        ids = [e.id for e in store.pending_for(DAY)]
        path = Path(store.engine.url.database)
        with sqlite3.connect(path) as con:  # the tables and queued rows into the file first
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        recorder = store.sent_recorder()
        try:
            assert (
                recorder.conn.dbapi_connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
                == 0
            )
            for entry_id in ids:
                recorder.record([(entry_id, "250 ok", 1)])

            def sent_in_the_database_file() -> int:
                # The main file alone, without its WAL: what a checkpoint has copied into it.
                copy = tmp_path / "checkpointed.sqlite3"
                copy.write_bytes(path.read_bytes())
                with sqlite3.connect(copy) as con:
                    return con.execute(
                        "SELECT count(*) FROM ledger WHERE status = 'sent'"
                    ).fetchone()[0]

            deadline = time.monotonic() + 10
            while sent_in_the_database_file() < len(ids) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sent_in_the_database_file() == len(ids)
        finally:
            recorder.close()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    finally:
        store.close()


@pytest.mark.parametrize(
    ("address", "mailbox"),
    [
        ("victim@example.com", "victim@example.com"),
        ("Victim+news@Example.com", "victim@example.com"),
        ("first.last+a+b@example.com", "first.last@example.com"),  # dots count elsewhere
        ("v.i.c.t.i.m+1@gmail.com", "victim@gmail.com"),
        ("Vic.Tim@googlemail.com", "victim@gmail.com"),
        ("first.last-name_x+tag@protonmail.com", "firstlastnamex@proton.me"),
        ("first_last@pm.me", "firstlast@proton.me"),
        ("+only@example.com", "+only@example.com"),  # nothing left: kept as it is
    ],
)
def test_canonical_mailbox(address: str, mailbox: str) -> None:
    assert canonical_mailbox(address) == mailbox


def test_delete_data_leaves_only_a_suppression_hash(store: Store) -> None:
    """Issue 27, erasure: the row, its sends, its bounce events and the kept message go; the
    suppression list holds a hash that stops any re-add short of a fresh opt-in."""
    from publisher.state import BouncePolicy, InboundEvent
    from publisher.state.schema import (
        bounce_events,
        bounce_messages,
        ledger,
        subscribers,
        suppressions,
    )

    day = dt.date(2024, 5, 15)
    store.add_subscriber("ada@example.com", "Ada")
    store.add_subscriber("bob@example.com", "Bob")
    store.queue_pending(day)
    ada = store.get("ada@example.com")
    assert ada is not None
    store.record_send_refusal("ada@example.com", day, "soft", "452 full", "counted")
    store.record_inbound(
        sha256="a" * 64,
        source="test",
        raw=b"From: mailer-daemon\r\n\r\nada@example.com bounced",
        summary="DSN",
        events=[InboundEvent("ada@example.com", "soft", "4.2.2", "full", ada.id, day)],
        policy=BouncePolicy(),
    )
    store.unsubscribe("ada@example.com")  # a plain suppression row, replaced by the hash

    assert store.delete_data("ada@example.com") is True
    assert store.delete_data("ada@example.com") is False  # idempotent
    with store.engine.connect() as conn:
        kept = [r.email for r in conn.execute(sa.select(suppressions))]
        (bob,) = conn.execute(sa.select(subscribers.c.id)).scalars().all()  # Ada's row is gone
        assert conn.execute(sa.select(ledger.c.subscriber_id)).scalars().all() == [bob]
        assert conn.execute(sa.select(bounce_events)).all() == []
        assert conn.execute(sa.select(bounce_messages)).all() == []
    assert len(kept) == 1 and kept[0].startswith("sha256:") and "ada" not in kept[0]
    assert store.get("ada@example.com") is None and store.is_suppressed("Ada@Example.com")

    # A CSV row or an operator's add comes back unsubscribed; a fresh opt-in lifts the hash.
    run = store.new_csv_run()
    assert store.upsert_csv_batch(run, [("ada@example.com", "Ada")]) == (1, 0, 0)
    assert store.get("ada@example.com").status == "unsubscribed"  # type: ignore[union-attr]
    store.delete_data("ada@example.com")
    sub, _ = store.add_subscriber("ada@example.com", status="active")
    assert sub.status == "unsubscribed"
    assert store.resubscribe("ada@example.com").status == "active"
    assert not store.is_suppressed("ada@example.com")


def test_rename(store: Store) -> None:
    store.add_subscriber("ada@example.com", "Ada")
    assert store.rename("ada@example.com", " Ada\nLovelace ").name == "Ada Lovelace"  # type: ignore[union-attr]
    assert store.rename("nobody@example.com", "x") is None


def test_a_sender_claims_its_next_batch_before_the_rows_at_hand_run_out(store: Store) -> None:
    """Once the rows at hand fall below a quarter of the last claim, the claims' own thread
    claims the next batch: no connection waits for a claim with nothing left to send (every
    connection did, once per batch, when the claim came only after the queue ran dry). Each
    row is handed out once, and closing gives back what was claimed ahead and not sent."""
    import threading
    import time

    from publisher.delivery.claims import CLAIM_BATCH, Claims

    for i in range(3 * CLAIM_BATCH):
        store.add_subscriber(f"r{i}@example.org")
    store.queue_pending(DAY)

    def sender() -> Claims:
        return Claims(
            store,
            DAY,
            retry_failed=False,
            lease_seconds=60,
            batch=CLAIM_BATCH,
            stop=threading.Event(),
        )

    claims = sender()
    try:
        # the first batch, taken until fewer than a quarter of it are left at hand
        handed = [claims.next().id for _ in range(CLAIM_BATCH - CLAIM_BATCH // 4 + 1)]  # type: ignore[union-attr]
        assert len(claims.queue) < CLAIM_BATCH // 4
        deadline = time.monotonic() + 10
        while len(claims.open) < 2 * CLAIM_BATCH and time.monotonic() < deadline:
            time.sleep(0.01)
        # No next() found the queue empty, yet the next batch is there, behind the rows left.
        assert len(claims.open) == 2 * CLAIM_BATCH
        assert len(claims.queue) == 2 * CLAIM_BATCH - len(handed)
        while len(handed) < 2 * CLAIM_BATCH:
            handed.append(claims.next().id)  # type: ignore[union-attr]
        assert len(set(handed)) == 2 * CLAIM_BATCH
        assert handed == sorted(handed)
    finally:
        claims.close()
    # Nothing was sent: closing gave back every row, those claimed ahead too, and another
    # sender gets each row of the edition once.
    assert store.other_claimants(DAY, "another sender") == set()
    again, ids = sender(), []
    try:
        while (entry := again.next()) is not None:
            ids.append(entry.id)
    finally:
        again.close()
    assert len(ids) == len(set(ids)) == 3 * CLAIM_BATCH
    assert set(handed) < set(ids)


def test_a_failed_claim_ahead_is_not_tried_again_for_every_message(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim ahead that fails (the database refused it) is tried once: the rows at hand are
    still handed out, and when they are used up the sender claims as it always did, by the
    worker that found the queue empty (which meets a lasting error itself)."""
    import threading
    import time

    from publisher.delivery.claims import CLAIM_BATCH, Claims

    for i in range(3 * CLAIM_BATCH):
        store.add_subscriber(f"f{i}@example.org")
    store.queue_pending(DAY)
    real = store.claim
    calls: list[str] = []

    def claim(*args: Any, **kwargs: Any) -> Any:
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise RuntimeError("the database refused the claim")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "claim", claim)
    claims = Claims(
        store, DAY, retry_failed=False, lease_seconds=60, batch=CLAIM_BATCH, stop=threading.Event()
    )
    try:
        handed = [claims.next().id for _ in range(CLAIM_BATCH - CLAIM_BATCH // 4 + 1)]  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls == ["MainThread", "claims"]  # the claim ahead, made by the claims thread
        while len(handed) < CLAIM_BATCH:
            handed.append(claims.next().id)  # type: ignore[union-attr]
        time.sleep(0.3)  # a keeper round: no claim ahead was tried again
        assert calls == ["MainThread", "claims"]
        handed.append(claims.next().id)  # type: ignore[union-attr]
        assert calls[2] == "MainThread"  # claimed by the sender itself, as before
    finally:
        claims.close()
    assert len(set(handed)) == CLAIM_BATCH + 1


def test_one_bounce_event_is_read_by_its_id(store: Store) -> None:
    """`bounces show ID` reads its event with one query by id, not by scanning them all."""
    day = dt.date(2024, 5, 15)
    for i in range(5):
        store.record_send_refusal(f"r{i}@example.com", day, "hard", f"550 r{i}", "recorded")
    ids = [e.id for e in store.iter_bounce_events()]
    (event,) = store.iter_bounce_events(event_id=ids[3])
    assert (event.id, event.email, event.reason) == (ids[3], "r3@example.com", "550 r3")
    assert list(store.iter_bounce_events(event_id=max(ids) + 1)) == []


def test_a_sender_claims_what_it_sends_in_a_quarter_of_its_lease(store: Store) -> None:
    """Claims are sized by the sender's own rate: 100 rows at first and for a slow sender (a
    renewal of many rows outlasted a short lease on a busy database, and other senders took
    them over), up to 1,000 for a fast one (each claim costs a few milliseconds however small)."""
    import threading
    import time

    from publisher.delivery.claims import CLAIM_BATCH, CLAIM_BATCH_MAX, Claims

    for i in range(1200):
        store.add_subscriber(f"r{i}@example.org")
    store.queue_pending(DAY)
    claims = Claims(
        store, DAY, retry_failed=False, lease_seconds=60, batch=CLAIM_BATCH, stop=threading.Event()
    )
    try:
        first = claims.next()
        assert first is not None and len(claims.open) == CLAIM_BATCH  # no rate known yet
        claims.started_at = time.monotonic() - 10.0
        claims.finished = 20  # 2 a second: 30 in a quarter of the lease
        assert claims._size() == CLAIM_BATCH
        claims.finished = 2000  # 200 a second: 3,000 in a quarter of the lease
        assert claims._size() == CLAIM_BATCH_MAX
        claims.queue.clear()  # this batch is used up: the next claim is a large one
        assert claims.next() is not None
        assert len(claims.open) == CLAIM_BATCH + CLAIM_BATCH_MAX
    finally:
        claims.close()


def test_postgresql_senders_queueing_one_edition_take_turns(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL: a sender queueing an edition while another one is queueing it waits for that
    one to commit before its own INSERT starts, and then adds no reader twice. (Senders started
    together each ran the INSERT at once, planned on the empty ledger: a nested loop whose NOT
    EXISTS read, for every reader, every row the others had inserted and not yet committed;
    at 20,000 readers the first sender queued in half a second, the others in 50 to 200 s.)"""
    import threading

    from .test_deadlock import HANG_GUARD, _raw, _run, _until

    first, second = (Store.open(config_for(tmp_path, pg_url)) for _ in range(2))
    admin = _raw(pg_url)
    admin.autocommit = True
    first_inserted, release = threading.Event(), threading.Event()
    second_inserts: list[str] = []

    def pause_after_insert(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if statement.startswith("INSERT INTO ledger"):
            first_inserted.set()
            release.wait(HANG_GUARD)  # its transaction stays open, its rows uncommitted

    def note_insert(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if statement.startswith("INSERT INTO ledger"):
            second_inserts.append(statement)

    sa.event.listen(first.engine, "after_cursor_execute", pause_after_insert)
    sa.event.listen(second.engine, "before_cursor_execute", note_insert)
    try:
        for i in range(6):
            first.add_subscriber(f"t{i}@example.org")
        one, out_one = _run(lambda: first.queue_pending(DAY))
        _until(first_inserted.is_set, "the first sender's INSERT")
        two, out_two = _run(lambda: second.queue_pending(DAY))
        _until(
            lambda: (
                admin.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()[0]
                == 1
            ),
            "the second sender to wait for the first",
        )
        assert two.is_alive()
        assert second_inserts == [], "the second sender's INSERT ran beside the first's"
        release.set()
        one.join(HANG_GUARD)
        two.join(HANG_GUARD)
        assert (out_one, out_two) == ({"result": 6}, {"result": 0})
        assert len(second_inserts) == 1
        assert len(list(first.pending_for(DAY))) == 6
    finally:
        release.set()
        admin.close()
        first.close()
        second.close()
