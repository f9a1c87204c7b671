"""Every public URL: the archive's pages and feeds, the feed ids, and the links mailed to readers.

All of them hang off `[site] base_url` (the public address, behind whatever proxy). The paths of
the day and month pages and the feed ids must never change once published: feed readers and old
emails keep them. Pure string work, no heavy import: the web server builds its links here
without loading the site builder (feedgen) or the newsletter renderer (premailer).

The token in a reader's link is signed elsewhere (publisher/tokens.py; per message in
`publisher.mailer.MessageFactory`); the builders here only place it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from .config import Config

if TYPE_CHECKING:
    from .digest import Paper

# The feeds and the sitemap, at the output root (also their paths under base_url).
RSS_FILE = "feed.xml"
ATOM_FILE = "atom.xml"
JSON_FILE = "feed.json"
SITEMAP = "sitemap.xml"


def base_url(cfg: Config) -> str:
    """`[site] base_url`, ending with "/"."""
    base = cfg.site.base_url
    return base if base.endswith("/") else base + "/"


def day_path(date: dt.date) -> str:
    """A day's folder relative to the output root: `YYYY/MM/DD/` (its page is index.html)."""
    return f"{date.year:04d}/{date.month:02d}/{date.day:02d}/"


def month_path(year: int, month: int) -> str:
    """A month's folder relative to the output root: `YYYY/MM/` (its page is index.html)."""
    return f"{year:04d}/{month:02d}/"


def day_url(cfg: Config, date: dt.date) -> str:
    """Absolute URL of a day's page; the email's "view in browser" link. Keep it stable."""
    return urljoin(base_url(cfg), day_path(date))


def paper_anchors(papers: Iterable[Paper]) -> list[str]:
    """Each paper's id on its day page (in the day's order): the arXiv id (`#2405.12345`),
    else `paper-N`; a repeat gets `-2`, `-3` so ids stay unique."""
    seen: set[str] = set()
    out: list[str] = []
    for i, paper in enumerate(papers, 1):
        base = paper.arxiv_id or f"paper-{i}"
        anchor, n = base, 1
        while anchor in seen:
            n += 1
            anchor = f"{base}-{n}"
        seen.add(anchor)
        out.append(anchor)
    return out


def paper_urls(cfg: Config, date: dt.date, papers: Iterable[Paper]) -> list[str]:
    """The absolute URL of each paper's card on its day page (`.../YYYY/MM/DD/#2405.12345`),
    in the day's order: what the weekly edition links each paper to."""
    page = day_url(cfg, date)
    return [f"{page}#{anchor}" for anchor in paper_anchors(papers)]


def weekly_url(cfg: Config) -> str:
    """`{base_url}weekly/`: the weekly editions' page; the weekly email's "view in browser"."""
    return urljoin(base_url(cfg), "weekly/")


def entry_id(cfg: Config, date: dt.date) -> str:
    """The feed id of a day: `tag:HOST,YYYY-MM-DD:/YYYY/MM/DD/` (RFC 4151).

    A tag URI rather than the page URL because an id must never change, while the URL may move
    from http to https, to another port or under another path prefix; only the host name is in
    it. It is not a link, so the RSS guid says isPermaLink="false" and the item has a <link>.
    """
    host = urlsplit(base_url(cfg)).hostname or "localhost"
    return f"tag:{host},{date.isoformat()}:/{day_path(date)}"


def absolute_url(cfg: Config, url: str | None) -> str:
    """An http(s) URL made absolute against site.base_url; "" for other schemes (javascript:)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        return ""
    return urljoin(base_url(cfg), url)


# The web side (publisher/web.py serves these paths).


def subscribe_url(cfg: Config) -> str:
    """`{base_url}subscribe`: the signup form, and where it posts."""
    return f"{base_url(cfg)}subscribe"


def confirm_url(cfg: Config, token: str) -> str:
    """`{base_url}confirm/TOKEN`: the double opt-in link of the confirmation mail."""
    return f"{base_url(cfg)}confirm/{token}"


def unsubscribe_url(cfg: Config, token: str) -> str:
    """`{base_url}unsubscribe/TOKEN`: the List-Unsubscribe (RFC 8058) and footer link."""
    return f"{base_url(cfg)}unsubscribe/{token}"


def preferences_url(cfg: Config, token: str) -> str:
    """`{base_url}preferences/TOKEN`: status, subscribe again, download the stored data."""
    return f"{base_url(cfg)}preferences/{token}"


def preferences_data_url(cfg: Config, token: str) -> str:
    """`{base_url}preferences/TOKEN/data.json`: a JSON copy of what is stored."""
    return f"{preferences_url(cfg, token)}/data.json"
