"""What is wrong, and who hears of it: publisher/health.py's findings, `publisher status`'s exit
code and `--json`, `publisher run`'s alerts (logged once, mailed at most once per kind a day to
`[alerts] email` through a real SMTP server on loopback), and `GET /healthz` over real HTTP."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import logging
import os
from pathlib import Path

import httpx
import psycopg
import pytest

from publisher.alerts import Alerter
from publisher.config import Config, load_config
from publisher.health import META_PULL, Finding, exit_code, findings
from publisher.state import Store

from .conftest import run_publisher
from .pg import Cluster, state_toml
from .smtp_server import smtp_server
from .webhelpers import live_server, web_config

SECRET = base64.b64encode(os.urandom(32)).decode()
NOON = dt.datetime(2026, 3, 10, 3, 0, tzinfo=dt.UTC)  # 12:00 in Asia/Seoul


def project(tmp: Path, db_url: str, extra: str = "", smtp_port: int | None = None) -> Config:
    smtp = f'host = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n' if smtp_port else ""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.toml").write_text(
        f"""
[site]
timezone = "Asia/Seoul"
[email]
from = "Daily Papers <papers@example.org>"
[smtp]
{smtp}
{state_toml(db_url)}
{extra}
"""
    )
    return load_config(tmp / "config.toml")


def status(cfg: Config, *args: str):  # noqa: ANN201
    env = {**os.environ, "PUBLISHER_SECRET": SECRET}
    return run_publisher("status", "--config", str(cfg.path), *args, cwd=cfg.root, env=env)


def test_a_healthy_state_exits_0_and_each_finding_raises_the_code(
    tmp_path: Path, db_url: str
) -> None:
    """`publisher status`: 0 when nothing is wrong, 1 on a warning (a late digest), 2 on an
    error (pulls failing); `--json` says the same to a machine."""
    cfg = project(tmp_path, db_url, '[schedule]\nexpect_by = "00:00"\n')
    with Store.open(cfg) as store:
        today = dt.datetime.now(cfg.tz).date()
        store.record_publication(today, "inbox/today.md", "sha")
    r = status(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "health: ok" in r.stdout

    with Store.open(cfg) as store:
        # Only yesterday's digest: today's has not come, and expect_by (00:00) has passed.
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM publications")
        store.record_publication(today - dt.timedelta(days=1), "inbox/y.md", "sha")
    r = status(cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"warning: late-digest: no digest dated {today} has arrived by 00:00" in r.stdout

    git_cfg = project(
        tmp_path / "git",
        db_url,
        '[digests]\ngit = "file:///nowhere.git"\n[alerts]\npull_failures = 2\n',
    )
    with Store.open(git_cfg) as store:
        store.set_meta(
            META_PULL,
            json.dumps(
                {
                    "at": "2026-03-10T03:00:00+00:00",
                    "ok": False,
                    "failures": 2,
                    "error": "git fetch failed: repository not found",
                }
            ),  # fmt: skip
        )
    r = status(git_cfg, "--json")
    assert r.returncode == 2, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["health"] == "errors" and report["exit"] == 2
    kinds = {f["kind"]: f for f in report["findings"]}
    assert kinds["pull-failing"]["severity"] == "error"
    assert "repository not found" in kinds["pull-failing"]["message"]
    assert report["upstream"]["failures"] == 2


def test_a_recent_send_with_failures_and_a_stuck_claim_are_found(
    tmp_path: Path, db_url: str
) -> None:
    cfg = project(tmp_path, db_url)
    cfg = dataclasses.replace(cfg, state=dataclasses.replace(cfg.state, lease_seconds=60))
    day = dt.datetime.now(cfg.tz).date()
    with Store.open(cfg) as store:
        store.add_subscriber("ada@example.com")
        store.add_subscriber("alan@example.com")
        store.record_publication(day, "inbox/d.md", "sha")
        assert findings(cfg, store) == []
        store.update_publication(day, email_status="partial", sent=1, failed=1)
        store.queue_pending(day)
        # A sender claimed both rows and died: its lease ended two leases ago.
        assert len(store.claim(day, "dead-host:1", 10, -120)) == 2
        found = {f.kind: f for f in findings(cfg, store)}
    assert set(found) == {"send-failures", "stuck-send"}
    assert found["stuck-send"].severity == "error"
    assert found["stuck-send"].message.startswith("2 messages are claimed by a sender")
    assert "ended with 1 failed of 2 (partial)" in found["send-failures"].message
    assert exit_code(list(found.values())) == 2


def test_the_stuck_send_question_reads_each_editions_queued_rows_not_the_ledger(
    tmp_path: Path, db_url: str
) -> None:
    """`status`, /healthz and the alerts ask it on every call: its plan reads the queued rows
    of each edition through ix_ledger_digest_status (digest_date, status, edition), never the whole
    ledger, which holds every reader of 90 days. (Sequential scans are turned off on PostgreSQL
    so the plan shows what the planner can use, whatever the table's size here.)"""
    import sqlalchemy as sa

    from publisher.state.claims import abandoned_query

    with Store(db_url) as store, store.engine.connect() as conn:
        # PostgreSQL: a month's partition, with the index's copy (its own name) to be used
        store.ensure_ledger_partition(dt.date(2025, 12, 31))
        query = abandoned_query(dt.datetime(2026, 1, 1))
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SET enable_seqscan = off"))
            plan = " ".join(r[0] for r in conn.execute(sa.text(f"EXPLAIN {sql}")))
            assert "Seq Scan on ledger" not in plan, plan
            # the partition's copy of ix_ledger_digest_status, named by PostgreSQL
            assert "Index Scan using ledger_y2025m12_digest_date_status_edition_idx" in plan, plan
        else:
            plan = " ".join(r[-1] for r in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "SCAN ledger" not in plan, plan
            assert "ix_ledger_digest_status" in plan, plan


def test_alerts_are_logged_once_and_mailed_once_per_kind_a_day(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two `run` processes (two Alerters on one database) see the same finding: it is logged
    once by each, mailed once in all; the next day it is mailed again. A refused mail gives its
    claim back, so the next tick sends it."""
    with smtp_server() as (recorder, port):
        cfg = project(
            tmp_path,
            f"sqlite:///{tmp_path}/state.sqlite3",
            '[alerts]\nemail = "ops@example.org"\n',
            smtp_port=port,
        )
        late = Finding("late-digest", "2026-03-10", "warning", "no digest dated 2026-03-10")
        log = logging.getLogger("publisher.run")
        caplog.set_level(logging.WARNING, logger="publisher.run")
        with Store.open(cfg) as store:
            one, two = Alerter(cfg, log), Alerter(cfg, log)
            recorder.refuse_rcpt.add("ops@example.org")
            one(store, [late], NOON)
            assert recorder.messages == []
            assert any("could not mail the alert" in r.getMessage() for r in caplog.records)
            recorder.refuse_rcpt.clear()
            caplog.clear()
            two(store, [late], NOON)  # the claim was given back: this one mails
            one(store, [late], NOON)  # already logged by this process, already mailed today
            two(store, [late], NOON + dt.timedelta(hours=1))
            assert len(recorder.messages) == 1
            alerts = [r for r in caplog.records if r.getMessage().startswith("alert: ")]
            assert len(alerts) == 1 and alerts[0].levelname == "WARNING"
            one(store, [], NOON)  # it cleared for process one
            one(store, [late], NOON + dt.timedelta(days=1))  # and came back the next day
            assert len(recorder.messages) == 2
        msg = recorder.to("ops@example.org")[0]
        assert msg["Subject"] == "[Daily Papers] warning: late-digest 2026-03-10"
        assert msg["Auto-Submitted"] == "auto-generated"
        body = msg.get_body(("plain",)).get_content()
        assert "no digest dated 2026-03-10" in body


def test_healthz_answers_200_and_503_without_details(
    tmp_path: Path, pg_cluster: Cluster, pg_url: str
) -> None:
    """Over real HTTP: 200 while PostgreSQL answers; 503 with nothing about the database once
    it stops taking connections (sessions ended, new ones refused)."""
    store = Store(pg_url)
    name = pg_url.rsplit("/", 1)[1]
    admin = psycopg.connect(
        host="127.0.0.1", port=pg_cluster.port, user=pg_cluster.user, dbname="postgres"
    )
    admin.autocommit = True

    def make_app(base: str):  # noqa: ANN202
        from publisher.web import create_app

        return create_app(web_config(tmp_path, base), secret=SECRET.encode(), store=store)

    try:
        with live_server(make_app) as base:
            up = httpx.get(base + "healthz")
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            down = httpx.get(base + "healthz")
    finally:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        admin.close()
        store.close()
    assert (up.status_code, up.text) == (200, "ok\n")
    assert (down.status_code, down.text) == (503, "unavailable\n")
    assert down.headers["cache-control"] == "no-store"
    assert down.headers["x-content-type-options"] == "nosniff"
