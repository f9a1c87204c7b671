"""When a digest's email is due: the scheduling policy as functions of time (and of a file's mtime).

The rules (README, "Scheduling"):
- A digest joins the feeds and the site as soon as it is seen (that is not decided here).
- Its email is due at the first `[schedule] send_at` (in site.timezone) at or after the digest
  arrived, or at once when `send_on_arrival` is set. Arrival is the file's mtime, or when the
  process first saw it if that is earlier, so a digest that arrived while the process was down
  is judged by when it arrived, not by when the process came back.
- A send time missed by at most `misfire_grace_hours` (the machine was down at 07:00 and is back
  at 09:00) is caught up at once; one missed by more waits for the next send_at, so nobody gets
  the morning newsletter at midnight.
- A digest older than `max_age_days` (by its date, in site.timezone) is never emailed
  automatically: a first start on a year of archive builds the archive and sends nothing.
- Each digest date is emailed once, ever: the state database says whether it was.
- The weekly edition of an ISO week is due at `[schedule] weekly_day` of the week after, at
  `send_at`, with the same misfire rule; only the last complete week, and not more than
  `max_age_days` after its weekly_day, is sent automatically (otherwise it is left to
  `publisher send --weekly --week`).
- A partial send (some readers failed with 4xx until max_attempts) has its failed rows retried
  at most `retry_failed_times` times, `retry_failed_hours` apart, then its email is `final`;
  rows still queued (a send stopped by SIGTERM) are sent at once. Daily and weekly alike
  (`partial_retry`).
- An edition older than `[state] keep_ledger_days` has its ledger rows folded into per-edition
  counts (`publisher compact`), once its email is sent or final; then it is never sent again
  (its readers are no longer in the ledger). Its age counts from its date (daily) or its week's
  `weekly_day` (weekly: the day it is due), in site.timezone (`edition_age`). `run` never
  reaches it: keep_ledger_days > max_age_days.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import WEEKDAYS, Config
from .editions import Week

if TYPE_CHECKING:
    from .state.publications import Publication


@dataclass(frozen=True, slots=True)
class Due:
    due: bool
    reason: str
    at: dt.datetime | None = None  # when it is (or was) due; None if never


def arrived(source: str, first_seen: dt.datetime | None, now: dt.datetime) -> dt.datetime:
    """When a digest arrived: its file's mtime, or when it was first seen if that is earlier.

    `first_seen` is as the state database keeps it (naive UTC)."""
    candidates = [now]
    if first_seen is not None:
        candidates.append(first_seen.replace(tzinfo=dt.UTC))
    with contextlib.suppress(OSError):
        candidates.append(dt.datetime.fromtimestamp(Path(source).stat().st_mtime, dt.UTC))
    return min(candidates)


def send_time(cfg: Config) -> dt.time:
    hh, mm = cfg.schedule.send_at.split(":")
    return dt.time(int(hh), int(mm))


def next_send_moment(cfg: Config, after: dt.datetime) -> dt.datetime:
    """The first send_at moment at or after `after` (aware), in site.timezone."""
    local = after.astimezone(cfg.tz)
    moment = dt.datetime.combine(local.date(), send_time(cfg), tzinfo=cfg.tz)
    if moment < local:
        moment = dt.datetime.combine(
            local.date() + dt.timedelta(days=1), send_time(cfg), tzinfo=cfg.tz
        )
    return moment


def too_old(cfg: Config, digest_date: dt.date, now: dt.datetime) -> bool:
    return (now.astimezone(cfg.tz).date() - digest_date).days > cfg.schedule.max_age_days


def email_due(cfg: Config, digest_date: dt.date, arrived: dt.datetime, now: dt.datetime) -> Due:
    """Whether the email of a not-yet-emailed digest should go out at `now`."""
    if too_old(cfg, digest_date, now):
        return Due(False, f"older than schedule.max_age_days ({cfg.schedule.max_age_days})")
    if cfg.schedule.send_on_arrival:
        return Due(True, "send on arrival", arrived)
    at = next_send_moment(cfg, arrived)
    grace = dt.timedelta(hours=cfg.schedule.misfire_grace_hours)
    if now >= at and now - at > grace:
        at = next_send_moment(cfg, now)  # missed by too much: wait for the next send time
    if now >= at:
        return Due(True, f"due since {at.isoformat(timespec='minutes')}", at)
    return Due(False, f"waiting for {at.isoformat(timespec='minutes')}", at)


def weekly_moment(cfg: Config, week: Week) -> dt.datetime:
    """When the weekly edition of `week` is scheduled: `[schedule] weekly_day` of the week
    after it, at `send_at`, in site.timezone."""
    day = week.next().monday + dt.timedelta(days=WEEKDAYS.index(cfg.schedule.weekly_day))
    return dt.datetime.combine(day, send_time(cfg), tzinfo=cfg.tz)


def weekly_due(cfg: Config, week: Week, now: dt.datetime) -> Due:
    """Whether the weekly edition of `week` (not yet emailed) should go out at `now`: at its
    moment, or caught up within `misfire_grace_hours`; missed by more, at the next `send_at`."""
    at = weekly_moment(cfg, week)
    late = (now.astimezone(cfg.tz).date() - at.date()).days
    if late > cfg.schedule.max_age_days:
        # As a daily digest older than max_age_days: never sent automatically.
        return Due(
            False,
            f"{late} days past its weekly_day, more than schedule.max_age_days "
            f"({cfg.schedule.max_age_days}): not sent automatically",
        )
    grace = dt.timedelta(hours=cfg.schedule.misfire_grace_hours)
    if now >= at and now - at > grace:
        at = next_send_moment(cfg, now)
    if now >= at:
        return Due(True, f"due since {at.isoformat(timespec='minutes')}", at)
    return Due(False, f"waiting for {at.isoformat(timespec='minutes')}", at)


@dataclass(frozen=True, slots=True)
class Retry:
    """What to do now with a partial send (`partial_retry`): send (`retry_failed`: the failed rows
    again, not just the queued ones), mark it `final`, or wait until `at`."""

    send: bool
    retry_failed: bool = False
    final: bool = False
    reason: str = ""  # why it is sent, or what it waits for
    at: dt.datetime | None = None  # naive UTC: the next retry, while waiting


def partial_retry(cfg: Config, pub: Publication, queued: int, now: dt.datetime) -> Retry:
    """The retry rule of a partial send, daily or weekly (the module's rules): `queued` rows left
    by a stopped send go at once; the failed ones are retried `retry_failed_times` times,
    `retry_failed_hours` after the last attempt ended; after that the send is final."""
    sched = cfg.schedule
    naive_now = now.astimezone(dt.UTC).replace(tzinfo=None)
    retry_at = (pub.email_finished_at or naive_now) + dt.timedelta(hours=sched.retry_failed_hours)
    n = pub.email_retries + 1
    if pub.email_retries < sched.retry_failed_times and naive_now >= retry_at:
        return Retry(True, True, reason=f"retry {n} of {sched.retry_failed_times} of the failed")
    if queued:
        return Retry(True, reason="resuming a send that stopped")
    if pub.email_retries >= sched.retry_failed_times:
        return Retry(False, final=True)
    at = retry_at.replace(tzinfo=dt.UTC).astimezone(cfg.tz).isoformat(timespec="minutes")
    return Retry(
        False, reason=f"partial: retry {n} of {sched.retry_failed_times} at {at}", at=retry_at
    )


def _weekly_offset(cfg: Config) -> int:
    """Days from a week's Monday to its weekly edition's due day (`weekly_moment`)."""
    return 7 + WEEKDAYS.index(cfg.schedule.weekly_day)


def edition_age(cfg: Config, edition: str, digest_date: dt.date, now: dt.datetime) -> int:
    """Days since an edition's day (site.timezone): a daily digest's date, a weekly edition's
    due day (the Monday it is filed under plus `_weekly_offset`)."""
    day = digest_date
    if edition == "weekly":
        day += dt.timedelta(days=_weekly_offset(cfg))
    return (now.astimezone(cfg.tz).date() - day).days


def expired(cfg: Config, edition: str, digest_date: dt.date, now: dt.datetime) -> bool:
    """Older than `[state] keep_ledger_days`: never sent again, its ledger rows compacted."""
    return edition_age(cfg, edition, digest_date, now) > cfg.state.keep_ledger_days


def ledger_cutoffs(cfg: Config, now: dt.datetime) -> dict[str, dt.date]:
    """{edition: the first digest_date that is NOT expired}: compaction takes the editions
    dated before it (`expired`, as a date for an indexed query)."""
    today = now.astimezone(cfg.tz).date()
    first = today - dt.timedelta(days=cfg.state.keep_ledger_days)
    return {"daily": first, "weekly": first - dt.timedelta(days=_weekly_offset(cfg))}
