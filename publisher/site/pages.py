"""Pages: the day pages (their papers rendered once, reused as the feeds' content), the month
pages, the index, the sitemap and robots.txt, as bytes. No file is written here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape as xml_escape

from markupsafe import Markup

from ..config import Config
from ..digest import Digest
from ..errors import ConfigError
from ..i18n import strings
from ..templating import jinja_env
from ..urls import (
    ATOM_FILE,
    JSON_FILE,
    RSS_FILE,
    SITEMAP,
    absolute_url,
    base_url,
    day_path,
    day_url,
    feed_url,
    month_path,
    month_url,
    page_url,
    topic_url,
)
from .collect import Card, Day, from_epoch

STYLESHEET = "style.css"

# Copied as they are from templates/site/ into the output root.
STATIC_FILES = ("style.css", "search.js", "favicon.ico", "favicon.svg")

# The index shows this many newest days; the rest are on the month pages (YYYY/MM/).
INDEX_DAYS = 30

# Hugging Face's social thumbnails are 1200x648: the img's width and height reserve that shape
# before the image loads (no layout shift); CSS scales it to the column.
THUMB_SIZE = (1200, 648)


def entry_title(cfg: Config, date: dt.date) -> str:
    """feed.entry_title with {date}; a bad placeholder is the user's error, named as such."""
    try:
        return cfg.feed.entry_title.format(date=date.isoformat())
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"{cfg.path}: 'feed.entry_title' may use only {{date}}: {cfg.feed.entry_title!r} "
            f"({exc.__class__.__name__}: {exc})"
        ) from None


def render_papers(
    cfg: Config, digest: Digest, cards: list[Card], only: Collection[int] | None = None
) -> Markup:
    """The papers of a day as HTML with absolute URLs only: the day page's body and the feed's
    content (`only`: the positions of the papers to show, for a topic's feed). Each paper links
    to the pages of its topics. Rendered once per day and reused for both."""
    template = jinja_env(cfg).get_template("site/papers.html")
    labels = {t.name: t.label for t in cfg.topics}
    shown = [
        (paper, card, [(labels[n], topic_url(cfg, n)) for n in card.topics if n in labels])
        for i, (paper, card) in enumerate(zip(digest.papers, cards, strict=True))
        if only is None or i in only
    ]
    html = template.render(
        papers=shown,
        thumb_size=THUMB_SIZE,
        abs_url=lambda u: absolute_url(cfg, u),
    )
    return Markup(html)


def page_context(
    cfg: Config,
    depth: int,
    canonical: str,
    og_type: str = "website",
    og_image: str = "",
    page_feeds: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """What every page's template needs; `page_feeds` are feeds of the page's own (a topic's,
    the weekly editions') linked for autodiscovery before the site's."""
    return {
        "site": cfg.site,
        "page_feeds": page_feeds or [],
        "has_topics": bool(cfg.topics),
        "root": "../" * depth,
        "rss_url": feed_url(cfg, RSS_FILE),
        "atom_url": feed_url(cfg, ATOM_FILE),
        "json_url": feed_url(cfg, JSON_FILE),
        "search": cfg.feed.search,
        "canonical": canonical,
        "og_type": og_type,
        "og_image": og_image,
        "og_locale": {"ko": "ko_KR", "en": "en_US"}.get(cfg.site.language, cfg.site.language),
    }


def month_label(cfg: Config, year: int, month: int) -> str:
    return strings(cfg.site.language)["month_title"].format(year=year, month=month)


def render_day_page(
    cfg: Config,
    date: dt.date,
    body: Markup,
    papers: int,
    newer: dt.date | None,
    older: dt.date | None,
    titles: tuple[str, ...] = (),
    og_image: str = "",
) -> bytes:
    ctx = page_context(
        cfg, depth=3, canonical=day_url(cfg, date), og_type="article", og_image=og_image
    )
    root = ctx["root"]
    html = (
        jinja_env(cfg)
        .get_template("site/day.html")
        .render(
            **ctx,
            date=date,
            title=entry_title(cfg, date),
            body=body,
            papers=papers,
            first_titles=" · ".join(titles),
            # The first thumbnail is the page's largest paint: connect to its host early.
            image_origin=_origin(og_image),
            month_href=root + month_path(date.year, date.month),
            month_label=month_label(cfg, date.year, date.month),
            newer=(newer, root + day_path(newer)) if newer else None,
            older=(older, root + day_path(older)) if older else None,
        )
    )
    return html.encode("utf-8")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def day_items(days: list[Day], root: str) -> list[dict[str, Any]]:
    return [
        {"date": d.date, "href": root + day_path(d.date), "papers": d.papers, "titles": d.titles}
        for d in days
    ]


def months_of(days: list[Day]) -> list[tuple[int, int]]:
    """Every (year, month) with a day, oldest first."""
    return sorted({(d.date.year, d.date.month) for d in days})


def feed_links(cfg: Config, title: str, folder: str) -> dict[str, str]:
    """A page's own three feeds (in `folder`), for its <link rel="alternate"> and its links."""
    return {
        "title": title,
        "rss": feed_url(cfg, RSS_FILE, folder),
        "atom": feed_url(cfg, ATOM_FILE, folder),
        "json": feed_url(cfg, JSON_FILE, folder),
    }


def render_index(
    cfg: Config, days: list[Day], page_feeds: list[dict[str, str]] | None = None
) -> bytes:
    """The newest INDEX_DAYS days and a link to every month page."""
    ctx = page_context(cfg, depth=0, canonical=base_url(cfg), page_feeds=page_feeds)
    months = [
        {"year": y, "month": m, "href": month_path(y, m), "label": f"{m:02d}"}
        for y, m in months_of(days)
    ]
    html = (
        jinja_env(cfg)
        .get_template("site/index.html")
        .render(**ctx, days=day_items(days[:INDEX_DAYS], ""), months=months)
    )
    return html.encode("utf-8")


def render_month(
    cfg: Config,
    month: tuple[int, int],
    days: list[Day],
    newer: tuple[int, int] | None,
    older: tuple[int, int] | None,
) -> bytes:
    """A month's days, newest first, with links to the next and previous months."""
    y, m = month
    ctx = page_context(cfg, depth=2, canonical=month_url(cfg, y, m))
    root = ctx["root"]

    def link(other: tuple[int, int] | None) -> tuple[str, str] | None:
        return (month_label(cfg, *other), root + month_path(*other)) if other else None

    html = (
        jinja_env(cfg)
        .get_template("site/month.html")
        .render(
            **ctx,
            title=month_label(cfg, y, m),
            papers=sum(d.papers for d in days),
            days=day_items(days, root),
            newer=link(newer),
            older=link(older),
        )
    )
    return html.encode("utf-8")


def render_sitemap(
    cfg: Config,
    days: list[Day],
    updated: dict[dt.date, int],
    more: Iterable[tuple[str, int]] = (),
) -> bytes:
    """sitemap.xml: the index, every month page and every day page, with lastmod; `more` are
    other pages (the topic and weekly pages) as (URL, lastmod)."""
    base = base_url(cfg)
    urls: list[tuple[str, int]] = []
    if days:
        urls.append((base, max(updated.values())))
    last: dict[tuple[int, int], int] = {}
    for d in days:
        key = (d.date.year, d.date.month)
        last[key] = max(last.get(key, 0), updated[d.date])
    urls += [(month_url(cfg, *k), t) for k, t in sorted(last.items(), reverse=True)]
    urls += [(day_url(cfg, d.date), updated[d.date]) for d in days]
    urls += list(more)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    lines.append('<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">')
    for loc, t in urls:
        mod = from_epoch(cfg, t).isoformat()
        lines.append(f"<url><loc>{xml_escape(loc)}</loc><lastmod>{mod}</lastmod></url>")
    lines.append("</urlset>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_robots(cfg: Config) -> bytes:
    return f"User-agent: *\nAllow: /\nSitemap: {page_url(cfg, SITEMAP)}\n".encode()
