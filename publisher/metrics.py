"""`GET /metrics` on `publisher serve`: the Prometheus text format, through prometheus_client.

Every value is read from the state database at scrape time, so any number of `serve` processes
report the same numbers, and one scrape is one round trip: a single UNION ALL of small
aggregates (`_QUERY`), each answered from an index (subscribers' status and (status, cadence),
ledger's (digest_date, status), bounce_events' (digest_date, kind), audit_log's (action, at),
the publications' primary key).

Two counters are per process, not from the database: `publisher_process_messages_sent` and
`_failed` count what the sends run by the process answering the scrape delivered since it
started (`publisher.delivery.pipe.PROCESS_TOTALS`); each process has its own, and a restart
resets them.

Names follow Prometheus' conventions: a `publisher_` prefix, units in the name (`_seconds`,
`_ratio`), labels with few values. Nothing here counts opens or clicks: publisher does not
track readers.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .delivery.pipe import PROCESS_TOTALS
from .state import SendStatus, Store
from .state.lifecycle import Action
from .state.schema import (
    ACTIVE,
    audit_log,
    bounce_events,
    ledger,
    meta,
    publications,
    subscribers,
)

_STR = sa.String(1000)

# The audit trail's actions /metrics counts (publisher_<name>_total): each an index range of
# audit_log's (action, at).
AUDIT_COUNTERS = {
    Action.SIGNUP: ("signups", "Web signups (new pending readers), from the audit trail."),
    Action.CONFIRM: ("confirmations", "Confirmed web signups, from the audit trail."),
    Action.UNSUBSCRIBE: (
        "unsubscribes",
        "Unsubscribes (link, preferences, mailto, `subscribers remove`), from the audit trail.",
    ),
    Action.PREFERENCES: (
        "preference_changes",
        "Changes of cadence, topics or cap (web, `subscribers set`), from the audit trail.",
    ),
}


class ProcessCollector(Collector):
    """Per process: what the sends run by THIS process delivered since it started
    (publisher.delivery.pipe.PROCESS_TOTALS, reset when the process restarts). Every process
    keeps its own; the database-backed numbers of StateCollector are the same from any
    `serve`."""

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "publisher_process_messages_sent",
            "Messages this process sent (per process, since it started).",
            value=PROCESS_TOTALS.sent,
        )
        yield CounterMetricFamily(
            "publisher_process_messages_failed",
            "Messages this process failed to send (per process, since it started).",
            value=PROCESS_TOTALS.failed,
        )


def _row(name: str, label: Any, value: Any) -> sa.Select[Any]:
    return sa.select(
        sa.literal(name, _STR).label("name"),
        sa.cast(label, _STR).label("label"),
        sa.cast(value, _STR).label("value"),
    )


# The daily editions' rows (a weekly edition's row is filed under its week's Monday, beside
# that day's daily row): the "last send" and "newest digest" are the daily ones.
_DAILY = publications.c.edition == "daily"


def _latest_send() -> Any:
    """The digest date of the newest send that started."""
    return (
        sa.select(publications.c.digest_date)
        .where(publications.c.email_started_at.is_not(None), _DAILY)
        .order_by(publications.c.digest_date.desc())
        .limit(1)
        .scalar_subquery()
    )


def _query() -> sa.CompoundSelect:
    pub, queued = publications.c, ledger.c.status == SendStatus.QUEUED
    latest = _latest_send()

    def last(column: Any) -> Any:  # a column of the latest send's row
        return sa.select(column).where(pub.digest_date == latest, _DAILY).scalar_subquery()

    newest = sa.select(sa.func.max(pub.digest_date)).where(_DAILY).scalar_subquery()
    arrived = sa.select(pub.created_at).where(pub.digest_date == newest, _DAILY).scalar_subquery()
    pending = sa.select(sa.func.count()).where(queued).scalar_subquery()
    oldest = sa.select(sa.func.min(ledger.c.updated_at)).where(queued).scalar_subquery()
    sent = sa.select(sa.func.coalesce(sa.func.sum(pub.sent), 0)).scalar_subquery()
    failed = sa.select(sa.func.coalesce(sa.func.sum(pub.failed), 0)).scalar_subquery()
    status_source = subscribers.c.status + sa.literal("|") + subscribers.c.source
    return sa.union_all(
        sa.select(
            sa.literal("subscribers", _STR),
            sa.cast(status_source, _STR),
            sa.cast(sa.func.count(), _STR),
        ).group_by(subscribers.c.status, subscribers.c.source),
        _row("pending", "", pending),
        _row("oldest_pending", "", oldest),
        _row("sent_total", "", sent),
        _row("failed_total", "", failed),
        sa.select(
            sa.literal("last_send_kind", _STR),
            sa.cast(bounce_events.c.kind, _STR),
            sa.cast(sa.func.count(sa.distinct(bounce_events.c.email)), _STR),
        )
        .where(bounce_events.c.digest_date == latest)
        .group_by(bounce_events.c.kind),
        _row("last_send", "digest", latest),
        _row("last_send", "sent", last(pub.sent)),
        _row("last_send", "failed", last(pub.failed)),
        _row("last_send", "started", last(pub.email_started_at)),
        _row("last_send", "finished", last(pub.email_finished_at)),
        _row("newest_digest", "date", newest),
        _row("newest_digest", "arrived", arrived),
        sa.select(
            sa.literal("meta", _STR), sa.cast(meta.c.key, _STR), sa.cast(meta.c.value, _STR)
        ).where(meta.c.key.in_(("run:pull", "run:last_tick"))),
        sa.select(
            sa.literal("cadence", _STR),
            sa.cast(subscribers.c.cadence, _STR),
            sa.cast(sa.func.count(), _STR),
        )
        .where(subscribers.c.status == ACTIVE)
        .group_by(subscribers.c.cadence),
        *(
            _row("audit", sa.literal(str(action), _STR), _count_action(action))
            for action in AUDIT_COUNTERS
        ),
    )


def _count_action(action: str) -> Any:
    return sa.select(sa.func.count()).where(audit_log.c.action == action).scalar_subquery()


def _time(text: str | None) -> dt.datetime | None:
    """A timestamp as either database casts it to text (naive UTC), or as `run` stored it."""
    if not text:
        return None
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _epoch(moment: dt.datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def read(store: Store) -> dict[str, Any]:
    """Everything /metrics shows, in one round trip to the database."""
    with store.engine.connect() as conn:
        rows = conn.execute(_query()).all()
    out: dict[str, Any] = {
        "subscribers": {},
        "last_send_kind": {},
        "last_send": {},
        "meta": {},
        "cadence": {},
        "audit": {},
    }
    for name, label, value in rows:
        if name in ("subscribers", "last_send_kind", "cadence", "audit"):
            out[name][label] = int(value)
        elif name in ("last_send", "newest_digest", "meta"):
            out.setdefault(name, {})[label] = value
        else:
            out[name] = value
    return out


class StateCollector(Collector):
    """A prometheus_client collector that reads the state database on every scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        data = read(self.store)
        now = dt.datetime.now(dt.UTC)

        subs = GaugeMetricFamily(
            "publisher_subscribers",
            "Subscribers by status and by where they came from (csv, web, cli).",
            labels=["status", "source"],
        )
        for key, n in sorted(data["subscribers"].items()):
            status, _, source = key.partition("|")
            subs.add_metric([status, source], n)
        yield subs

        cadences = GaugeMetricFamily(
            "publisher_active_subscribers_by_cadence",
            "Active readers by cadence (daily, weekly, paused).",
            labels=["cadence"],
        )
        for cadence in ("daily", "weekly", "paused"):
            cadences.add_metric([cadence], data["cadence"].get(cadence, 0))
        yield cadences

        for action, (name, doc) in AUDIT_COUNTERS.items():
            yield CounterMetricFamily(
                f"publisher_{name}", doc, value=data["audit"].get(str(action), 0)
            )

        yield GaugeMetricFamily(
            "publisher_ledger_pending_messages",
            "Messages queued in the ledger and not yet sent or failed.",
            value=int(data["pending"] or 0),
        )
        oldest = _time(data["oldest_pending"])
        yield GaugeMetricFamily(
            "publisher_ledger_oldest_pending_age_seconds",
            "Age of the oldest message still queued (0 when none is).",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )
        # Sums over the publications' counts: they only grow, like counters, until a
        # publication row is deleted by hand.
        yield GaugeMetricFamily(
            "publisher_messages_sent",
            "Messages accepted by the SMTP server (or the outbox), all digests.",
            value=int(data["sent_total"] or 0),
        )
        yield GaugeMetricFamily(
            "publisher_messages_failed",
            "Messages that failed, all digests.",
            value=int(data["failed_total"] or 0),
        )

        last = data["last_send"]
        if last.get("digest"):
            sent, failed = int(last["sent"] or 0), int(last["failed"] or 0)
            kinds = data["last_send_kind"]
            bounced = kinds.get("hard", 0) + kinds.get("soft", 0) + kinds.get("blocked", 0)
            day = dt.date.fromisoformat(last["digest"][:10])
            yield GaugeMetricFamily(
                "publisher_last_send_digest_date_seconds",
                "The digest date of the newest send (midnight UTC, as a Unix time).",
                value=dt.datetime.combine(day, dt.time(), dt.UTC).timestamp(),
            )
            per = GaugeMetricFamily(
                "publisher_last_send_messages",
                "The newest send's messages by outcome (bounced, complained: from reports).",
                labels=["outcome"],
            )
            per.add_metric(["sent"], sent)
            per.add_metric(["failed"], failed)
            per.add_metric(["bounced"], bounced)
            per.add_metric(["complained"], kinds.get("complaint", 0))
            yield per
            yield GaugeMetricFamily(
                "publisher_last_send_bounce_ratio",
                "Readers of the newest send who bounced, over the messages attempted.",
                value=bounced / max(sent + failed, 1),
            )
            yield GaugeMetricFamily(
                "publisher_last_send_complaint_ratio",
                "Readers of the newest send who complained, over the messages sent.",
                value=kinds.get("complaint", 0) / max(sent, 1),
            )
            started, finished = _time(last["started"]), _time(last["finished"])
            if started and finished:
                seconds = max((finished - started).total_seconds(), 0.0)
                yield GaugeMetricFamily(
                    "publisher_last_send_duration_seconds",
                    "How long the newest finished send took.",
                    value=seconds,
                )
                yield GaugeMetricFamily(
                    "publisher_last_send_messages_per_second",
                    "Messages sent per second in the newest finished send.",
                    value=sent / seconds if seconds else 0.0,
                )

        newest = data.get("newest_digest", {})
        if newest.get("date"):
            day = dt.date.fromisoformat(newest["date"][:10])
            yield GaugeMetricFamily(
                "publisher_last_digest_date_seconds",
                "The newest digest's date (midnight UTC, as a Unix time).",
                value=dt.datetime.combine(day, dt.time(), dt.UTC).timestamp(),
            )
            arrived = _epoch(_time(newest.get("arrived")))
            if arrived is not None:
                yield GaugeMetricFamily(
                    "publisher_last_digest_arrival_seconds",
                    "When the newest digest was first seen (Unix time).",
                    value=arrived,
                )

        tick = _epoch(_time(data["meta"].get("run:last_tick")))
        if tick is not None:
            yield GaugeMetricFamily(
                "publisher_run_last_tick_seconds",
                "When `publisher run` last polled (Unix time).",
                value=tick,
            )
        if pulled := data["meta"].get("run:pull"):
            state = json.loads(pulled)
            yield GaugeMetricFamily(
                "publisher_pull_failures",
                "Failed pulls of [digests] git in a row (0: the last one worked).",
                value=state["failures"],
            )
            if state["ok"]:
                yield GaugeMetricFamily(
                    "publisher_last_pull_success_seconds",
                    "When the last pull of [digests] git succeeded (Unix time).",
                    value=_epoch(_time(state["at"])),
                )


def registry_for(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(store))
    registry.register(ProcessCollector())
    return registry
