"""`publisher run`: notice each new digest, publish it once, at the configured hour.

Two steps, the only road: `build_step` builds the site and feeds (a new digest joins them at
once; an edited one updates its entry in place) and records what was seen in the state
database; `send_step` emails every recorded digest whose email is due under
publisher/policy.py, through the same `publish.send_digest` that `publisher send` uses, and
retries a partial send's failed rows at most `[schedule] retry_failed_times` times,
`retry_failed_hours` apart (then the digest's email is `final`). `tick` runs both, one after the
other. APScheduler 3 only decides when they run, as two jobs on two one-thread executors, so a
long send (a slow server, a 4xx storm) never holds back the build of a new digest:

- `build` every `[schedule] poll_seconds` (the first one at start, which is the catch-up after
  downtime);
- `send` every `poll_seconds` and at `[schedule] send_at` in site.timezone (so the send is on
  time however long the poll interval is), and at once after a build that found a new digest;
- `compact` once a day, twelve hours after `send_at` (and once at start): the ledger of editions
  older than `[state] keep_ledger_days` is folded into counts (publisher/state/compaction.py),
  in short batches on its own executor, so it never holds back a build or a send.

Each job has max_instances=1, coalesce=True and a misfire grace of `misfire_grace_hours`; a job
that is skipped because its previous run still goes on is logged once per run of skips. Several
`publisher run` (several machines on one PostgreSQL) may run at once: the build and its
bookkeeping hold a database lock, and the sends are shared through the ledger's claims
(publisher/delivery/). SIGTERM/SIGINT set a stop event: no new step or send starts, the
messages in flight are finished and recorded, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .alerts import Alerter
from .config import Config, load_config
from .digest import parse_file
from .editions import Week
from .errors import DigestError, PublisherError
from .health import META_LAST_TICK, META_PROBLEMS, META_PULL, findings
from .policy import (
    arrived,
    email_due,
    next_send_moment,
    partial_retry,
    send_time,
    too_old,
    weekly_due,
)
from .privacy import mask_addresses
from .progress import LogProgress
from .publish import send_digest, send_weekly, week_digests
from .pull import pull
from .site import build_site
from .state import EmailStatus, Store
from .state.compaction import compact
from .state.protocols import PublicationsStore, PublishStore
from .state.schema import WEEKLY

log = logging.getLogger("publisher.run")


@dataclass(slots=True)
class TickReport:
    built: int = 0
    new: list[dt.date] = field(default_factory=list)
    edited: list[dt.date] = field(default_factory=list)
    sent: list[dt.date] = field(default_factory=list)
    pending: list[tuple[dt.date, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Digests whose failed rows were retried retry_failed_times times: final from now on.
    final: list[tuple[dt.date, int]] = field(default_factory=list)  # (date, readers without it)
    # The weekly edition (`weekly_step`): the weeks sent, pending (why), final (readers without).
    weekly_sent: list[Week] = field(default_factory=list)
    weekly_pending: list[tuple[Week, str]] = field(default_factory=list)
    weekly_final: list[tuple[Week, int]] = field(default_factory=list)


def tick(
    cfg: Config,
    store: PublishStore,
    *,
    now: dt.datetime | None = None,
    stop: threading.Event | None = None,
    secret: bytes | None = None,
) -> TickReport:
    """Build the site and feeds, record every digest seen, and send the emails that are due:
    `build_step` then `send_step`, the two jobs of `publisher run`, one after the other."""
    now = now or dt.datetime.now(dt.UTC)
    report = build_step(cfg, store, now=now)
    return send_step(cfg, store, now=now, stop=stop, secret=secret, report=report)


def build_step(
    cfg: Config, store: PublicationsStore, *, now: dt.datetime | None = None
) -> TickReport:
    """Build the site and feeds and record every digest seen (new or edited) in the state
    database. Never waits for a send: a new digest is in the feeds whatever is being mailed."""
    now = now or dt.datetime.now(dt.UTC)
    report = TickReport()
    # The duties that must happen once (the build, recording what was seen) run one process
    # at a time across every `publisher run` on this database; the sends are shared.
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
    store.set_meta(META_LAST_TICK, now.isoformat(timespec="seconds"))
    return report


def send_step(
    cfg: Config,
    store: PublishStore,
    *,
    now: dt.datetime | None = None,
    stop: threading.Event | None = None,
    secret: bytes | None = None,
    report: TickReport | None = None,
) -> TickReport:
    """Send the emails that are due, from the publications `build_step` recorded.

    A partial send (some readers failed with 4xx until max_attempts) has its failed rows
    retried at most `[schedule] retry_failed_times` times, `retry_failed_hours` apart, then
    its email is `final`; rows still queued (a send stopped by SIGTERM) are sent at once."""
    now = now or dt.datetime.now(dt.UTC)
    report = report or TickReport()
    for pub in sorted(store.list_publications(), key=lambda p: p.digest_date):
        if stop is not None and stop.is_set():
            break
        if (
            pub.email_status in (EmailStatus.SENT, EmailStatus.FINAL)
            or not Path(pub.source).is_file()
        ):
            continue  # done, or no longer in the inbox (the build says so)
        retry_failed = False
        if pub.email_status == EmailStatus.PARTIAL:
            if too_old(cfg, pub.digest_date, now):
                continue
            retry = partial_retry(cfg, pub, store.count_pending(pub.digest_date), now)
            if retry.final:
                unsent = store.unsent_active(pub.digest_date)
                store.update_publication(pub.digest_date, email_status=EmailStatus.FINAL)
                report.final.append((pub.digest_date, unsent))
                continue
            if not retry.send:
                report.pending.append((pub.digest_date, retry.reason))
                continue
            retry_failed, reason = retry.retry_failed, retry.reason
        else:
            due = email_due(cfg, pub.digest_date, arrived(pub.source, pub.created_at, now), now)
            if not due.due:
                if not too_old(cfg, pub.digest_date, now):
                    report.pending.append((pub.digest_date, due.reason))
                continue
            reason = due.reason
        try:
            digest = parse_file(pub.source)
        except DigestError:
            continue  # edited into something that is not a digest: the build reports it, once
        if retry_failed:
            # Counted before the send: a retry that crashes half-way is still a retry. (Two
            # `run` processes starting the same retry both write the same number.)
            store.update_publication(pub.digest_date, email_retries=pub.email_retries + 1)
        try:
            log.info("sending %s (%s)", pub.digest_date, reason)
            result = send_digest(
                cfg,
                store,
                digest,
                retry_failed=retry_failed,
                progress=LogProgress(every=10.0),
                stop=stop,
                secret=secret,
                # The send's notes (a skipped CSV row names its address) go to the log:
                # addresses masked there, as everywhere in `publisher run`'s log.
                log=lambda line: log.info("%s", mask_addresses(line)),
            )
        except PublisherError as exc:
            # An SMTP outage or a bad login: the send stays pending for a later tick.
            log.error(
                "send of %s failed, will retry: %s", pub.digest_date, mask_addresses(str(exc))
            )
            report.pending.append((pub.digest_date, f"send failed: {exc}"))
            continue
        log.info("%s", result.summary())
        if result.ok:
            report.sent.append(pub.digest_date)
        else:
            report.pending.append((pub.digest_date, "partial: some subscribers not reached yet"))
    if stop is None or not stop.is_set():
        weekly_step(cfg, store, now=now, stop=stop, secret=secret, report=report)
    return report


def weekly_step(
    cfg: Config,
    store: PublishStore,
    *,
    now: dt.datetime | None = None,
    stop: threading.Event | None = None,
    secret: bytes | None = None,
    report: TickReport | None = None,
) -> TickReport:
    """Send the weekly edition of the last complete week (in site.timezone) when it is due
    (`policy.weekly_due`: `[schedule] weekly_day` at `send_at`, the daily send's misfire rule),
    through `publish.send_weekly`; a partial one is resumed and its failed rows retried as a
    daily send's are. Part of `send_step`, so of the send job."""
    now = now or dt.datetime.now(dt.UTC)
    report = report or TickReport()
    week = Week.last_complete(now.astimezone(cfg.tz).date())
    pub = store.get_publication(week.monday, edition=WEEKLY)
    retry_failed = False
    if pub is not None and pub.email_status in (EmailStatus.SENT, EmailStatus.FINAL):
        return report
    if pub is not None and pub.email_status == EmailStatus.PARTIAL:
        retry = partial_retry(cfg, pub, store.count_pending(week.monday, edition=WEEKLY), now)
        if retry.final:
            unsent = store.unsent_active(week.monday, edition=WEEKLY)
            store.update_publication(week.monday, edition=WEEKLY, email_status=EmailStatus.FINAL)
            report.weekly_final.append((week, unsent))
            return report
        if not retry.send:
            report.weekly_pending.append((week, retry.reason))
            return report
        retry_failed, reason = retry.retry_failed, retry.reason
    elif pub is not None and pub.email_status == EmailStatus.SENDING:
        reason = "resuming a send that stopped"
    else:
        due = weekly_due(cfg, week, now)
        if not due.due:
            if due.at is not None:  # waiting; not a week too old to be sent automatically
                report.weekly_pending.append((week, due.reason))
            return report
        reason = due.reason
    digests = week_digests(cfg, week)
    if not digests:
        return report  # no digest that week: no weekly edition
    if retry_failed and pub is not None:
        store.update_publication(week.monday, edition=WEEKLY, email_retries=pub.email_retries + 1)
    try:
        log.info("sending the weekly edition of %s (%s)", week, reason)
        result = send_weekly(
            cfg,
            store,
            week,
            digests=digests,
            retry_failed=retry_failed,
            progress=LogProgress(every=10.0),
            stop=stop,
            secret=secret,
            log=lambda line: log.info("%s", mask_addresses(line)),
        )
    except PublisherError as exc:
        log.error("weekly send of %s failed, will retry: %s", week, mask_addresses(str(exc)))
        report.weekly_pending.append((week, f"send failed: {exc}"))
        return report
    log.info("%s", result.summary())
    if result.ok:
        report.weekly_sent.append(week)
    else:
        report.weekly_pending.append((week, "partial: some subscribers not reached yet"))
    return report


class _Skips:
    """APScheduler's "skipped: maximum number of running instances reached" said once per run
    of skips of a job (it said it on every poll while a long send ran), and how many there were
    once the job ends."""

    MESSAGE = "maximum number of running instances reached"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """A logging filter for the `apscheduler.scheduler` logger: drop its skip warnings."""
        return self.MESSAGE not in record.getMessage()

    def on_event(self, event: JobEvent) -> None:
        with self.lock:
            if event.code == EVENT_JOB_MAX_INSTANCES:
                n = self.counts.get(event.job_id, 0)
                self.counts[event.job_id] = n + 1
                if n == 0:
                    log.warning(
                        "%s tick skipped: the previous one is still running "
                        "(said once until it ends)",
                        event.job_id,
                    )
            else:  # it ran: a later run of skips is said again
                n = self.counts.pop(event.job_id, 0)
                if n:
                    log.info(
                        "%s tick: %d ticks skipped while the previous one ran", event.job_id, n
                    )


class Runner:
    """The long-running process: two APScheduler jobs, `build` (every poll) and `send` (every
    poll and at send_at), each on its own one-thread executor, stopped by SIGTERM/SIGINT."""

    def __init__(self, cfg: Config, *, secret: bytes) -> None:
        self.cfg = cfg
        self.secret = secret
        self.stop = threading.Event()
        self.hup = threading.Event()  # SIGHUP: re-read the config (run_forever)
        self._reported: set[str] = set()
        self._pull_failures = 0  # failed pulls of [digests] git in a row
        self.alert = Alerter(cfg, log)
        self.sending = threading.Event()  # the send job is running
        self.kick = threading.Event()  # a build found a new digest: run the send job now
        self.skips = _Skips()
        self.scheduler = BackgroundScheduler(
            timezone=cfg.tz,
            # One thread each: the build never queues behind a send (nor a send behind a
            # build), and two sends never run at once in this process.
            executors={
                "build": ThreadPoolExecutor(max_workers=1),
                "send": ThreadPoolExecutor(max_workers=1),
                "compact": ThreadPoolExecutor(max_workers=1),
            },
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(cfg.schedule.misfire_grace_hours * 3600),
            },
        )
        self.scheduler.add_listener(
            self.skips.on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
        )

    def _pull(self) -> dict[str, object]:
        """Pull [digests] git before the build. A failure is one log line and a retry at the
        next poll (the build goes on with the clone as it was); `[alerts] pull_failures` of
        them in a row are an alert (publisher/health.py), and the first success after it says
        so."""
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        limit = self.cfg.alerts.pull_failures
        try:
            result = pull(self.cfg)
        except PublisherError as exc:
            self._pull_failures += 1
            n = self._pull_failures
            log.warning("pull failed (%d in a row), will retry at the next poll: %s", n, exc)
            return {"at": now, "ok": False, "failures": n, "error": str(exc)}
        if self._pull_failures >= limit:
            log.info("pull of %s works again after %d failures", result.url, self._pull_failures)
        self._pull_failures = 0
        if result.changed:
            log.info("pulled %s", result.summary())
        return {"at": now, "ok": True, "failures": 0, "head": result.after}

    def _build_job(self) -> None:
        if self.stop.is_set():
            return
        cfg = self.cfg  # one config for the whole step, whatever a SIGHUP does meanwhile
        pulled = self._pull() if cfg.digests.git else None
        try:
            with Store.open(cfg) as store:
                if pulled is not None:
                    store.set_meta(META_PULL, json.dumps(pulled))
                report = build_step(cfg, store)
                now = dt.datetime.now(dt.UTC)
                self.alert(store, findings(cfg, store, now=now), now)
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
        if report.new and not self.sending.is_set():
            # A new digest may be due at once (send on arrival): no need to wait a poll. The
            # main loop moves the send job (`kick_send`): from this job's thread, modify_job
            # would wait for the lock that a shutdown holds while it waits for this job.
            self.kick.set()

    def kick_send(self) -> None:
        """Run the send job now (after a build that found a new digest)."""
        if self.stop.is_set():
            return
        with contextlib.suppress(JobLookupError):
            self.scheduler.modify_job("send", next_run_time=dt.datetime.now(self.cfg.tz))

    def _send_job(self) -> None:
        if self.stop.is_set():
            return
        self.sending.set()
        cfg = self.cfg  # one config for the whole step, whatever a SIGHUP does meanwhile
        try:
            with Store.open(cfg) as store:
                report = send_step(cfg, store, stop=self.stop, secret=self.secret)
        except PublisherError as exc:
            log.error("%s", exc)
            return
        except Exception:  # a bug must not kill the scheduler: log it, try again next tick
            log.exception("send tick failed")
            return
        finally:
            self.sending.clear()
        for date, unsent in report.final:
            log.warning(
                "digest %s: %d readers still without it after %d retries of the failed; final "
                "for this digest (`publisher send --digest FILE --retry-failed` tries again)",
                date,
                unsent,
                cfg.schedule.retry_failed_times,
            )
        for week, unsent in report.weekly_final:
            log.warning(
                "weekly edition %s: %d readers still without it after %d retries of the failed; "
                "final (`publisher send --weekly --week %s --retry-failed` tries again)",
                week,
                unsent,
                cfg.schedule.retry_failed_times,
                week,
            )

    def _compact_job(self) -> None:
        if self.stop.is_set():
            return
        cfg = self.cfg
        try:
            with Store.open(cfg) as store:
                report = compact(cfg, store)
        except PublisherError as exc:
            log.error("compaction: %s", exc)
            return
        except Exception:  # a bug must not kill the scheduler: log it, try again tomorrow
            log.exception("compaction failed")
            return
        if report.editions or report.raw_messages:
            for line in report.lines():
                log.info("compaction: %s", line)

    def _compact_trigger(self, cfg: Config) -> CronTrigger:
        """Daily, twelve hours after send_at: away from the morning's send."""
        t = send_time(cfg)
        return CronTrigger(hour=(t.hour + 12) % 24, minute=t.minute, timezone=cfg.tz)

    def _triggers(self, cfg: Config) -> tuple[IntervalTrigger, OrTrigger]:
        """The build job's trigger and the send job's, from `cfg`."""
        t = send_time(cfg)
        poll = cfg.schedule.poll_seconds
        return IntervalTrigger(seconds=poll, timezone=cfg.tz), OrTrigger(
            [
                IntervalTrigger(seconds=poll, timezone=cfg.tz),
                CronTrigger(hour=t.hour, minute=t.minute, timezone=cfg.tz),
            ]
        )

    def start(self) -> None:
        apscheduler_log = logging.getLogger("apscheduler.scheduler")
        if self.skips.filter not in apscheduler_log.filters:
            apscheduler_log.addFilter(self.skips.filter)
        build, send = self._triggers(self.cfg)
        self.scheduler.add_job(
            self._build_job,
            build,
            id="build",
            executor="build",
            next_run_time=dt.datetime.now(self.cfg.tz),  # at once: the catch-up
        )
        self.scheduler.add_job(self._send_job, send, id="send", executor="send")
        self.scheduler.add_job(
            self._compact_job,
            self._compact_trigger(self.cfg),
            id="compact",
            executor="compact",
            next_run_time=dt.datetime.now(self.cfg.tz),  # a process restarted daily compacts too
        )
        self.scheduler.start()
        self._say_watching("publisher run")

    def _say_watching(self, what: str) -> None:
        nxt = next_send_moment(self.cfg, dt.datetime.now(dt.UTC))
        log.info(
            "%s: watching %s every %gs; emails at %s %s (next %s)%s",
            what,
            f"{self.cfg.digests.git} ({self.cfg.digests.git_branch}) in {self.cfg.digests.folder}"
            if self.cfg.digests.git
            else self.cfg.digests.folder,
            self.cfg.schedule.poll_seconds,
            self.cfg.schedule.send_at,
            self.cfg.site.timezone,
            nxt.isoformat(timespec="minutes"),
            "; send on arrival" if self.cfg.schedule.send_on_arrival else "",
        )

    def reload(self) -> bool:
        """Re-read the config file (SIGHUP). A config that does not load (a typo, a bad value)
        is one ERROR line and the running one stays; a good one is used from the next job on
        (a step under way finishes with the old one). The secret stays as it was started."""
        try:
            cfg = load_config(self.cfg.path)
        except (PublisherError, OSError) as exc:
            log.error("SIGHUP: %s; keeping the configuration in use", exc)
            return False
        self.cfg = cfg
        self.alert.cfg = cfg
        build, send = self._triggers(cfg)
        self.scheduler.reschedule_job("build", trigger=build)
        self.scheduler.reschedule_job("send", trigger=send)
        self.scheduler.reschedule_job("compact", trigger=self._compact_trigger(cfg))
        self._say_watching(f"SIGHUP: configuration reloaded from {cfg.path}")
        return True

    def shutdown(self) -> None:
        self.stop.set()
        # wait=True: the running jobs see `stop`, let in-flight messages finish and record them.
        self.scheduler.shutdown(wait=True)
        logging.getLogger("apscheduler.scheduler").removeFilter(self.skips.filter)


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
        # SIGHUP re-reads the config (it used to kill the process, the default action).
        signal.signal(signal.SIGHUP, lambda _signum, _frame: runner.hup.set())
    runner.start()
    while not runner.stop.wait(0.2):
        if runner.hup.is_set():
            runner.hup.clear()
            runner.reload()
        if runner.kick.is_set():
            runner.kick.clear()
            runner.kick_send()
    runner.shutdown()
    log.info("stopped")
    return 0
