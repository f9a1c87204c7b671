"""The schema is migrated, not created: Alembic builds an empty database and upgrades one
written by release 0.1.0 in place (a real file and a real dump made by that release's code,
in tests/fixtures/state), on SQLite and PostgreSQL, with every row kept."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from publisher.state import Store
from publisher.state.migrate import current, head
from publisher.state.partitions import include_name
from publisher.state.schema import SCHEMA_REVISION, metadata

from .conftest import FIXTURES
from .statehelpers import suppression_reason

DAY = dt.date(2024, 5, 14)  # the fixture's digest: 2 sent, 1 failed (451), 1 queued


@pytest.fixture
def db_url(empty_db_url: str) -> str:
    """Here every database starts empty (conftest's `db_url` is already migrated): these tests
    load old databases into it, or migrate it themselves."""
    return empty_db_url


def _schema_diff(url: str) -> list[object]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            # the ledger's monthly partitions (PostgreSQL) are storage, not schema
            ctx = MigrationContext.configure(conn, opts={"include_name": include_name})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def test_an_empty_database_is_migrated_to_exactly_the_declared_tables(db_url: str) -> None:
    with Store(db_url) as store:
        assert current(store.engine) == head()
    assert _schema_diff(db_url) == []


def _load_release_0_1_0(db_url: str, tmp_path: Path) -> None:
    if db_url.startswith("sqlite"):
        target = Path(sa.engine.make_url(db_url).database)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "state" / "v0.1.0.sqlite3", target)
        return
    url = sa.engine.make_url(db_url).set(drivername="postgresql")
    dump = FIXTURES / "state" / "v0.1.0.postgresql.sql"
    psql = shutil.which("psql")
    assert psql, "psql (Debian package postgresql-client) is needed to load the dump"
    subprocess.run(
        [psql, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), url.render_as_string(False)],
        check=True,
        capture_output=True,
    )


def test_a_release_0_1_0_database_upgrades_in_place_with_every_row_kept(
    db_url: str, tmp_path: Path
) -> None:
    _load_release_0_1_0(db_url, tmp_path)
    engine = sa.create_engine(db_url)
    assert current(engine) is None  # 0.1.0 had no migrations
    engine.dispose()

    with Store(db_url) as store:
        assert current(store.engine) == head()
        assert store.counts_by_status() == {
            "active": 4,
            "pending": 1,
            "unsubscribed": 1,
            "bounced": 1,
            "removed": 0,
        }
        assert store.ledger_counts(DAY) == {"queued": 1, "sent": 2, "failed": 1}
        # 0007 (reader choice): every existing reader is daily, all topics, no cap, chosen by
        # nobody; their ledger rows are of the one segment (all, no cap).
        for sub in store.iter_subscribers():
            assert (sub.cadence, sub.topics, sub.max_papers) == ("daily", frozenset(), 0)
            assert sub.choice_source is None
        bounced = store.get("reader3@example.org")
        assert bounced.status == "bounced" and bounced.hard_bounces == 1
        assert suppression_reason(store, "reader3@example.org") == "bounced: 550 no such user"
        assert store.is_suppressed("reader4@example.org")
        failed = [
            e
            for e in ("reader0", "reader1", "reader2")
            if store.ledger_entry(DAY, f"{e}@example.org")["status"] == "failed"
        ]
        assert len(failed) == 1
        row = store.ledger_entry(DAY, f"{failed[0]}@example.org")
        assert row["attempts"] == 5 and row["last_reply"] == "451 try later"
        pub = store.get_publication(DAY)
        assert pub.email_status == "partial" and (pub.sent, pub.failed) == (2, 1)
        assert pub.email_retries == 0  # 0005 (send retries): no retry by `run` yet
        assert pub.source == "/srv/digests/2024/05/14.md"
        # 0.1.0 could leave a wrong CSV state behind its "unchanged" fingerprint: forgotten.
        assert store.get_meta("csv_sha256:x") is None
        # And the upgraded ledger works as a queue: the queued row can be claimed.
        claimed = store.claim(DAY, "test:1:x", 10, lease_seconds=30)
        assert [e.email for e in claimed] == ["late@example.org"]
        assert claimed[0].segment == ("", 0)
    assert _schema_diff(db_url) == []


def test_a_database_newer_than_this_release_is_refused_with_one_line(db_url: str) -> None:
    from publisher.state.migrate import SchemaTooNew

    Store(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(SchemaTooNew, match="revision 9999, newer than this publisher"):
        Store(db_url)


def test_bounce_events_of_revision_0004_get_an_empty_reported_kind(db_url: str) -> None:
    """0006 (bounce trust) adds `bounce_events.reported_kind` (what an unverified report
    claimed); the events recorded before it keep their kind and get an empty one."""
    from alembic import command

    from publisher.state.migrate import alembic_config

    if db_url.startswith("sqlite"):
        Path(sa.engine.make_url(db_url).database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
    with engine.begin() as conn:
        now = dt.datetime(2024, 5, 15, 7)
        conn.execute(
            sa.text(
                "INSERT INTO bounce_events (email, kind, status, reason, action, created_at) "
                "VALUES ('a@example.net', 'hard', '5.1.1', 'user unknown', 'counted', :now)"
            ),
            {"now": now},
        )
    engine.dispose()
    with Store(db_url) as store:
        assert current(store.engine) == head()
        (event,) = store.iter_bounce_events()
        assert (event.kind, event.reported_kind, event.reason) == ("hard", "", "user unknown")
    assert _schema_diff(db_url) == []


def test_a_revision_0010_ledger_upgrades_and_is_then_compacted(db_url: str, tmp_path: Path) -> None:
    """0011 adds `ledger_totals`; the ledger rows written before it stay, and the first
    compaction folds the expired ones into it (counts unchanged)."""
    from alembic import command

    from publisher.config import default_config
    from publisher.state.compaction import compact
    from publisher.state.migrate import alembic_config

    if db_url.startswith("sqlite"):
        Path(sa.engine.make_url(db_url).database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0010")
        at = dt.datetime(2024, 5, 15, 7)
        conn.execute(
            sa.text(
                "INSERT INTO subscribers (email, name, status, source, created_at, updated_at, "
                "hard_bounces) VALUES ('a@example.net', '', 'active', 'csv', :at, :at, 0)"
            ),
            {"at": at},
        )
        conn.execute(
            sa.text(
                "INSERT INTO publications (edition, digest_date, source, content_hash, "
                "email_status, sent, failed, email_retries, created_at, updated_at) "
                "VALUES ('daily', :day, 's', 'h', 'sent', 1, 0, 0, :at, :at)"
            ),
            {"day": DAY, "at": at},
        )
        conn.execute(
            sa.text(
                "INSERT INTO ledger (edition, digest_date, subscriber_id, email, status, "
                "attempts, final, last_reply, updated_at) SELECT 'daily', :day, id, email, "
                "'sent', 1, false, '250 OK', :at FROM subscribers"
            ),
            {"day": DAY, "at": at},
        )
    engine.dispose()
    with Store(db_url) as store:
        assert current(store.engine) == head()
        assert store.ledger_counts(DAY)["sent"] == 1
        report = compact(default_config(tmp_path), store)
        assert report.rows == 1
        assert store.ledger_counts(DAY)["sent"] == 1
        assert store.ledger_entry(DAY, "a@example.net") is None
    assert _schema_diff(db_url) == []


def _add_readers(conn: sa.Connection, emails: tuple[str, ...], at: dt.datetime) -> dict[str, int]:
    """Active readers added by SQL alone (valid at revision 0011 and at the head); their ids by
    address."""
    for email in emails:
        conn.execute(
            sa.text(
                "INSERT INTO subscribers (email, name, status, source, created_at, "
                "updated_at, hard_bounces) VALUES (:e, '', 'active', 'csv', :at, :at, 0)"
            ),
            {"e": email, "at": at},
        )
    return dict(conn.execute(sa.text("SELECT email, id FROM subscribers")).all())


def test_0012_keys_the_ledger_by_reader_and_folds_a_reader_queued_twice(db_url: str) -> None:
    """0012 drops the ledger's address column; its key becomes (edition, day, subscriber id).
    A reader queued twice for one edition under two addresses (the address changed between
    two queueings) keeps one row, the sent one; another reader's row is kept as it was."""
    from alembic import command

    from publisher.state.migrate import alembic_config

    if db_url.startswith("sqlite"):
        Path(sa.engine.make_url(db_url).database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(db_url)
    at = dt.datetime(2024, 5, 14, 7)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0011")
        ids = _add_readers(conn, ("new@example.net", "other@example.net"), at)
        rows = [  # (subscriber, address then, status): the failed row came first
            (ids["new@example.net"], "old@example.net", "failed"),
            (ids["new@example.net"], "new@example.net", "sent"),
            (ids["other@example.net"], "other@example.net", "queued"),
        ]
        for sub, email, status in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO ledger (edition, digest_date, subscriber_id, email, status, "
                    "attempts, final, last_reply, updated_at) VALUES ('daily', :day, :sub, :e, "
                    ":status, 1, false, '', :at)"
                ),
                {"day": DAY, "sub": sub, "e": email, "status": status, "at": at},
            )
    engine.dispose()
    with Store(db_url) as store:
        assert current(store.engine) == head()
        with store.engine.connect() as conn:
            left = conn.execute(sa.text("SELECT subscriber_id, status FROM ledger")).all()
        assert sorted(left) == sorted(
            [(ids["new@example.net"], "sent"), (ids["other@example.net"], "queued")]
        )
        entry = store.ledger_entry(DAY, "new@example.net")
        assert entry is not None and entry["status"] == "sent" and "email" in entry
        # the key: one row per reader and edition
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO ledger (edition, digest_date, subscriber_id, status, attempts,"
                    " final, last_reply, updated_at) VALUES ('daily', :day, :sub, 'queued', 0,"
                    " false, '', :at)"
                ),
                {"day": DAY, "sub": ids["other@example.net"], "at": at},
            )
    assert _schema_diff(db_url) == []


def _ledger_kind(conn: sa.Connection) -> str:
    """PostgreSQL's relkind of the ledger: 'p' partitioned, 'r' a plain table."""
    return conn.execute(sa.text("SELECT relkind FROM pg_class WHERE relname = 'ledger'")).scalar()


def test_downgrading_0013_and_0012_keeps_every_ledger_row_and_upgrading_again_restores_them(
    db_url: str,
) -> None:
    """Down to 0011 the ledger gets its address column back (filled from the subscribers) and,
    on PostgreSQL, is a plain table again; back up to the head it is keyed by reader and
    partitioned by month once more, with the same rows, and the schema is the declared one."""
    from alembic import command

    from publisher.state.migrate import alembic_config

    at = dt.datetime(2024, 6, 1, 7)
    days = (dt.date(2024, 5, 14), dt.date(2024, 6, 1))  # two months: two partitions
    with Store(db_url) as store:
        for day in days:
            store.ensure_ledger_partition(day)
        with store.engine.begin() as conn:
            ids = _add_readers(conn, ("a@example.net", "b@example.net"), at)
            rows = [  # (day, address, status)
                (days[0], "a@example.net", "sent"),
                (days[0], "b@example.net", "failed"),
                (days[1], "a@example.net", "queued"),
            ]
            for day, email, status in rows:
                conn.execute(
                    sa.text(
                        "INSERT INTO ledger (edition, digest_date, subscriber_id, status, "
                        "attempts, final, last_reply, updated_at) VALUES ('daily', :day, :sub, "
                        ":status, 1, false, '', :at)"
                    ),
                    {"day": day, "sub": ids[email], "status": status, "at": at},
                )
    postgresql = db_url.startswith("postgresql")

    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0011")
    with engine.connect() as conn:
        got = conn.execute(
            sa.text("SELECT digest_date, email, subscriber_id, status FROM ledger")
        ).all()
        assert sorted((dt.date.fromisoformat(str(d)), e, i, st) for d, e, i, st in got) == sorted(
            (day, email, ids[email], status) for day, email, status in rows
        )
        if postgresql:
            assert _ledger_kind(conn) == "r"
    engine.dispose()

    with Store(db_url) as store:
        assert current(store.engine) == head()
        with store.engine.connect() as conn:
            got = conn.execute(sa.text("SELECT digest_date, subscriber_id, status FROM ledger"))
            assert sorted((dt.date.fromisoformat(str(d)), i, st) for d, i, st in got) == sorted(
                (day, ids[email], status) for day, email, status in rows
            )
            if postgresql:
                assert _ledger_kind(conn) == "p"
                parts = conn.execute(
                    sa.text(
                        "SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                        "ON c.oid = i.inhrelid WHERE i.inhparent = 'ledger'::regclass"
                    )
                ).scalars()
                assert sorted(parts) == ["ledger_y2024m05", "ledger_y2024m06"]
    assert _schema_diff(db_url) == []


def test_the_schema_revision_the_code_declares_is_the_migrations_head() -> None:
    """StoreBase opens a database stamped SCHEMA_REVISION without loading Alembic: if a new
    migration did not move it, databases would be left at the old revision. (That a database
    stamped older is upgraded on open: the 0010 test above.)"""
    assert head() == SCHEMA_REVISION
