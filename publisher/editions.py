"""Weeks and the weekly edition's papers. Pure: no config, no I/O.

A weekly edition covers one ISO week (Monday to Sunday; digest dates are already days in
`site.timezone`). Its papers are those of every digest dated in that week, one per paper key
(the arXiv id, else the URL): where a paper appears on two days, the entry with more votes
stays (a tie keeps the earlier day). They are ranked by votes, most first; ties go to the
earlier day, then to the digest's order. A reader's filter and cap are applied to this list
(`topics.select`), which keeps its order.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .digest import Digest, Paper

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True, order=True, slots=True)
class Week:
    """One ISO week; `str(week)` is its name, `2026-W49`."""

    year: int
    number: int

    def __post_init__(self) -> None:
        dt.date.fromisocalendar(self.year, self.number, 1)  # ValueError when out of range

    @classmethod
    def of(cls, day: dt.date) -> Week:
        iso = day.isocalendar()
        return cls(iso.year, iso.week)

    @classmethod
    def parse(cls, text: str) -> Week:
        """`2026-W49`; ValueError with the expected form otherwise."""
        m = _WEEK.match(text.strip())
        if not m:
            raise ValueError(f"{text!r} is not an ISO week (expected YYYY-Www, e.g. 2026-W49)")
        try:
            return cls(int(m.group(1)), int(m.group(2)))
        except ValueError:
            raise ValueError(f"{text!r}: {m.group(1)} has no week {m.group(2)}") from None

    @classmethod
    def last_complete(cls, today: dt.date) -> Week:
        """The newest week that ended before `today` (today being a day of the site's zone)."""
        return cls.of(today - dt.timedelta(days=today.isoweekday()))

    @property
    def monday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.number, 1)

    @property
    def sunday(self) -> dt.date:
        return self.monday + dt.timedelta(days=6)

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.monday <= day <= self.sunday

    def next(self) -> Week:
        return Week.of(self.monday + dt.timedelta(days=7))

    def __str__(self) -> str:
        return f"{self.year:04d}-W{self.number:02d}"


@dataclass(frozen=True, slots=True)
class WeeklyPaper:
    """A paper in a weekly edition, with the day whose page holds its card."""

    paper: Paper
    day: dt.date


def weekly_papers(digests: Iterable[Digest]) -> list[WeeklyPaper]:
    """The weekly edition of these digests (callers pass the ones dated in one week): one entry
    per paper key, ranked by votes (ties: earlier day, then the digest's order)."""
    best: dict[str, tuple[tuple[int, dt.date, int], WeeklyPaper]] = {}
    for digest in sorted(digests, key=lambda d: d.date):
        for position, paper in enumerate(digest.papers):
            votes = paper.votes or 0
            rank = (-votes, digest.date, position)
            kept = best.get(paper.key)
            if kept is None or rank < kept[0]:
                best[paper.key] = (rank, WeeklyPaper(paper, digest.date))
    return [wp for _, wp in sorted(best.values(), key=lambda item: item[0])]
