"""The weekly editions' pages and feeds: `/weekly/` (every complete week), `/weekly/YYYY-Www/`
(a week's papers) and the weekly feed.xml, atom.xml and feed.json.

An entry is one complete ISO week: `editions.weekly_papers` over its days (one entry per paper,
most votes first), the weekly email's papers with no filter, each linked to its card on its day
page. A week counts as complete once the archive has a digest dated on or after its Sunday:
deterministic (no wall clock), and in practice the day its weekly email goes out. The week in
progress is left out.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..digest import Digest
from ..editions import Week, weekly_papers
from ..i18n import strings
from ..urls import (
    ATOM_FILE,
    JSON_FILE,
    RSS_FILE,
    WEEKLY_PATH,
    day_path,
    page_url,
    paper_url,
    week_entry_id,
    week_path,
)
from .choice import WEEKLY_FEED_WEEKS, Outputs, count_line, render, weekly_feed_links
from .collect import Card, Day, epoch, published_at
from .feeds import Channel, FeedItem, render_channel, render_json_channel
from .pages import page_context

if TYPE_CHECKING:
    from .build import Context


def _weeks(
    ctx: Context, days: list[tuple[int, Day, list[Card]]]
) -> list[tuple[Week, list[tuple[Day, list[Card]]]]]:
    """The complete weeks, newest first, with their days."""
    if not days:
        return []
    newest = days[0][1].date
    by_week: dict[Week, list[tuple[Day, list[Card]]]] = {}
    for _, day, cards in days:
        by_week.setdefault(Week.of(day.date), []).append((day, cards))
    return [(w, by_week[w]) for w in sorted(by_week, reverse=True) if w.sunday <= newest]


def _week_updated(
    ctx: Context, weeks: list[Week], members: dict[Week, list[Day]]
) -> dict[Week, int]:
    """A week's `updated`: its newest day's (at least its Sunday's publish time), distinct."""
    times: dict[Week, int] = {}
    for week in sorted(weeks):
        t = max(
            [epoch(published_at(ctx.cfg, week.sunday))]
            + [ctx.updated[d.date] for d in members[week]]
        )
        while t in times.values():
            t += 1
        times[week] = t
    return times


def write_weekly(
    ctx: Context, outputs: Outputs, days: list[tuple[int, Day, list[Card]]]
) -> list[tuple[str, int]]:
    cfg, out = ctx.cfg, outputs.writer.out
    t = strings(cfg.site.language)
    weeks = _weeks(ctx, days)
    members = {w: [d for d, _ in ds] for w, ds in weeks}
    updated = _week_updated(ctx, [w for w, _ in weeks], members)
    feeds = weekly_feed_links(cfg)
    ranked: dict[Week, list[tuple[dt.date, Card]]] = {}
    for week, ds in weeks:
        # The weekly email's papers with no filter: editions.weekly_papers over the week's days.
        by_paper: dict[int, Card] = {}
        digests = []
        for day, cards in ds:
            papers = []
            for card in cards:
                paper = card.paper()
                by_paper[id(paper)] = card
                papers.append(paper)
            digests.append(Digest(day.date, tuple(papers)))
        ranked[week] = [(wp.day, by_paper[id(wp.paper)]) for wp in weekly_papers(digests)]

    def title(week: Week) -> str:
        return t["week_title"].format(week=week)

    def span(week: Week) -> str:
        return t["week_range"].format(
            monday=week.monday.isoformat(), sunday=week.sunday.isoformat()
        )

    def rows(week: Week, root: str, absolute: bool) -> list[dict[str, Any]]:
        return [
            {
                "title": c.title,
                "href": paper_url(cfg, d, c.anchor)
                if absolute
                else f"{root}{day_path(d)}#{c.anchor}",
                "votes": c.votes,
                "date": d,
            }
            for d, c in ranked[week]
        ]

    order = [w for w, _ in weeks]
    for j, week in enumerate(order):
        newer = order[j - 1] if j > 0 else None
        older = order[j + 1] if j + 1 < len(order) else None
        page = out / week_path(week) / "index.html"
        root = "../../"

        def render_week(week=week, newer=newer, older=older, page=page, root=root):
            link = lambda w: (title(w), f"{root}{week_path(w)}") if w else None  # noqa: E731
            return {
                page: render(
                    cfg,
                    "site/week.html",
                    **page_context(cfg, 2, page_url(cfg, week_path(week)), page_feeds=[feeds]),
                    title=title(week),
                    range=span(week),
                    papers=rows(week, root, absolute=False),
                    newer=link(newer),
                    older=link(older),
                )
            }

        outputs.emit(
            f"week:{week}",
            {
                "days": [[d.date.isoformat(), d.sha] for d in members[week]],
                "newer": str(newer) if newer else None,
                "older": str(older) if older else None,
            },
            render_week,
            [page],
        )

    listing = [
        {
            "href": week_path(w).removeprefix(WEEKLY_PATH),
            "title": title(w),
            "range": span(w),
            "papers": len(ranked[w]),
            "titles": [c.title for _, c in ranked[w][:3]],
        }
        for w in order
    ]
    index = out / WEEKLY_PATH / "index.html"
    outputs.emit(
        "weekly",
        listing,
        lambda: {
            index: render(
                cfg,
                "site/weekly.html",
                **page_context(cfg, 1, page_url(cfg, WEEKLY_PATH), page_feeds=[feeds]),
                weeks=listing,
            )
        },
        [index],
    )

    feed_weeks = order[:WEEKLY_FEED_WEEKS]
    channel = Channel(feeds["title"], cfg.site.description, page_url(cfg, WEEKLY_PATH), WEEKLY_PATH)

    def weekly_feeds() -> dict[Path, bytes]:
        items = [
            FeedItem(
                id=week_entry_id(cfg, w, w.monday),
                url=page_url(cfg, week_path(w)),
                title=f"{cfg.site.title} · {title(w)}",
                summary=count_line(cfg, [c for _, c in ranked[w]]),
                content=render(
                    cfg,
                    "site/week_feed.html",
                    title=title(w),
                    range=span(w),
                    papers=rows(w, "", absolute=True),
                    week_url=page_url(cfg, week_path(w)),
                ).decode("utf-8"),
                published=published_at(cfg, w.sunday),
                updated=updated[w],
            )
            for w in feed_weeks
        ]
        rss, atom = render_channel(cfg, channel, items)
        folder = out / WEEKLY_PATH
        return {
            folder / RSS_FILE: rss,
            folder / ATOM_FILE: atom,
            folder / JSON_FILE: render_json_channel(cfg, channel, items),
        }

    outputs.emit(
        "weekly-feeds",
        [
            [str(w), [[d.date.isoformat(), d.sha] for d in members[w]], updated[w]]
            for w in feed_weeks
        ],
        weekly_feeds,
        [out / WEEKLY_PATH / name for name in (RSS_FILE, ATOM_FILE, JSON_FILE)],
    )
    sitemap = []
    if order:
        sitemap.append((page_url(cfg, WEEKLY_PATH), updated[order[0]]))
    sitemap += [(page_url(cfg, week_path(w)), updated[w]) for w in order]
    return sitemap
