"""Feeds: RSS 2.0 and Atom 1.0 (feedgen) and JSON Feed 1.1 for the newest days, as bytes."""

from __future__ import annotations

import datetime as dt
import json

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
)
from .collect import Day, from_epoch, published_at
from .pages import entry_title, paper_anchors


def render_feed_summary(cfg: Config, digest: Digest) -> str:
    """A feed entry's content under `[feed] content = "summary"`: linked titles, no summaries."""
    template = jinja_env(cfg).get_template("site/feed_summary.html")
    return template.render(
        digest=digest, anchors=paper_anchors(digest), day_url=day_url(cfg, digest.date)
    )


def short_summary(cfg: Config, day: Day) -> str:
    count = strings(cfg.site.language)["papers"].format(n=day.papers)
    more = " …" if day.papers > len(day.titles) else ""
    return f"{count}: " + " · ".join(day.titles) + more


def render_feeds(
    cfg: Config, days: list[Day], bodies: dict[dt.date, str], updated: dict[dt.date, int]
) -> tuple[bytes, bytes]:
    """RSS 2.0 and Atom 1.0 for the newest days (already cut to feed.max_items, newest first);
    `bodies` is each entry's content (the whole day or its linked titles, per feed.content)."""
    base = base_url(cfg)
    fg = FeedGenerator()
    # dc:creator carries the author in RSS: RSS's own <author> must be an email address.
    fg.load_extension("dc", atom=False, rss=True)
    fg.id(base)
    fg.title(cfg.site.title)
    fg.subtitle(cfg.site.description)  # also the RSS channel description
    fg.author({"name": cfg.site.author})
    fg.language(cfg.site.language)
    # The feed's time is its newest entry's: no wall clock, so two builds give the same bytes.
    newest = max(updated[d.date] for d in days) if days else 0
    fg.updated(from_epoch(cfg, newest))
    fg.lastBuildDate(from_epoch(cfg, newest))
    for day in days:
        # feedgen prepends by default; append keeps our newest-first order.
        fe = fg.add_entry(order="append")
        fe.id(entry_id(cfg, day.date))  # also the RSS guid, isPermaLink="false"
        fe.title(entry_title(cfg, day.date))
        fe.link(href=day_url(cfg, day.date), rel="alternate", type="text/html")
        fe.published(published_at(cfg, day.date))
        fe.updated(from_epoch(cfg, updated[day.date]))
        fe.author({"name": cfg.site.author})
        fe.dc.dc_creator(cfg.site.author)
        # summary first: it becomes the RSS description, which feedgen needs before it writes
        # content:encoded at all.
        fe.summary(short_summary(cfg, day))
        fe.content(bodies[day.date], type="html")

    self_rss = {"href": feed_url(cfg, RSS_FILE), "rel": "self", "type": "application/rss+xml"}
    self_atom = {"href": feed_url(cfg, ATOM_FILE), "rel": "self", "type": "application/atom+xml"}
    alternate = {"href": base, "rel": "alternate", "type": "text/html"}
    # The RSS channel <link> is the LAST link added, so there the self link goes first; in Atom
    # the alternate goes first, for readers that take the first link as the site.
    fg.link([self_rss, alternate], replace=True)
    rss = fg.rss_str(pretty=True)
    fg.link([alternate, self_atom], replace=True)
    atom = fg.atom_str(pretty=True)
    return rss, atom


def render_json_feed(
    cfg: Config, days: list[Day], bodies: dict[dt.date, str], updated: dict[dt.date, int]
) -> bytes:
    """JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/) with the same entries."""
    base = base_url(cfg)
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": cfg.site.title,
        "home_page_url": base,
        "feed_url": feed_url(cfg, JSON_FILE),
        "description": cfg.site.description,
        "language": cfg.site.language,
        "authors": [{"name": cfg.site.author}],
        "items": [
            {
                "id": entry_id(cfg, d.date),
                "url": day_url(cfg, d.date),
                "title": entry_title(cfg, d.date),
                "content_html": bodies[d.date],
                "summary": short_summary(cfg, d),
                "date_published": published_at(cfg, d.date).isoformat(),
                "date_modified": from_epoch(cfg, updated[d.date]).isoformat(),
                "authors": [{"name": cfg.site.author}],
                "language": cfg.site.language,
            }
            for d in days
        ],
    }
    return (json.dumps(feed, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
