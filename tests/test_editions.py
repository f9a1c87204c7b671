"""Weeks and the weekly edition's papers (publisher/editions.py): pure."""

from __future__ import annotations

import datetime as dt

import pytest

from publisher.digest import Digest, Paper
from publisher.editions import Week, weekly_papers


def _paper(arxiv_id: str, votes: int | None) -> Paper:
    return Paper(
        title=f"paper {arxiv_id}",
        url=f"https://arxiv.org/abs/{arxiv_id}",
        arxiv_id=arxiv_id,
        votes=votes,
    )


def test_weeks_are_iso_weeks_monday_to_sunday_across_a_year_end() -> None:
    week = Week.of(dt.date(2024, 12, 31))
    assert str(week) == "2025-W01"
    assert (week.monday, week.sunday) == (dt.date(2024, 12, 30), dt.date(2025, 1, 5))
    assert dt.date(2025, 1, 5) in week and dt.date(2025, 1, 6) not in week
    assert Week.parse("2025-W01") == week and week.next() == Week(2025, 2)
    assert str(Week.of(dt.date(2020, 12, 31))) == "2020-W53"


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (dt.date(2026, 12, 7), "2026-W49"),  # a Monday: the week that ended yesterday
        (dt.date(2026, 12, 13), "2026-W49"),  # a Sunday: its own week is not complete
        (dt.date(2026, 12, 14), "2026-W50"),
    ],
)
def test_the_last_complete_week_ended_before_today(today: dt.date, expected: str) -> None:
    assert str(Week.last_complete(today)) == expected


@pytest.mark.parametrize("text", ["2026-49", "2026-W4", "W49", "2021-W53", "2026-W00"])
def test_a_bad_week_is_a_value_error_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=text):
        Week.parse(text)


def test_weekly_papers_keep_one_entry_per_paper_and_rank_by_votes() -> None:
    mon, tue = dt.date(2026, 11, 30), dt.date(2026, 12, 1)
    digests = [
        Digest(tue, (_paper("b", 5), _paper("a", 9), _paper("d", 7), _paper("e", None))),
        Digest(mon, (_paper("a", 3), _paper("c", 7), _paper("b", 5))),
    ]
    got = [(wp.paper.arxiv_id, wp.paper.votes, wp.day) for wp in weekly_papers(digests)]
    assert got == [
        ("a", 9, tue),  # the entry with more votes wins
        ("c", 7, mon),  # a tie in votes: the earlier day first
        ("d", 7, tue),
        ("b", 5, mon),  # the same votes on two days: the earlier day's entry stays
        ("e", None, tue),  # no votes counts as 0
    ]
