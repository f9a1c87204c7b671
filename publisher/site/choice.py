"""Pages and feeds per reader choice: each topic's (`/topics/NAME/`) and the weekly editions'
(`/weekly/`), each with feed.xml, atom.xml and feed.json.

What their entries hold is what a reader with that choice was mailed:
- A topic's feed has one entry per day with at least one paper of the topic (a daily reader of
  that topic gets no email on the other days), holding those papers only (`topics.select`, in
  the digest's order), in the site feed's form (`[feed] content`). It carries the newest
  `feed.max_items` such days, so adding a day changes the feeds of that day's topics only.
- The weekly feed has one entry per complete ISO week (`editions.weekly_papers`: one entry per
  paper, most votes first), each paper linked to its card on its day page. A week counts as
  complete once the archive has a digest dated on or after its Sunday: deterministic (no wall
  clock), and in practice the day its weekly email goes out. The week in progress is left out.

Everything here is built from Cards (collect.py), which the manifest keeps: adding a day parses
that day only. Each page and feed is re-rendered only when its inputs changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..digest import Digest
from ..editions import Week, weekly_papers
from ..errors import DigestError
from ..i18n import strings
from ..templating import jinja_env
from ..topics import select
from ..urls import (
    ATOM_FILE,
    JSON_FILE,
    RSS_FILE,
    TOPICS_PATH,
    WEEKLY_PATH,
    day_path,
    day_url,
    page_url,
    paper_url,
    topic_entry_id,
    topic_path,
    topic_url,
    week_entry_id,
    week_path,
)
from .collect import Card, Day, epoch, published_at
from .feeds import Channel, FeedItem, render_channel, render_json_channel, render_summary_links
from .pages import entry_title, feed_links, page_context, render_papers
from .writer import SiteWriter

if TYPE_CHECKING:
    from .build import Context

TOPIC_DAYS = 30  # a topic's page shows its newest 30 days with a paper on it
WEEKLY_FEED_WEEKS = 8  # the weekly feed's entries: about two months, well under 512 KB


def weekly_feed_links(cfg: Config) -> dict[str, str]:
    """The weekly feeds, for the pages that link them (autodiscovery on the index too)."""
    title = strings(cfg.site.language)["weekly_title"]
    return feed_links(cfg, f"{cfg.site.title} · {title}", WEEKLY_PATH)


def _render(cfg: Config, template: str, **values: Any) -> bytes:
    return jinja_env(cfg).get_template(template).render(**values).encode("utf-8")


class _Outputs:
    """Renders a group of files only when its inputs changed since the last build (or a file
    is missing); the inputs are kept in the manifest under "choices"."""

    def __init__(self, old: dict[str, Any], writer: SiteWriter) -> None:
        self.old, self.new, self.writer = old, {}, writer  # type: ignore[var-annotated]

    def emit(
        self, key: str, inputs: Any, render: Callable[[], dict[Path, bytes]], files: list[Path]
    ) -> None:
        self.new[key] = inputs
        if self.old.get(key) == inputs and all(self.writer.is_current(p) for p in files):
            return
        for path, data in render().items():
            self.writer.write(path, data)


def _readable(ctx: Context) -> list[tuple[int, Day, list[Card]]]:
    """Every day whose cards are known (newest first); a digest that cannot be read is skipped
    here as on its own page (and reported once)."""
    out = []
    for i, day in enumerate(ctx.days):
        try:
            out.append((i, day, ctx.cards_of(i)))
        except DigestError:
            continue
    return out


def _links(cfg: Config, root: str, date: dt.date, cards: list[Card]) -> list[dict[str, Any]]:
    href = root + day_path(date)
    return [
        {"title": c.title, "href": f"{href}#{c.anchor}", "votes": c.votes, "date": None}
        for c in cards
    ]


def _count(cfg: Config, cards: list[Card]) -> str:
    t = strings(cfg.site.language)
    more = " …" if len(cards) > 3 else ""
    return t["papers"].format(n=len(cards)) + ": " + " · ".join(c.title for c in cards[:3]) + more


def write_choices(ctx: Context, writer: SiteWriter) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The topic pages and feeds, the weekly pages and feeds, and their index pages; returns
    their inputs (for the manifest) and their URLs with lastmod (for the sitemap)."""
    outputs = _Outputs(ctx.cache.get("choices", {}), writer)
    days = _readable(ctx)
    sitemap = _write_topics(ctx, outputs, days) + _write_weekly(ctx, outputs, days)
    return outputs.new, sitemap


# ---------------------------------------------------------------------------------------------
# Topics


def _topic_content(ctx: Context, i: int, day: Day, cards: list[Card], shown: list[int]) -> str:
    """A topic's entry for a day: its papers, in the site feed's form ([feed] content)."""
    cfg = ctx.cfg
    if cfg.feed.content == "full":
        return str(render_papers(cfg, ctx.load(i), cards, only=set(shown)))
    return render_summary_links(cfg, day.date, [(cards[k].title, cards[k].anchor) for k in shown])


def _write_topics(
    ctx: Context, outputs: _Outputs, days: list[tuple[int, Day, list[Card]]]
) -> list[tuple[str, int]]:
    cfg, out = ctx.cfg, outputs.writer.out
    if not cfg.topics:
        return []
    sitemap: list[tuple[str, int]] = []
    listing = []
    for topic in cfg.topics:
        # What a daily reader of this topic got, day by day (select: the topic's papers, in the
        # digest's order); a day without one sent them nothing, so it has no entry.
        hits = []
        for i, day, cards in days:
            papers = [c.paper() for c in cards]
            chosen = select(
                papers, ctx.matcher, {topic.name}, paper_topics=[frozenset(c.topics) for c in cards]
            )
            ids = {id(p) for p in chosen}
            shown = [k for k, p in enumerate(papers) if id(p) in ids]
            if shown:
                hits.append((i, day, cards, shown))
        listing.append(
            {
                "href": topic_path(topic.name),
                "label": topic.label,
                "papers": sum(len(h[3]) for h in hits),
            }
        )
        folder = out / topic_path(topic.name)
        feeds = feed_links(cfg, f"{cfg.site.title} · {topic.label}", topic_path(topic.name))
        page_days = hits[:TOPIC_DAYS]
        outputs.emit(
            f"topic:{topic.name}",
            [[d.date.isoformat(), d.sha] for _, d, _, _ in page_days],
            lambda topic=topic, page_days=page_days, feeds=feeds, folder=folder: {
                folder / "index.html": _render(
                    cfg,
                    "site/topic.html",
                    **page_context(cfg, 2, topic_url(cfg, topic.name), page_feeds=[feeds]),
                    label=topic.label,
                    days=[
                        {
                            "date": d.date,
                            "href": "../../" + day_path(d.date),
                            "papers": _links(cfg, "../../", d.date, [cards[k] for k in shown]),
                        }
                        for _, d, cards, shown in page_days
                    ],
                )
            },
            [folder / "index.html"],
        )
        feed_days = hits[: cfg.feed.max_items]
        channel = Channel(
            f"{cfg.site.title} · {topic.label}",
            cfg.site.description,
            topic_url(cfg, topic.name),
            topic_path(topic.name),
        )

        def topic_feeds(topic=topic, feed_days=feed_days, channel=channel, folder=folder):
            items = []
            for i, d, cards, shown in feed_days:
                try:
                    content = _topic_content(ctx, i, d, cards, shown)
                except DigestError:
                    continue
                items.append(
                    FeedItem(
                        id=topic_entry_id(cfg, topic.name, d.date),
                        url=day_url(cfg, d.date),
                        title=f"{entry_title(cfg, d.date)} · {topic.label}",
                        summary=_count(cfg, [cards[k] for k in shown]),
                        content=content,
                        published=published_at(cfg, d.date),
                        updated=ctx.updated[d.date],
                    )
                )
            rss, atom = render_channel(cfg, channel, items)
            return {
                folder / RSS_FILE: rss,
                folder / ATOM_FILE: atom,
                folder / JSON_FILE: render_json_channel(cfg, channel, items),
            }

        outputs.emit(
            f"topic-feeds:{topic.name}",
            [[d.date.isoformat(), d.sha, ctx.updated[d.date]] for _, d, _, _ in feed_days],
            topic_feeds,
            [folder / name for name in (RSS_FILE, ATOM_FILE, JSON_FILE)],
        )
        if hits:
            sitemap.append((topic_url(cfg, topic.name), ctx.updated[hits[0][1].date]))
    index = _render(
        cfg,
        "site/topics.html",
        **page_context(cfg, 1, page_url(cfg, TOPICS_PATH)),
        topics=listing,
    )
    outputs.writer.write(out / TOPICS_PATH / "index.html", index)
    if ctx.updated:
        sitemap.insert(0, (page_url(cfg, TOPICS_PATH), max(ctx.updated.values())))
    return sitemap


# ---------------------------------------------------------------------------------------------
# The weekly editions


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


def _write_weekly(
    ctx: Context, outputs: _Outputs, days: list[tuple[int, Day, list[Card]]]
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
                page: _render(
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

    index = _render(
        cfg,
        "site/weekly.html",
        **page_context(cfg, 1, page_url(cfg, WEEKLY_PATH), page_feeds=[feeds]),
        weeks=[
            {
                "href": week_path(w).removeprefix(WEEKLY_PATH),
                "title": title(w),
                "range": span(w),
                "papers": len(ranked[w]),
                "titles": [c.title for _, c in ranked[w][:3]],
            }
            for w in order
        ],
    )
    outputs.writer.write(out / WEEKLY_PATH / "index.html", index)

    feed_weeks = order[:WEEKLY_FEED_WEEKS]
    channel = Channel(feeds["title"], cfg.site.description, page_url(cfg, WEEKLY_PATH), WEEKLY_PATH)

    def weekly_feeds() -> dict[Path, bytes]:
        items = [
            FeedItem(
                id=week_entry_id(cfg, w, w.monday),
                url=page_url(cfg, week_path(w)),
                title=f"{cfg.site.title} · {title(w)}",
                summary=_count(cfg, [c for _, c in ranked[w]]),
                content=_render(
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
