"""The set-based CSV sync on a real database (each backend): what changes, what is recorded,
and that an unchanged file writes nothing; and the fast address check against email-validator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from publisher.audit import entries
from publisher.config import Config, load_config
from publisher.state import AddressNormalizer, InvalidAddress, Store, normalize_email
from publisher.state.schema import _clean_name, audit_log, normalize_name, subscribers
from publisher.subscribers import SubscriberFileError, import_csv

from .pg import state_toml


@pytest.fixture
def cfg(tmp_path: Path, db_url: str) -> Config:
    (tmp_path / "config.toml").write_text('[subscribers]\nfile = "subs.csv"\n' + state_toml(db_url))
    return load_config(tmp_path / "config.toml")


def write(cfg: Config, header: str, rows: list[str]) -> None:
    cfg.subscribers.file.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")


def snapshot(store: Store) -> dict[str, tuple[Any, ...]]:
    """Every subscriber row as stored, by address."""
    with store.engine.connect() as conn:
        return {r.email: tuple(r) for r in conn.execute(sa.select(subscribers))}


def trail(store: Store) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(e.email, e.old, e.new) for e in entries(store, action="import")]


def test_a_sync_applies_new_changed_and_removed_rows_and_records_only_the_changes(
    cfg: Config,
) -> None:
    with Store.open(cfg) as store:
        store.unsubscribe("gone@example.com")  # suppressed before it was ever listed
        write(
            cfg,
            "email,name,cadence",
            ["a@example.com,A,daily", "b@example.com,B,daily", "c@example.com,C,daily"],
        )
        report = import_csv(cfg, store)
        assert (report.added, report.removed) == (3, 0)
        store.add_subscriber("web@example.com", "W", source="web")
        write(
            cfg,
            "email,name,cadence",
            [
                "a@example.com,A,daily",  # unchanged
                "b@example.com,Bea,weekly",  # renamed (not recorded) and a new cadence
                "gone@example.com,G,daily",  # suppressed: comes in unsubscribed
                "d@example.com,,daily",  # new
                "D@Example.com,Dee,daily",  # the same address: merged, first name wins
            ],
        )
        before, rows_before = len(trail(store)), snapshot(store)
        report = import_csv(cfg, store)
        assert (report.rows, report.added, report.duplicates, report.removed) == (5, 2, 1, 1)
        after = snapshot(store)
        assert after["a@example.com"] == rows_before["a@example.com"]  # not written at all
        b = store.get("b@example.com")
        assert (b.name, b.cadence, b.choice_source) == ("Bea", "weekly", "csv")
        assert store.get("gone@example.com").status == "unsubscribed"
        assert store.get("d@example.com").name == "Dee"  # the first non-empty name
        assert store.get("c@example.com").status == "removed"
        assert store.get("web@example.com").status == "active"  # not the CSV's
        new = sorted(trail(store)[before:], key=lambda e: e[0])
        assert [(e, old, set(n)) for e, old, n in new] == [
            ("b@example.com", {"cadence": "daily"}, {"cadence"}),
            ("c@example.com", {"status": "active"}, {"status"}),
            ("d@example.com", {}, {"status", "source", "cadence", "topics", "max_papers"}),
            ("gone@example.com", {}, {"status", "source", "cadence", "topics", "max_papers"}),
        ]
        assert new[3][2]["status"] == "unsubscribed" and new[2][2]["status"] == "active"

        # c comes back: active again; a suppressed `removed` row does not.
        store.suppress("a@example.com", "complaint by phone")
        write(cfg, "email,name", ["b@example.com,Bea", "c@example.com,C"])
        report = import_csv(cfg, store)
        assert (report.removed, report.reactivated) == (2, 1)  # a and d out, c back
        statuses = {s.email: s.status for s in store.iter_subscribers()}
        assert statuses == {
            "a@example.com": "removed",
            "b@example.com": "active",
            "c@example.com": "active",
            "d@example.com": "removed",
            "gone@example.com": "unsubscribed",
            "web@example.com": "active",
        }
        write(cfg, "email,name", ["a@example.com,A", "b@example.com,Bea", "c@example.com,C"])
        report = import_csv(cfg, store)
        assert report.reactivated == 0
        assert store.get("a@example.com").status == "removed"  # suppressed: stays out


def test_an_unchanged_sync_writes_no_subscriber_row_and_no_entry(cfg: Config) -> None:
    write(cfg, "email,name,topics", [f"r{i}@example.com,R{i}," for i in range(300)])
    with Store.open(cfg) as store:
        import_csv(cfg, store)
        with store.engine.connect() as conn:
            audited = conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar()
        rows = snapshot(store)
        writes: list[tuple[str, int]] = []

        def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            # (PostgreSQL's removal is `WITH r AS (UPDATE subscribers ...) INSERT INTO audit_log`)
            if "UPDATE subscribers" in statement or "INSERT INTO subscribers" in statement:
                writes.append((statement, cursor.rowcount))

        sa.event.listen(store.engine, "after_cursor_execute", count)
        report = import_csv(cfg, store, force=True)  # the same file again, read in full
        sa.event.remove(store.engine, "after_cursor_execute", count)
        assert (report.rows, report.added, report.reactivated, report.removed) == (300, 0, 0, 0)
        # A few set-based statements, none of which touched a row; every row as it was (its
        # updated_at included) and no entry on the trail.
        assert len(writes) <= 4 and all(n == 0 for _, n in writes), writes
        assert snapshot(store) == rows
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(audit_log)).scalar() == (
                audited
            )


def test_an_unchanged_file_is_skipped_until_another_sync_ran(cfg: Config, tmp_path: Path) -> None:
    write(cfg, "email", ["a@example.com", "b@example.com"])
    other = tmp_path / "other.csv"
    other.write_text("email\na@example.com\n", encoding="utf-8")
    with Store.open(cfg) as store:
        import_csv(cfg, store)
        assert import_csv(cfg, store).skipped_unchanged
        import_csv(cfg, store, other, sync=False)  # adds only: the sync still stands
        assert import_csv(cfg, store).skipped_unchanged
        import_csv(cfg, store, other, sync=True)  # another sync removed b
        assert store.get("b@example.com").status == "removed"
        report = import_csv(cfg, store)
        assert not report.skipped_unchanged and report.reactivated == 1
        assert store.get("b@example.com").status == "active"


def test_a_file_that_breaks_off_midway_changes_nothing(cfg: Config) -> None:
    write(cfg, "email,name", ["a@example.com,A"])
    with Store.open(cfg) as store:
        import_csv(cfg, store)
        huge = "x" * 200_000  # over the csv module's field limit: an error at line 4
        write(cfg, "email,name", ["b@example.com,B", "c@example.com,C", f"d@example.com,{huge}"])
        with pytest.raises(SubscriberFileError, match=r"subs\.csv:4: field larger"):
            import_csv(cfg, store)
        # Nothing of it applied: no b, and a not removed.
        assert store.get("b@example.com") is None
        assert store.get("a@example.com").status == "active"
        write(cfg, "email,name", ["b@example.com,B"])  # the next import runs as usual
        assert import_csv(cfg, store).added == 1


# -- the address check ------------------------------------------------------------------------

ADDRESSES = [
    "ada@example.com",
    "Ada.Lovelace+news@Example.COM",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@b@example.com",
    '"quoted"@example.com',
    "ada@localhost",
    "ada@example.invalid",
    "ada@exa_mple.com",
    "ada@-example.com",
    "ada@example",
    "ada@xn--bcher-kva.example",
    "ada@bücher.example",
    "ADA@BÜCHER.EXAMPLE",
    "jörg@example.com",
    "Ada <ada@example.com>",
    "ada@[127.0.0.1]",
    "ada@example.com.",
    " ada@example.com ",
    "x" * 64 + "@example.com",
    "x" * 65 + "@example.com",
    "a@" + ".".join(["d" * 60] * 4) + ".com",
    "a" * 60 + "@" + ".".join(["d" * 60] * 3) + ".com",
    "postmaster@example.com",
    "@example.com",
    "ada@",
    "",
]


def outcome(check: Any, address: str) -> str:
    try:
        return "ok " + check(address)
    except InvalidAddress as exc:
        return "invalid " + str(exc)


def test_the_fast_address_check_agrees_with_email_validator() -> None:
    fast = AddressNormalizer()
    for address in ADDRESSES * 2:  # the second time from its cache of domains
        assert outcome(fast, address) == outcome(normalize_email, address), address


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet="aZ09._+-!'@ä<>\" ()[]\\", max_size=30)
        | st.builds(
            "{}@{}".format,
            st.text(alphabet="aZ9._+-'ä", min_size=1, max_size=70),
            st.sampled_from(["example.com", "Example.org", "bücher.de", "localhost", "a-.com"]),
        ),
        max_size=8,
    )
)
def test_the_fast_address_check_agrees_on_generated_addresses(addresses: list[str]) -> None:
    fast = AddressNormalizer()
    for address in addresses:
        assert outcome(fast, address) == outcome(normalize_email, address), address


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=" ab~\t\n\x1f\x7f\u00a0\u202e\u2028é", max_size=220))
def test_the_fast_name_path_agrees_with_the_full_rules(name: str) -> None:
    assert normalize_name(name) == _clean_name(name)
