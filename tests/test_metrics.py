"""`GET /metrics` over real HTTP after a real send: every metric equals what the state database
says (queried here with plain SQL, not through publisher/metrics.py), and the endpoint is never
public: a client that came through a proxy, or without the bearer token, gets 404."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from publisher import metrics
from publisher.delivery.pipe import PROCESS_TOTALS
from publisher.state import ChoiceUpdate, Store

from .monitorhelpers import SECRET, operated_project
from .webhelpers import live_server


def scrape(base: str, **headers: str) -> httpx.Response:
    return httpx.get(base + "metrics", headers=headers)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_equal_the_database_after_a_send_with_bounces_and_complaints(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, today = operated_project(tmp_path, db_url)
    store = Store.open(cfg)
    # The web's actions, through the store as the web makes them (bob's unsubscribe and
    # grace's complaint come from operated_project): a signup, its confirmation, a change.
    store.add_subscriber("new@example.com", status="pending", source="web", action="signup")
    store.resubscribe("new@example.com", "", "web", "confirm")
    store.set_choice("new@example.com", ChoiceUpdate(cadence="paused"), "web")

    def make_app(base: str):  # noqa: ANN202
        from publisher.web import create_app

        return create_app(cfg, secret=SECRET.encode(), store=store)

    monkeypatch.setenv("PUBLISHER_METRICS_TOKEN", "scrape-token-4b1f0c")
    try:
        with live_server(make_app) as base:
            local = scrape(base)
            proxied = scrape(base, **{"X-Forwarded-For": "203.0.113.9"})
            wrong = scrape(base, **{"X-Forwarded-For": "203.0.113.9"}, Authorization="Bearer x")
            bearer = scrape(
                base,
                **{"X-Forwarded-For": "203.0.113.9"},
                Authorization="Bearer scrape-token-4b1f0c",
            )
    finally:
        store.close()
    assert local.status_code == 200, local.text
    assert local.headers["content-type"].startswith("text/plain; version=")
    assert (proxied.status_code, wrong.status_code, bearer.status_code) == (404, 404, 200)
    assert "publisher_" not in proxied.text

    got = samples(local.text)
    engine = sa.create_engine(cfg.database_url)
    with engine.connect() as conn:
        by_status = conn.execute(
            sa.text("SELECT status, source, count(*) FROM subscribers GROUP BY status, source")
        ).all()
        ledger = dict(
            conn.execute(
                sa.text(
                    "SELECT status, count(*) FROM ledger WHERE digest_date = :d GROUP BY status"
                ),
                {"d": today},
            ).all()
        )
        kinds = dict(
            conn.execute(
                sa.text(
                    "SELECT kind, count(DISTINCT email) FROM bounce_events "
                    "WHERE digest_date = :d GROUP BY kind"
                ),
                {"d": today},
            ).all()
        )
        totals = conn.execute(sa.text("SELECT sum(sent), sum(failed) FROM publications")).one()
        actions = dict(
            conn.execute(sa.text("SELECT action, count(*) FROM audit_log GROUP BY action")).all()
        )
        cadences = dict(
            conn.execute(
                sa.text(
                    "SELECT cadence, count(*) FROM subscribers WHERE status = 'active' "
                    "GROUP BY cadence"
                )
            ).all()
        )
    engine.dispose()

    subs = {k: v for k, v in got.items() if k[0] == "publisher_subscribers"}
    assert subs == {
        ("publisher_subscribers", (("source", source), ("status", status))): float(n)
        for status, source, n in by_status
    }
    assert ("publisher_subscribers", (("source", "csv"), ("status", "unsubscribed"))) in subs
    assert ("publisher_subscribers", (("source", "csv"), ("status", "bounced"))) in subs

    def one(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert (ledger.get("sent"), ledger.get("failed")) == (4, 1)
    assert one("publisher_last_send_messages", outcome="sent") == ledger["sent"]
    assert one("publisher_last_send_messages", outcome="failed") == ledger["failed"]
    bounced = kinds.get("hard", 0) + kinds.get("soft", 0) + kinds.get("blocked", 0)
    assert bounced == 1 and kinds.get("complaint") == 1
    assert one("publisher_last_send_messages", outcome="bounced") == bounced
    assert one("publisher_last_send_messages", outcome="complained") == kinds["complaint"]
    assert one("publisher_last_send_bounce_ratio") == pytest.approx(bounced / 5)
    assert one("publisher_last_send_complaint_ratio") == pytest.approx(1 / 4)
    assert one("publisher_messages_sent") == totals[0]
    assert one("publisher_messages_failed") == totals[1]
    assert one("publisher_ledger_pending_messages") == 0
    assert one("publisher_ledger_oldest_pending_age_seconds") == 0
    midnight = dt.datetime.combine(today, dt.time(), dt.UTC).timestamp()
    assert one("publisher_last_send_digest_date_seconds") == midnight
    assert one("publisher_last_digest_date_seconds") == midnight
    duration = one("publisher_last_send_duration_seconds")
    assert duration >= 0
    if duration:
        assert one("publisher_last_send_messages_per_second") == pytest.approx(4 / duration)
    # Counters from the audit trail, and active readers by cadence.
    assert (actions["signup"], actions["confirm"], actions["preferences"]) == (1, 1, 1)
    assert actions["unsubscribe"] == 1 and actions["complaint"] == 1  # bob; grace
    assert one("publisher_signups_total") == actions["signup"]
    assert one("publisher_confirmations_total") == actions["confirm"]
    assert one("publisher_unsubscribes_total") == actions["unsubscribe"]
    assert one("publisher_preference_changes_total") == actions["preferences"]
    for cadence in ("daily", "weekly", "paused"):
        got_n = one("publisher_active_subscribers_by_cadence", cadence=cadence)
        assert got_n == cadences.get(cadence, 0), cadence
    assert one("publisher_active_subscribers_by_cadence", cadence="paused") == 1
    # Per process: the send ran in another process (`publisher send`), so this one's
    # counters are this process's own.
    assert one("publisher_process_messages_sent_total") == PROCESS_TOTALS.sent


def test_process_counters_count_this_process_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-process counters grow by what a send in this process delivered."""
    from publisher.delivery import deliver

    from .deliveryhelpers import DAY, build, subscribe, write_config
    from .smtp_server import Recorder, start_server

    monkeypatch.setenv("PUBLISHER_SECRET", "cl-f12h7C1OgApZIuYcnLWJm7FUGhr0iR65awG7cH9k")
    recorder = Recorder()
    recorder.refuse_rcpt.add("gone@example.com")
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port)
        with Store.open(cfg) as store:
            subscribe(cfg, store, ["a@example.com", "b@example.com", "gone@example.com"])
            registry = metrics.registry_for(store)
            before = (
                registry.get_sample_value("publisher_process_messages_sent_total"),
                registry.get_sample_value("publisher_process_messages_failed_total"),
            )
            report = deliver(cfg, store, DAY, build)
            after = (
                registry.get_sample_value("publisher_process_messages_sent_total"),
                registry.get_sample_value("publisher_process_messages_failed_total"),
            )
    finally:
        server.stop()
    assert (report.sent, report.failed) == (2, 1)
    assert after[0] - before[0] == 2 and after[1] - before[1] == 1
