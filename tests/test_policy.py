"""The scheduling policy: when a digest's email is due (pure functions of time)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

from publisher.config import default_config
from publisher.policy import email_due, next_send_moment, partial_retry
from publisher.state.publications import Publication

SEOUL = ZoneInfo("Asia/Seoul")


def cfg(tmp_path, **schedule):
    base = default_config(tmp_path)
    return dataclasses.replace(base, schedule=dataclasses.replace(base.schedule, **schedule))


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, minute, tzinfo=SEOUL)


def test_next_send_moment_is_today_or_tomorrow(tmp_path) -> None:
    c = cfg(tmp_path, send_at="07:00")
    assert next_send_moment(c, at(15, 6, 59)) == at(15, 7)
    assert next_send_moment(c, at(15, 7)) == at(15, 7)
    assert next_send_moment(c, at(15, 7, 1)) == at(16, 7)
    # an aware time in another zone is judged in site.timezone
    assert next_send_moment(c, at(15, 6).astimezone(dt.UTC)) == at(15, 7)


def test_digest_waits_for_send_at(tmp_path) -> None:
    c = cfg(tmp_path, send_at="07:00")
    d = dt.date(2024, 5, 15)
    assert not email_due(c, d, arrived=at(15, 1), now=at(15, 6, 59)).due
    assert email_due(c, d, arrived=at(15, 1), now=at(15, 7)).due
    # arrived after today's send time: tomorrow morning
    late = email_due(c, d, arrived=at(15, 8), now=at(15, 23))
    assert not late.due and late.at == at(16, 7)
    assert email_due(c, d, arrived=at(15, 8), now=at(16, 7)).due


def test_send_on_arrival(tmp_path) -> None:
    c = cfg(tmp_path, send_on_arrival=True)
    assert email_due(c, dt.date(2024, 5, 15), arrived=at(15, 1), now=at(15, 1)).due


def test_missed_send_is_caught_up_within_grace_only(tmp_path) -> None:
    c = cfg(tmp_path, send_at="07:00", misfire_grace_hours=3)
    d = dt.date(2024, 5, 15)
    assert email_due(c, d, arrived=at(15, 1), now=at(15, 9, 30)).due  # down at 07:00, back 09:30
    missed = email_due(c, d, arrived=at(15, 1), now=at(15, 22))  # back at night: next morning
    assert not missed.due and missed.at == at(16, 7)


def test_old_digests_are_never_emailed(tmp_path) -> None:
    c = cfg(tmp_path, max_age_days=2, send_on_arrival=True)
    assert email_due(c, dt.date(2024, 5, 13), arrived=at(15, 1), now=at(15, 8)).due
    old = email_due(c, dt.date(2024, 5, 12), arrived=at(15, 1), now=at(15, 8))
    assert not old.due and "max_age" in old.reason


def partial(retries: int, finished: dt.datetime) -> Publication:
    """A partial send's publication row, its last attempt ended at `finished` (naive UTC)."""
    return Publication(
        digest_date=dt.date(2024, 5, 15),
        source="x.md",
        content_hash="",
        feed_built_at=None,
        email_status="partial",
        sent=9,
        failed=1,
        email_started_at=None,
        email_finished_at=finished,
        email_retries=retries,
    )


def test_a_partial_send_is_retried_n_times_hours_apart_then_final(tmp_path) -> None:
    """The one retry rule the daily and the weekly send share (publisher run)."""
    c = cfg(tmp_path, retry_failed_times=2, retry_failed_hours=6)
    ended = at(15, 8).astimezone(dt.UTC).replace(tzinfo=None)
    waiting = partial_retry(c, partial(0, ended), 0, at(15, 13, 59))
    assert not waiting.send and not waiting.final
    assert waiting.reason == "partial: retry 1 of 2 at 2024-05-15T14:00+09:00"
    first = partial_retry(c, partial(0, ended), 0, at(15, 14))
    assert first.send and first.retry_failed and first.reason == "retry 1 of 2 of the failed"
    second = partial_retry(c, partial(1, ended), 0, at(15, 14))
    assert second.send and second.retry_failed and second.reason.startswith("retry 2 of 2")
    done = partial_retry(c, partial(2, ended), 0, at(16, 14))
    assert done.final and not done.send


def test_a_stopped_sends_queued_rows_go_at_once_without_the_failed(tmp_path) -> None:
    c = cfg(tmp_path, retry_failed_times=2, retry_failed_hours=6)
    ended = at(15, 8).astimezone(dt.UTC).replace(tzinfo=None)
    resume = partial_retry(c, partial(0, ended), 5, at(15, 9))
    assert resume.send and not resume.retry_failed
    assert resume.reason == "resuming a send that stopped"
    # out of retries, rows still queued are sent, not given up
    assert partial_retry(c, partial(2, ended), 5, at(16, 9)).send
