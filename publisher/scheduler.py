"""`publisher run`: notice each new digest, publish it once, at the configured hour.

One `tick` is the whole job and the only road: build the site and feeds (a new digest joins them
at once; an edited one updates its entry in place), record what was seen in the state database,
then email every digest whose email is due under publisher/policy.py, through the same
`publish.send_digest` that `publisher send` uses. APScheduler 3 only decides when ticks run:

- an interval job every `[schedule] poll_seconds` (the first one at start, which is the catch-up
  after downtime), and
- a cron job at `[schedule] send_at` in site.timezone, so the send is on time however long the
  poll interval is.

Both run on a one-thread executor, so two ticks never overlap (max_instances=1, coalesce=True,
a misfire grace of `misfire_grace_hours`). Several `publisher run` (several machines on one
PostgreSQL) may run at once: the build and the bookkeeping of a tick hold a database lock, and
the sends are shared through the ledger's claims (publisher/delivery.py). SIGTERM/SIGINT set a
stop event: no new tick or send starts, the messages in flight are finished and recorded, and
the process exits 0.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
import threading
from dataclasses import dataclass, field

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .config import Config
from .digest import parse_file
from .errors import PublisherError
from .policy import arrived, email_due, next_send_moment, send_time, too_old
from .privacy import mask_addresses
from .progress import LogProgress
from .publish import send_digest
from .site import build_site
from .state import Store

log = logging.getLogger("publisher.run")

# State-database meta keys (read by `publisher status`, publisher/status.py).
META_PROBLEMS = "run:problems"
META_LAST_TICK = "run:last_tick"


@dataclass(slots=True)
class TickReport:
    built: int = 0
    new: list[dt.date] = field(default_factory=list)
    edited: list[dt.date] = field(default_factory=list)
    sent: list[dt.date] = field(default_factory=list)
    pending: list[tuple[dt.date, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def tick(
    cfg: Config,
    store: Store,
    *,
    now: dt.datetime | None = None,
    stop: threading.Event | None = None,
    secret: bytes | None = None,
) -> TickReport:
    """Build the site and feeds, record every digest seen, and send the emails that are due."""
    now = now or dt.datetime.now(dt.UTC)
    report = TickReport()
    # The duties that must happen once (the build, recording what was seen) run one process
    # at a time across every `publisher run` on this database; the sends below are shared.
    with store.lock("tick"):
        build = build_site(cfg)
        report.built = len(build.built)
        report.problems = [str(p) for p in build.problems]
        store.set_meta(META_PROBLEMS, json.dumps(report.problems, ensure_ascii=False))

        known = {pub.digest_date: pub for pub in store.list_publications()}  # one query a tick
        for day in build.built:
            pub = known.get(day.date)
            if pub is None:
                store.record_publication(day.date, day.source, day.sha)
                store.update_publication(day.date, feed_built_at=now.replace(tzinfo=None))
                report.new.append(day.date)
            elif pub.content_hash != day.sha or pub.source != day.source:
                # Edited after it was seen: the feed and page are rebuilt above; an email that
                # already went out is not sent again.
                store.record_publication(day.date, day.source, day.sha)
                store.update_publication(day.date, feed_built_at=now.replace(tzinfo=None))
                report.edited.append(day.date)

    for day in sorted(build.built, key=lambda d: d.date):
        if stop is not None and stop.is_set():
            break
        pub = known.get(day.date)
        if pub is None or day.date in report.edited:
            pub = store.get_publication(day.date)  # new or edited this tick: read it back
        if pub is None or pub.email_status == "sent":
            continue
        due = email_due(cfg, day.date, arrived(day.source, pub.created_at, now), now)
        if not due.due:
            if not too_old(cfg, day.date, now):
                report.pending.append((day.date, due.reason))
            continue
        try:
            digest = parse_file(day.source)
            log.info("sending %s (%s)", day.date, due.reason)
            result = send_digest(
                cfg,
                store,
                digest,
                # A send left partial (an SMTP outage) retries its temporary failures.
                retry_failed=pub.email_status == "partial",
                progress=LogProgress(every=10.0),
                stop=stop,
                secret=secret,
                # The send's notes (a skipped CSV row names its address) go to the log:
                # addresses masked there, as everywhere in `publisher run`'s log.
                log=lambda line: log.info("%s", mask_addresses(line)),
            )
        except PublisherError as exc:
            # An SMTP outage or a bad login: the send stays pending for a later tick.
            log.error("send of %s failed, will retry: %s", day.date, mask_addresses(str(exc)))
            report.pending.append((day.date, f"send failed: {exc}"))
            continue
        log.info("%s", result.summary())
        if result.ok:
            report.sent.append(day.date)
        else:
            report.pending.append((day.date, "partial: some subscribers not reached yet"))
    store.set_meta(META_LAST_TICK, now.isoformat(timespec="seconds"))
    return report


class Runner:
    """The long-running process: APScheduler jobs around `tick`, stopped by SIGTERM/SIGINT."""

    def __init__(self, cfg: Config, *, secret: bytes) -> None:
        self.cfg = cfg
        self.secret = secret
        self.stop = threading.Event()
        self._reported: set[str] = set()
        self.scheduler = BackgroundScheduler(
            timezone=cfg.tz,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(cfg.schedule.misfire_grace_hours * 3600),
            },
        )

    def _job(self) -> None:
        if self.stop.is_set():
            return
        try:
            with Store.open(self.cfg) as store:
                report = tick(self.cfg, store, stop=self.stop, secret=self.secret)
        except PublisherError as exc:
            log.error("%s", exc)
            return
        except Exception:  # a bug must not kill the scheduler: log it, try again next tick
            log.exception("tick failed")
            return
        for problem in report.problems:
            if problem not in self._reported:  # once per process, not every poll
                log.error("skipped digest: %s", problem)
        self._reported = set(report.problems)
        for date in report.new:
            log.info("new digest %s: in the feeds and the archive", date)
        for date in report.edited:
            log.info("digest %s changed: feed entry and page updated", date)

    def start(self) -> None:
        t = send_time(self.cfg)
        self.scheduler.add_job(
            self._job,
            IntervalTrigger(seconds=self.cfg.schedule.poll_seconds, timezone=self.cfg.tz),
            id="poll",
            next_run_time=dt.datetime.now(self.cfg.tz),  # at once: the catch-up
        )
        self.scheduler.add_job(
            self._job, CronTrigger(hour=t.hour, minute=t.minute, timezone=self.cfg.tz), id="send"
        )
        self.scheduler.start()
        nxt = next_send_moment(self.cfg, dt.datetime.now(dt.UTC))
        log.info(
            "publisher run: watching %s every %gs; emails at %s %s (next %s)%s",
            self.cfg.digests.inbox,
            self.cfg.schedule.poll_seconds,
            self.cfg.schedule.send_at,
            self.cfg.site.timezone,
            nxt.isoformat(timespec="minutes"),
            "; send on arrival" if self.cfg.schedule.send_on_arrival else "",
        )

    def shutdown(self) -> None:
        self.stop.set()
        # wait=True: the running tick sees `stop`, lets in-flight messages finish and records them.
        self.scheduler.shutdown(wait=True)


def run_forever(cfg: Config, *, secret: bytes, install_signals: bool = True) -> int:
    """Run until SIGTERM or SIGINT; return the exit status (0 after a clean stop)."""
    runner = Runner(cfg, secret=secret)
    if install_signals:

        def on_signal(signum: int, _frame: object) -> None:
            log.info(
                "%s: finishing the messages in flight, then stopping", signal.Signals(signum).name
            )
            runner.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    runner.start()
    while not runner.stop.wait(0.5):
        pass
    runner.shutdown()
    log.info("stopped")
    return 0
