"""A topic's page and feeds: `/topics/NAME/` and its feed.xml, atom.xml and feed.json, and the
`/topics/` index.

A topic's feed has one entry per day with at least one paper of the topic (a daily reader of
that topic gets no email on the other days), holding those papers only (`topics.select`, in the
digest's order), in the site feed's form (`[feed] content`). It carries the newest
`feed.max_items` such days, so adding a day changes the feeds of that day's topics only; the
page shows the newest TOPIC_DAYS of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DigestError
from ..topics import select
from ..urls import (
    ATOM_FILE,
    JSON_FILE,
    RSS_FILE,
    TOPICS_PATH,
    day_path,
    day_url,
    page_url,
    topic_entry_id,
    topic_path,
    topic_url,
)
from .choice import TOPIC_DAYS, Outputs, count_line, links, render
from .collect import Card, Day, published_at
from .feeds import Channel, FeedItem, render_channel, render_json_channel, render_summary_links
from .pages import entry_title, feed_links, page_context, render_papers

if TYPE_CHECKING:
    from .build import Context


def _topic_content(ctx: Context, i: int, day: Day, cards: list[Card], shown: list[int]) -> str:
    """A topic's entry for a day: its papers, in the site feed's form ([feed] content)."""
    cfg = ctx.cfg
    if cfg.feed.content == "full":
        return str(render_papers(cfg, ctx.load(i), cards, only=set(shown)))
    return render_summary_links(cfg, day.date, [(cards[k].title, cards[k].anchor) for k in shown])


def write_topics(
    ctx: Context, outputs: Outputs, days: list[tuple[int, Day, list[Card]]]
) -> list[tuple[str, int]]:
    cfg, out = ctx.cfg, outputs.writer.out
    if not cfg.topics:
        return []
    sitemap: list[tuple[str, int]] = []
    listing = []
    editions = [
        (i, day, cards, [c.paper() for c in cards], [frozenset(c.topics) for c in cards])
        for i, day, cards in days
    ]
    for topic in cfg.topics:
        # What a daily reader of this topic got, day by day (select: the topic's papers, in the
        # digest's order); a day without one sent them nothing, so it has no entry.
        hits = []
        for i, day, cards, papers, paper_topics in editions:
            if not any(topic.name in pt for pt in paper_topics):
                continue
            chosen = select(papers, ctx.matcher, {topic.name}, paper_topics=paper_topics)
            ids = {id(p) for p in chosen}
            shown = [k for k, p in enumerate(papers) if id(p) in ids]
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
                folder / "index.html": render(
                    cfg,
                    "site/topic.html",
                    **page_context(cfg, 2, topic_url(cfg, topic.name), page_feeds=[feeds]),
                    label=topic.label,
                    days=[
                        {
                            "date": d.date,
                            "href": "../../" + day_path(d.date),
                            "papers": links(cfg, "../../", d.date, [cards[k] for k in shown]),
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
                        summary=count_line(cfg, [cards[k] for k in shown]),
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
    index = out / TOPICS_PATH / "index.html"
    outputs.emit(
        "topics",
        listing,
        lambda: {
            index: render(
                cfg,
                "site/topics.html",
                **page_context(cfg, 1, page_url(cfg, TOPICS_PATH)),
                topics=listing,
            )
        },
        [index],
    )
    if ctx.updated:
        sitemap.insert(0, (page_url(cfg, TOPICS_PATH), max(ctx.updated.values())))
    return sitemap
