"""Feeds: RSS 2.0 and Atom 1.0 (feedgen) and JSON Feed 1.1, as bytes: the site's own (one entry
a day) and any other channel of FeedItems (a topic's, the weekly editions')."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from feedgen.feed import FeedGenerator

from ..config import Config
from ..digest import Digest
from ..i18n import strings
from ..templating import jinja_env
from ..urls import (
    ATOM_FILE,
    JSON_FILE,
    RSS_FILE,
    base_url,
    day_url,
    entry_id,
    feed_url,
    paper_anchors,
    paper_url,
)
from .collect import Day, from_epoch, published_at
from .pages import entry_title


def render_feed_summary(cfg: Config, digest: Digest) -> str:
    """A feed entry's content under `[feed] content = "summary"`: linked titles, no summaries."""
    links = list(zip((p.title for p in digest.papers), paper_anchors(digest), strict=True))
    return render_summary_links(cfg, digest.date, links)


def render_summary_links(cfg: Config, date: dt.date, links: list[tuple[str, str]]) -> str:
    """The "summary" content of a day's entry for these (title, anchor) papers."""
    template = jinja_env(cfg).get_template("site/feed_summary.html")
    return template.render(
        links=[(title, paper_url(cfg, date, anchor)) for title, anchor in links],
        day_url=day_url(cfg, date),
    )


def short_summary(cfg: Config, day: Day) -> str:
    count = strings(cfg.site.language)["papers"].format(n=day.papers)
    more = " …" if day.papers > len(day.titles) else ""
    return f"{count}: " + " · ".join(day.titles) + more


@dataclass(frozen=True, slots=True)
class Channel:
    """A feed as a whole: its title and description, the page it belongs to (`home`), and the
    folder its three files are in ("" for the site's own, `topics/NAME/`, `weekly/`)."""

    title: str
    description: str
    home: str
    folder: str = ""


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One entry, the same in RSS, Atom and JSON Feed. `updated` is epoch seconds."""

    id: str
    url: str
    title: str
    summary: str
    content: str
    published: dt.datetime
    updated: int


def site_channel(cfg: Config) -> Channel:
    return Channel(cfg.site.title, cfg.site.description, base_url(cfg))


def day_items(
    cfg: Config, days: list[Day], bodies: dict[dt.date, str], updated: dict[dt.date, int]
) -> list[FeedItem]:
    """The site feeds' entries: one per day, `bodies` being each day's content."""
    return [
        FeedItem(
            id=entry_id(cfg, d.date),
            url=day_url(cfg, d.date),
            title=entry_title(cfg, d.date),
            summary=short_summary(cfg, d),
            content=bodies[d.date],
            published=published_at(cfg, d.date),
            updated=updated[d.date],
        )
        for d in days
    ]


def render_feeds(
    cfg: Config, days: list[Day], bodies: dict[dt.date, str], updated: dict[dt.date, int]
) -> tuple[bytes, bytes]:
    """RSS 2.0 and Atom 1.0 for the newest days (already cut to feed.max_items, newest first);
    `bodies` is each entry's content (the whole day or its linked titles, per feed.content)."""
    return render_channel(cfg, site_channel(cfg), day_items(cfg, days, bodies, updated))


def render_json_feed(
    cfg: Config, days: list[Day], bodies: dict[dt.date, str], updated: dict[dt.date, int]
) -> bytes:
    """JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/) with the same entries."""
    return render_json_channel(cfg, site_channel(cfg), day_items(cfg, days, bodies, updated))


def render_channel(cfg: Config, channel: Channel, items: list[FeedItem]) -> tuple[bytes, bytes]:
    """RSS 2.0 and Atom 1.0 of a channel's items (newest first)."""
    fg = FeedGenerator()
    # dc:creator carries the author in RSS: RSS's own <author> must be an email address.
    fg.load_extension("dc", atom=False, rss=True)
    fg.id(channel.home)
    fg.title(channel.title)
    fg.subtitle(channel.description)  # also the RSS channel description
    fg.author({"name": cfg.site.author})
    fg.language(cfg.site.language)
    # The feed's time is its newest entry's: no wall clock, so two builds give the same bytes.
    newest = max(item.updated for item in items) if items else 0
    fg.updated(from_epoch(cfg, newest))
    fg.lastBuildDate(from_epoch(cfg, newest))
    for item in items:
        # feedgen prepends by default; append keeps our newest-first order.
        fe = fg.add_entry(order="append")
        fe.id(item.id)  # also the RSS guid, isPermaLink="false"
        fe.title(item.title)
        fe.link(href=item.url, rel="alternate", type="text/html")
        fe.published(item.published)
        fe.updated(from_epoch(cfg, item.updated))
        fe.author({"name": cfg.site.author})
        fe.dc.dc_creator(cfg.site.author)
        # summary first: it becomes the RSS description, which feedgen needs before it writes
        # content:encoded at all.
        fe.summary(item.summary)
        fe.content(item.content, type="html")

    rss_self = feed_url(cfg, RSS_FILE, channel.folder)
    atom_self = feed_url(cfg, ATOM_FILE, channel.folder)
    self_rss = {"href": rss_self, "rel": "self", "type": "application/rss+xml"}
    self_atom = {"href": atom_self, "rel": "self", "type": "application/atom+xml"}
    alternate = {"href": channel.home, "rel": "alternate", "type": "text/html"}
    # The RSS channel <link> is the LAST link added, so there the self link goes first; in Atom
    # the alternate goes first, for readers that take the first link as the site.
    fg.link([self_rss, alternate], replace=True)
    rss = fg.rss_str(pretty=True)
    fg.link([alternate, self_atom], replace=True)
    atom = fg.atom_str(pretty=True)
    return rss, atom


def render_json_channel(cfg: Config, channel: Channel, items: list[FeedItem]) -> bytes:
    """JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/) of a channel's items."""
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": channel.title,
        "home_page_url": channel.home,
        "feed_url": feed_url(cfg, JSON_FILE, channel.folder),
        "description": channel.description,
        "language": cfg.site.language,
        "authors": [{"name": cfg.site.author}],
        "items": [
            {
                "id": item.id,
                "url": item.url,
                "title": item.title,
                "content_html": item.content,
                "summary": item.summary,
                "date_published": item.published.isoformat(),
                "date_modified": from_epoch(cfg, item.updated).isoformat(),
                "authors": [{"name": cfg.site.author}],
                "language": cfg.site.language,
            }
            for item in items
        ],
    }
    return (json.dumps(feed, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
