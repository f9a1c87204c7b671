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
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from .config import Config
from .digest import Digest

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


def month_url(cfg: Config, year: int, month: int) -> str:
    """Absolute URL of a month's page."""
    return urljoin(base_url(cfg), month_path(year, month))


def page_url(cfg: Config, path: str) -> str:
    """Absolute URL of a path relative to the output root (`topics/agents/`, `sitemap.xml`)."""
    return urljoin(base_url(cfg), path)


def feed_url(cfg: Config, name: str, folder: str = "") -> str:
    """Absolute URL of a feed file (RSS_FILE, ATOM_FILE or JSON_FILE) in `folder`: "" for the
    site's own feeds, or the folder of a page that has its own (`topics/agents/`)."""
    return urljoin(base_url(cfg), folder + name)


# Pages and feeds per reader choice: one folder per topic, one for the weekly editions.
TOPICS_PATH = "topics/"
WEEKLY_PATH = "weekly/"


def topic_path(name: str) -> str:
    """A topic's folder: `topics/NAME/` (its page, feed.xml, atom.xml and feed.json)."""
    return f"{TOPICS_PATH}{name}/"


def topic_url(cfg: Config, name: str) -> str:
    """Absolute URL of a topic's page."""
    return urljoin(base_url(cfg), topic_path(name))


def week_path(week: object) -> str:
    """A weekly edition's page: `weekly/YYYY-Www/` (`week` is an editions.Week or its name)."""
    return f"{WEEKLY_PATH}{week}/"


def paper_anchors(digest: Digest) -> list[str]:
    """Each paper's id on its day page: the arXiv id (`#2405.12345`), else `paper-N`; a repeat
    gets `-2`, `-3` so ids stay unique. Links in feeds and emails point at them: keep them."""
    seen: set[str] = set()
    out: list[str] = []
    for i, paper in enumerate(digest.papers, 1):
        base = paper.arxiv_id or f"paper-{i}"
        anchor, n = base, 1
        while anchor in seen:
            n += 1
            anchor = f"{base}-{n}"
        seen.add(anchor)
        out.append(anchor)
    return out


def paper_url(cfg: Config, day: dt.date, anchor: str) -> str:
    """Absolute URL of a paper's card on its day page (`anchor` from `paper_anchors`)."""
    return f"{day_url(cfg, day)}#{anchor}"


def weekly_url(cfg: Config) -> str:
    """`{base_url}weekly/`: the weekly editions' page; the weekly email's "view in browser"."""
    return page_url(cfg, WEEKLY_PATH)


def entry_id(cfg: Config, date: dt.date) -> str:
    """The feed id of a day: `tag:HOST,YYYY-MM-DD:/YYYY/MM/DD/` (RFC 4151).

    A tag URI rather than the page URL because an id must never change, while the URL may move
    from http to https, to another port or under another path prefix; only the host name is in
    it. It is not a link, so the RSS guid says isPermaLink="false" and the item has a <link>.
    """
    host = urlsplit(base_url(cfg)).hostname or "localhost"
    return f"tag:{host},{date.isoformat()}:/{day_path(date)}"


def topic_entry_id(cfg: Config, name: str, date: dt.date) -> str:
    """The feed id of a day in a topic's feed: `tag:HOST,YYYY-MM-DD:/topics/NAME/YYYY/MM/DD/`,
    distinct from the day's own entry (the content is the topic's papers only)."""
    host = urlsplit(base_url(cfg)).hostname or "localhost"
    return f"tag:{host},{date.isoformat()}:/{topic_path(name)}{day_path(date)}"


def week_entry_id(cfg: Config, week: object, monday: dt.date) -> str:
    """The feed id of a weekly edition: `tag:HOST,MONDAY:/weekly/YYYY-Www/`."""
    host = urlsplit(base_url(cfg)).hostname or "localhost"
    return f"tag:{host},{monday.isoformat()}:/{week_path(week)}"


def absolute_url(cfg: Config, url: str | None) -> str:
    """An http(s) URL made absolute against site.base_url; "" for other schemes (javascript:)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme and parts.scheme.lower() not in ("http", "https"):
        return ""
    return urljoin(base_url(cfg), url)


# The web side: every path `publisher serve` answers, in one table. publisher/web/app.py makes its
# routes from it, publisher/web/security.py and the log redaction its token paths, and the
# builders below the links; a path is spelled nowhere else.


@dataclass(frozen=True, slots=True)
class WebRoute:
    """One path below `base_url` ("{token}": a signed token), the `WebSide` method answering
    it (publisher/web/app.py) and its methods (HEAD comes with GET)."""

    endpoint: str
    path: str
    methods: tuple[str, ...] = ("GET",)

    @property
    def has_token(self) -> bool:
        return "{token}" in self.path


# In matching order; the static archive answers below all of them.
WEB_ROUTES = (
    WebRoute("subscribe", "subscribe", ("GET", "POST")),
    WebRoute("web_css", "web.css"),
    WebRoute("healthz", "healthz"),
    WebRoute("metrics", "metrics"),
    WebRoute("confirm", "confirm/{token}", ("GET", "POST")),
    WebRoute("unsubscribe", "unsubscribe/{token}", ("GET", "POST")),
    WebRoute("preferences", "preferences/{token}", ("GET", "POST")),
    WebRoute("preferences_data", "preferences/{token}/data.json"),
    WebRoute("ses_webhook", "webhooks/ses", ("POST",)),
)
_BY_ENDPOINT = {route.endpoint: route for route in WEB_ROUTES}

# A path whose segment after the first is a token: that token must not leak through a Referer,
# a cache or a log line (publisher/web/security.py, publisher/web/logs.py).
TOKEN_PATH = re.compile(
    "/("
    + "|".join(dict.fromkeys(r.path.partition("/")[0] for r in WEB_ROUTES if r.has_token))
    + r")/[^/?#\s\"]+"
)


def web_url(cfg: Config, endpoint: str, token: str = "") -> str:
    """The absolute URL of one of WEB_ROUTES, its token in place."""
    return base_url(cfg) + _BY_ENDPOINT[endpoint].path.replace("{token}", token)


def subscribe_url(cfg: Config) -> str:
    """`{base_url}subscribe`: the signup form, and where it posts."""
    return web_url(cfg, "subscribe")


def confirm_url(cfg: Config, token: str) -> str:
    """`{base_url}confirm/TOKEN`: the double opt-in link of the confirmation mail."""
    return web_url(cfg, "confirm", token)


def unsubscribe_url(cfg: Config, token: str) -> str:
    """`{base_url}unsubscribe/TOKEN`: the List-Unsubscribe (RFC 8058) and footer link."""
    return web_url(cfg, "unsubscribe", token)


def preferences_url(cfg: Config, token: str) -> str:
    """`{base_url}preferences/TOKEN`: status, subscribe again, download the stored data."""
    return web_url(cfg, "preferences", token)


def preferences_data_url(cfg: Config, token: str) -> str:
    """`{base_url}preferences/TOKEN/data.json`: a JSON copy of what is stored."""
    return web_url(cfg, "preferences_data", token)
