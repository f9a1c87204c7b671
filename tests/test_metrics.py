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

from publisher.state import Store

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
