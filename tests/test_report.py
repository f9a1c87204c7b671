"""`publisher report` after a real day of operation: the numbers behind each chart equal plain
SQL over the database, and the page, opened from disk in Debian's Chromium in light and dark,
shows its nine charts under its own strict Content-Security-Policy with no console error."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from html import unescape
from pathlib import Path

import sqlalchemy as sa

from publisher.state import STATUSES, ChoiceUpdate, Store
from publisher.state import reporting as q

from .browser import chromium
from .conftest import one_error_line
from .monitorhelpers import SECRET, operated_project

CHARTS = ["status", "history", "joined", "actions", "sends", "rates", "speed", "causes", "readers"]


def report(cfg_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", "report", "--config", str(cfg_path), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PUBLISHER_SECRET": SECRET},
        timeout=300,
    )


def test_the_numbers_behind_the_charts_are_the_database(tmp_path: Path, db_url: str) -> None:
    cfg, today = operated_project(tmp_path, db_url)
    since = today - dt.timedelta(days=7)
    engine = sa.create_engine(cfg.database_url)
    with engine.connect() as conn:
        by_status = dict(
            conn.execute(sa.text("SELECT status, count(*) FROM subscribers GROUP BY status")).all()
        )
        pub = conn.execute(
            sa.text("SELECT sent, failed FROM publications WHERE digest_date = :d"), {"d": today}
        ).one()
        unsubscribed = conn.execute(
            sa.text("SELECT count(*) FROM suppressions WHERE reason = 'unsubscribed'")
        ).scalar_one()
        kinds = dict(
            conn.execute(sa.text("SELECT kind, count(*) FROM bounce_events GROUP BY kind")).all()
        )
        csv_readers = conn.execute(
            sa.text("SELECT count(*) FROM subscribers WHERE source = 'csv'")
        ).scalar_one()
    with Store.open(cfg) as store:
        assert q.status_counts(store.engine) == by_status
        # bob@ unsubscribed, grace@ complained (which unsubscribes too), gone@ bounced.
        assert by_status == {"active": 2, "bounced": 1, "unsubscribed": 2}
        [row] = q.sends(store.engine, since, cfg.tz)
        assert (row.date, row.sent, row.failed) == (today, pub.sent, pub.failed) == (today, 4, 1)
        assert (row.bounced, row.complained, row.unsubscribed) == (1, 1, unsubscribed) == (1, 1, 1)
        assert row.bounce_rate == 1 / 5 and row.complaint_rate == 1 / 4
        assert row.seconds is not None and row.seconds >= 0
        assert q.event_kinds(store.engine, since, cfg.tz) == kinds
        joined = q.joined_per_day(store.engine, since, cfg.tz)
        assert sum(joined.values()) == csv_readers == 5 and {s for _, s in joined} == {"csv"}

        # History, from the audit trail: a signup and its confirmation today, a pause.
        store.add_subscriber("new@example.com", status="pending", source="web", action="signup")
        store.resubscribe("new@example.com", "", "web", "confirm")
        store.set_choice("ada@example.com", ChoiceUpdate(cadence="paused"), "cli")
        history = [today - dt.timedelta(days=1), today]
        by_day = q.status_history(store.engine, history, cfg.tz)
        now = q.status_counts(store.engine)
        assert by_day[today] == dict.fromkeys(STATUSES, 0) | now
        # Every reader of this project came today, through the trail: none yesterday.
        assert by_day[history[0]] == dict.fromkeys(STATUSES, 0)
        acts = q.actions_per_day(store.engine, since, cfg.tz)
    with engine.connect() as conn:
        per_action = dict(
            conn.execute(
                sa.text(
                    "SELECT action, count(*) FROM audit_log WHERE action IN "
                    "('signup', 'confirm', 'unsubscribe') GROUP BY action"
                )
            ).all()
        )
        cadences = dict(
            conn.execute(
                sa.text(
                    "SELECT cadence, count(*) FROM subscribers WHERE status = 'active' "
                    "GROUP BY cadence"
                )
            ).all()
        )
        topics = conn.execute(
            sa.text(
                "SELECT count(*) FROM subscribers WHERE status = 'active' "
                "AND cadence <> 'paused' AND topics = ''"
            )
        ).scalar_one()
    engine.dispose()
    assert (
        {a: n for (_, a), n in acts.items()}
        == per_action
        == {
            "signup": 1,
            "confirm": 1,
            "unsubscribe": 1,  # bob@ (grace@'s complaint is a `complaint`)
        }
    )
    assert {d for d, _ in acts} == {today}
    with Store.open(cfg) as store:
        assert q.readers_by_cadence(store.engine) == cadences == {"daily": 2, "paused": 1}
        assert q.readers_by_topic(store.engine) == {"": topics} == {"": 2}
        started, upgraded = q.history_start(store.engine)
        assert started is not None and not upgraded  # created by this release: all history


def test_an_upgraded_database_starts_its_history_at_the_upgrade(tmp_path: Path) -> None:
    """A database of release 0.1.0, upgraded: the report's history starts at the upgrade and
    the page says so."""
    import shutil

    from .conftest import FIXTURES

    db = tmp_path / "state.sqlite3"
    shutil.copy(FIXTURES / "state" / "v0.1.0.sqlite3", db)
    db.chmod(0o600)
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(f'[state]\ndatabase = "sqlite:///{db}"\n')
    r = report(cfg_path, "--out", str(tmp_path / "private"), "--days", "3000")
    assert r.returncode == 0, r.stdout + r.stderr
    html = unescape((tmp_path / "private" / "report.html").read_text())
    with Store(f"sqlite:///{db}") as store:
        started, upgraded = q.history_start(store.engine)
    assert upgraded and started is not None
    from publisher.config import load_config
    from publisher.i18n import strings

    # The upgrade's day in the site's timezone (Asia/Seoul by default), as the page gives it:
    # from 15:00 UTC on it is already the next day there.
    day = started.replace(tzinfo=dt.UTC).astimezone(load_config(cfg_path).tz).date()
    note = strings("ko")["report_history_since"].format(date=day)  # the default language
    assert note in html


def test_the_report_page_shows_its_charts_in_light_and_dark(tmp_path: Path) -> None:
    cfg, _ = operated_project(tmp_path, f"sqlite:///{tmp_path}/state.sqlite3")
    r = report(cfg.path, "--out", str(tmp_path / "private"), "--days", "14")
    assert r.returncode == 0, r.stdout + r.stderr
    page = tmp_path / "private" / "report.html"
    assert r.stdout.strip() == f"wrote {page}"
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", ""), (
        "self-contained: no script, no external resource"
    )
    assert "default-src 'none'; style-src 'sha256-" in unescape(html)  # its own strict CSP
    colors = {}
    with chromium() as browser:
        for scheme in ("light", "dark"):
            context = browser.new_context(
                color_scheme=scheme, viewport={"width": 900, "height": 900}
            )
            tab = context.new_page()
            problems: list[str] = []
            tab.on("console", lambda m, p=problems: p.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e, p=problems: p.append(str(e)))
            tab.goto(page.as_uri())
            assert problems == [], problems  # a CSP violation would be a console error
            ids = tab.eval_on_selector_all("figure", "els => els.map(e => e.id)")
            assert ids == CHARTS
            for key in CHARTS:
                box = tab.locator(f"#{key} svg").bounding_box()
                assert box and box["width"] > 300 and box["height"] > 100, (key, box)
            # Axis text is drawn in currentColor: the page's scheme colours it.
            colors[scheme] = tab.eval_on_selector("#sends svg", "e => getComputedStyle(e).color")
            tab.screenshot(path=str(tmp_path / f"report-{scheme}.png"), full_page=True)
            context.close()
    assert colors["light"] != colors["dark"]


def test_the_report_is_never_written_into_the_public_archive(tmp_path: Path) -> None:
    cfg_path = tmp_path / "config.toml"
    cfg_path.write_text(f'[state]\ndatabase = "{tmp_path}/state.sqlite3"\n')
    r = report(cfg_path, "--out", str(tmp_path / "public" / "stats"))
    assert "must not be written into the public archive" in one_error_line(r)
