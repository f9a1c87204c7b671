"""The audit trail: every change to a subscriber is recorded, in the change's transaction, with
the actor (the web client's hash, the operator's user@host, `system`), the action and the values
before and after; `publisher audit` reads it; it is append-only through the application."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from publisher import state as st
from publisher.audit import entries, operator_actor, web_actor
from publisher.cli import cli
from publisher.state import BouncePolicy, InboundEvent, Store
from publisher.state.lifecycle import Action, suppression_hash
from publisher.state.schema import audit_log

from .pg import state_toml
from .test_web import Web, confirmation_link, make_web
from .webhelpers import SECRET

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def web(tmp_path: Path, db_url: str) -> Iterator[Web]:
    yield from make_web(tmp_path, db_url)


def trail(store: Store, **filters: object) -> list[tuple[str, str, dict, dict]]:
    return [(e.action, e.email, e.old, e.new) for e in entries(store, **filters)]  # type: ignore[arg-type]


def test_web_signup_confirm_preferences_and_unsubscribe_are_recorded(web: Web) -> None:
    web.signup("grace@example.com", "Grace")
    [msg] = web.inbox.to("grace@example.com")
    web.confirm(confirmation_link(msg, web.cfg.site.base_url))
    web.confirm(confirmation_link(msg, web.cfg.site.base_url))  # a second click changes nothing
    r = web.http.post(
        web.manage_url("grace@example.com"),
        data={"action": "choice", "cadence": "paused", "max_papers": "5"},
    )
    assert r.status_code == 200
    web.post_one_click(web.unsub_url("grace@example.com"))
    sub = web.store.get("grace@example.com")
    assert sub is not None
    assert trail(web.store) == [
        ("signup", "grace@example.com", {}, {"status": "pending", "source": "web"}),
        ("confirm", "grace@example.com", {"status": "pending"}, {"status": "active"}),
        (
            "preferences",
            "grace@example.com",
            {"cadence": "daily", "max_papers": 0},
            {"cadence": "paused", "max_papers": 5},
        ),
        (
            "unsubscribe",
            "grace@example.com",
            {"status": "active"},
            {"status": "unsubscribed", "suppressed": "unsubscribed"},
        ),
    ]
    found = list(entries(web.store))
    # The actor is the client's keyed hash: the same for each request, never the address.
    assert {e.actor for e in found} == {web_actor("127.0.0.1", SECRET)}
    assert re.fullmatch(r"web:[0-9a-f]{16}", found[0].actor)
    assert {e.subscriber_id for e in found} == {sub.id}
    # The confirmation time is kept, and exported beside the creation time.
    assert sub.confirmed_at is not None and sub.confirmed_at >= sub.created_at
    out = io.StringIO()
    from publisher.subscribers import export_csv

    export_csv(web.store, out)
    [row] = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert row["confirmed_at"] == sub.confirmed_at.isoformat(timespec="seconds")
    assert row["created_at"] == sub.created_at.isoformat(timespec="seconds")


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Path:
    (tmp_path / "config.toml").write_text('[subscribers]\nfile = "subs.csv"\n' + state_toml(db_url))
    return tmp_path


def test_cli_changes_are_the_operators_and_publisher_audit_reads_them(project: Path) -> None:
    runner = CliRunner()
    cfg = ["--config", str(project / "config.toml")]
    (project / "subs.csv").write_text("email,name\nada@example.com,Ada\n", encoding="utf-8")
    for args in (
        ["subscribers", "import"],
        ["subscribers", "add", "grace@example.com"],
        ["subscribers", "set", "grace@example.com", "--cadence", "paused"],
        ["subscribers", "remove", "ada@example.com"],
        ["subscribers", "add", "ada@example.com", "--resubscribe"],
        ["subscribers", "remove", "nobody@example.com"],
    ):
        res = runner.invoke(cli, [*args, *cfg])
        assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["audit", "--json", *cfg])
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in res.output.splitlines()]
    assert [(e["action"], e["email"]) for e in got] == [
        ("import", "ada@example.com"),
        ("add", "grace@example.com"),
        ("preferences", "grace@example.com"),
        ("unsubscribe", "ada@example.com"),
        ("resubscribe", "ada@example.com"),
        ("unsubscribe", "nobody@example.com"),
    ]
    assert {e["actor"] for e in got} == {operator_actor()}
    assert got[3]["before"] == {"status": "active"}
    assert got[4]["after"] == {"status": "active", "suppression_lifted": True}
    assert got[5]["subscriber_id"] is None
    # Filters: by address (any spelling), by action, by date.
    res = runner.invoke(cli, ["audit", "--email", "Ada@Example.com", *cfg])
    assert [line.split()[2] for line in res.output.splitlines()] == [
        "import",
        "unsubscribe",
        "resubscribe",
    ]
    res = runner.invoke(cli, ["audit", "--action", "add", *cfg])
    assert len(res.output.splitlines()) == 1 and "grace@example.com" in res.output
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    assert runner.invoke(cli, ["audit", "--since", tomorrow, *cfg]).output == ""
    res = runner.invoke(cli, ["audit", "--action", "nonsense", *cfg])
    assert res.exit_code == 2 and "unknown action 'nonsense'" in res.output
    res = runner.invoke(cli, ["audit", "--since", "yesterday", *cfg])
    assert res.exit_code == 2 and "not a date" in res.output
    # `subscribers list --since`: those created on or after the day.
    res = runner.invoke(cli, ["subscribers", "list", "--since", tomorrow, *cfg])
    assert "@" not in res.output.splitlines()[0]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    res = runner.invoke(cli, ["subscribers", "list", "--since", today, *cfg])
    assert res.output.count("@example.com") == 2


def test_an_import_records_one_entry_per_changed_subscriber(project: Path) -> None:
    from publisher.config import load_config
    from publisher.subscribers import import_csv

    cfg = load_config(project / "config.toml")
    rows = [f"r{i}@example.com,R{i}" for i in range(50)]
    (project / "subs.csv").write_text("email,name\n" + "\n".join(rows), encoding="utf-8")
    with Store.open(cfg) as store:
        store.unsubscribe("r7@example.com")  # suppressed before the import
        before = len(trail(store))
        import_csv(cfg, store)
        added = trail(store)[before:]
        assert len(added) == 50 and len({e[1] for e in added}) == 50
        assert {e[1]: e for e in added}["r7@example.com"] == (
            "import",
            "r7@example.com",
            {},
            {"status": "unsubscribed", "source": "csv", "cadence": "daily", "topics": ""}
            | {"max_papers": 0},
        )
        assert {e.actor for e in entries(store, action="import")} == {"system"}
        # The same file again: nothing changed, nothing recorded (names do not count).
        import_csv(cfg, store, force=True)
        assert len(trail(store)) == before + 50
        # Two rows gone, one back: three entries.
        (project / "subs.csv").write_text(
            "email,name,cadence\n" + "\n".join(rows[2:]) + ",weekly\n", encoding="utf-8"
        )
        import_csv(cfg, store)
        changed = trail(store)[before + 50 :]
        assert sorted(changed, key=lambda e: e[1]) == [
            ("import", "r0@example.com", {"status": "active"}, {"status": "removed"}),
            ("import", "r1@example.com", {"status": "active"}, {"status": "removed"}),
            ("import", "r49@example.com", {"cadence": "daily"}, {"cadence": "weekly"}),
        ]
        (project / "subs.csv").write_text("email\nr0@example.com\n", encoding="utf-8")
        import_csv(cfg, store, sync=False)
        assert trail(store)[-1] == (
            "import",
            "r0@example.com",
            {"status": "removed"},
            {"status": "active"},
        )


def test_bounces_complaints_and_sends_are_recorded_as_system(tmp_path: Path, db_url: str) -> None:
    with Store(db_url) as store:
        store.add_subscriber("x@example.com")
        complainer, _ = store.add_subscriber("c@example.com")
        start = len(trail(store))
        assert not store.record_hard_bounce("x@example.com", "550 no such user", limit=2)
        assert store.record_hard_bounce("x@example.com", "550 no such user", limit=2)
        assert not store.record_hard_bounce("x@example.com", "550 no such user", limit=2)
        store.record_inbound(
            sha256="a" * 64,
            source="test",
            raw=b"x",
            summary="",
            events=[InboundEvent("c@example.com", "complaint", subscriber_id=complainer.id)],
            policy=BouncePolicy(mailed_within_days=10_000),
        )
        day = dt.date(2024, 5, 16)
        store.record_publication(day, "digests/x.md", "abc")
        store.update_publication(day, email_status=st.EmailStatus.SENDING)
        store.update_publication(day, email_status=st.EmailStatus.SENT, sent=1, failed=1)
        assert trail(store)[start:] == [
            ("bounce", "x@example.com", {"hard_bounces": 0}, {"hard_bounces": 1}),
            (
                "bounce",
                "x@example.com",
                {"status": "active"},
                {"status": "bounced", "suppressed": "bounced: 550 no such user"},
            ),
            (
                "complaint",
                "c@example.com",
                {"status": "active"},
                {"status": "unsubscribed", "suppressed": "complaint"},
            ),
            ("send_started", "", {}, {"digest": "2024-05-16"}),
            (
                "send_finished",
                "",
                {},
                {"digest": "2024-05-16", "email_status": "sent", "sent": 1, "failed": 1},
            ),
        ]
        assert {e.actor for e in entries(store)} == {"system"}


def test_an_erasure_leaves_only_the_hash_on_the_trail(db_url: str) -> None:
    with Store(db_url) as store:
        store.add_subscriber("ada@example.com")
        store.unsubscribe("ada@example.com")
        store.delete_data("Ada@Example.com")
        hashed = suppression_hash("ada@example.com")
        assert [e[0] for e in trail(store)] == ["add", "unsubscribe", "delete"]
        assert {e[1] for e in trail(store)} == {hashed}
        with store.engine.connect() as conn:
            dump = " ".join(str(tuple(r)) for r in conn.execute(sa.select(audit_log)))
        assert "ada@" not in dump


def test_the_trail_is_append_only_through_the_application() -> None:
    """No code path updates or deletes audit rows, except the erasure's address-to-hash."""
    writes = []
    for path in sorted((ROOT / "publisher").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(
            r"audit_log\.(update|delete)\(\)|(UPDATE|DELETE FROM) audit_log", text
        ):
            writes.append((path.relative_to(ROOT).as_posix(), m.group(0)))
    assert writes == [("publisher/state/lifecycle.py", "audit_log.update()")]
    assert Action.DELETE == "delete"


def test_postgresql_refuses_to_rewrite_the_trail_but_for_an_erasure(pg_url: str) -> None:
    with Store(pg_url) as store:
        store.add_subscriber("ada@example.com")
        store.add_subscriber("bob@example.com")
        for statement in (
            "UPDATE audit_log SET actor = 'someone else'",
            "UPDATE audit_log SET email = 'sha256:x', action = 'import'",
            "DELETE FROM audit_log",
        ):
            with (
                pytest.raises(sa.exc.DBAPIError, match="append-only"),
                store.engine.begin() as conn,
            ):
                conn.execute(sa.text(statement))
        store.delete_data("ada@example.com")  # the one rewrite allowed
        assert {e[1] for e in trail(store)} == {
            suppression_hash("ada@example.com"),
            "bob@example.com",
        }
