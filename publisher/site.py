"""Digest archive -> public/: feed.xml (RSS 2.0), atom.xml, index.html and one page a day.

Readers (digest.py) turn files into Digests; this module decides what to build and writes it.

Three promises, and how they are kept:

- Deterministic bytes. No wall clock anywhere: an entry's `published` is its date at
  `feed.publish_hour` in `site.timezone`, its `updated` comes from the manifest below, and the
  feeds' own updated/lastBuildDate is the newest entry's updated.
- Stable entries. Each day's id is a tag: URI (see `urls.entry_id`). The manifest
  (`.build-manifest.json` in the output folder, replaced atomically) remembers per date the
  sha256 of the parsed digest and its `updated` time. First seen: updated = published. Content
  changed: updated = max(source file's mtime, previous updated + 1 s), so an edit moves the entry
  forward in place (same id) and a rebuild of unchanged input changes nothing.
- Cheap rebuilds. The manifest also caches, per file, (mtime_ns, size) -> what the index needs,
  and per page what it was rendered from; a file whose stat is unchanged is not read, a page whose
  inputs (digest hash, neighbours, templates+config fingerprint) are unchanged is not rendered,
  and any file is written only when its bytes differ. The feeds' HTML for the newest days is
  cached too, so adding one digest parses one file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape as xml_escape

import brotli
from feedgen.feed import FeedGenerator
from markupsafe import Markup

from .config import Config
from .digest import Digest, digest_sha, find_digests, parse_file
from .errors import ConfigError, DigestError
from .i18n import strings
from .templating import jinja_env, templates_dir
from .urls import (
    ATOM_FILE,
    JSON_FILE,
    RSS_FILE,
    SITEMAP,
    absolute_url,
    base_url,
    day_path,
    day_url,
    entry_id,
    month_path,
)

MANIFEST = ".build-manifest.json"
# Bump when the manifest's shape or the meaning of its caches changes.
MANIFEST_VERSION = 2
STYLESHEET = "style.css"
# Copied as they are from templates/site/ into the output root.
STATIC_FILES = ("style.css", "search.js", "favicon.ico", "favicon.svg")
SEARCH_FOLDER = "pagefind"  # Pagefind's bundle, under the output root
# The index shows this many newest days; the rest are on the month pages (YYYY/MM/).
INDEX_DAYS = 30
# Hugging Face's social thumbnails are 1200x648: the img's width and height reserve that shape
# before the image loads (no layout shift); CSS scales it to the column.
THUMB_SIZE = (1200, 648)
# Written beside each file as NAME.gz and NAME.br (nginx gzip_static/brotli_static, and
# `publisher serve` pick them up).
COMPRESSIBLE = frozenset({".html", ".xml", ".json", ".css", ".js", ".svg", ".txt", ".ico"})
GZIP_LEVEL = 6
BROTLI_QUALITY = 5  # as small as gzip -9 at a tenth of the time of quality 9+
_PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class BuildProblem:
    """A digest that was skipped, with where and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class BuiltDay:
    """One day in the archive: what the scheduler needs to decide about its email."""

    date: dt.date
    source: str
    sha: str


@dataclass(frozen=True, slots=True)
class BuildReport:
    output: Path
    days: int
    written: tuple[Path, ...]  # files whose bytes changed (pages, feeds, stylesheet)
    unchanged: int  # pages and feeds left untouched
    parsed: int  # digests read and parsed in this build (the rest came from the cache)
    problems: tuple[BuildProblem, ...]
    rss: Path
    atom: Path
    built: tuple[BuiltDay, ...] = ()  # every day in the archive, newest first
    json_feed: Path | None = None
    searched: bool = False  # the Pagefind index was (re)built in this build
    removed: tuple[Path, ...] = ()  # pages of days (and months) that left the inbox

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class _Day:
    """What the build knows about one digest day; `digest` is loaded only when needed."""

    date: dt.date
    source: str
    sha: str
    papers: int
    titles: tuple[str, ...]
    mtime: int | None  # seconds, of the source file, for `updated` after an edit
    digest: Digest | None = None


# ---------------------------------------------------------------------------------------------
# URLs and ids


def paper_anchors(digest: Digest) -> list[str]:
    """Each paper's id on its day page: the arXiv id (`#2405.12345`), else `paper-N`; a repeat
    gets `-2`, `-3` so ids stay unique."""
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


def entry_title(cfg: Config, date: dt.date) -> str:
    """feed.entry_title with {date}; a bad placeholder is the user's error, named as such."""
    try:
        return cfg.feed.entry_title.format(date=date.isoformat())
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"{cfg.path}: 'feed.entry_title' may use only {{date}}: {cfg.feed.entry_title!r} "
            f"({exc.__class__.__name__}: {exc})"
        ) from None


def published_at(cfg: Config, date: dt.date) -> dt.datetime:
    """A digest's time in the feeds: its date at feed.publish_hour in site.timezone."""
    return dt.datetime.combine(date, dt.time(cfg.feed.publish_hour), tzinfo=cfg.tz)


def _epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def _from_epoch(cfg: Config, seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=cfg.tz)


# ---------------------------------------------------------------------------------------------
# Reading digests


def _day_from_digest(digest: Digest, mtime: int | None) -> _Day:
    return _Day(
        date=digest.date,
        source=digest.source,
        sha=digest_sha(digest),
        papers=len(digest.papers),
        titles=tuple(p.title for p in digest.papers[:3]),
        mtime=mtime,
        digest=digest,
    )


def _read_inbox(
    cfg: Config, file_cache: dict[str, Any], problems: list[BuildProblem]
) -> tuple[list[_Day], dict[str, Any], int]:
    """Every digest in the inbox; files whose (mtime_ns, size) match the cache are not read."""
    days: list[_Day] = []
    new_cache: dict[str, Any] = {}
    parsed = 0
    for path in find_digests(cfg.digests.folder, dated_only=cfg.digests.managed):
        key = str(path)
        try:
            st = path.stat()
        except OSError as exc:
            problems.append(BuildProblem(key, 0, f"cannot read file: {exc.strerror or exc}"))
            continue
        hit = file_cache.get(key)
        if hit and hit.get("mtime_ns") == st.st_mtime_ns and hit.get("size") == st.st_size:
            new_cache[key] = hit
            days.append(
                _Day(
                    date=dt.date.fromisoformat(hit["date"]),
                    source=key,
                    sha=hit["sha"],
                    papers=hit["papers"],
                    titles=tuple(hit["titles"]),
                    mtime=int(st.st_mtime),
                )
            )
            continue
        try:
            digest = parse_file(path)
        except DigestError as exc:
            problems.append(BuildProblem(exc.path, exc.line, exc.problem))
            continue
        parsed += 1
        day = _day_from_digest(digest, int(st.st_mtime))
        new_cache[key] = {
            "mtime_ns": st.st_mtime_ns,
            "size": st.st_size,
            "date": day.date.isoformat(),
            "sha": day.sha,
            "papers": day.papers,
            "titles": list(day.titles),
        }
        days.append(day)
    return days, new_cache, parsed


def _one_per_date(days: Iterable[_Day], problems: list[BuildProblem]) -> list[_Day]:
    """Newest first; a second digest for a date already taken is reported and skipped."""
    by_date: dict[dt.date, _Day] = {}
    for day in days:
        if day.date in by_date:
            other = by_date[day.date].source
            reason = f"another digest for {day.date} is already in the archive ({other}); skipped"
            problems.append(BuildProblem(day.source, 1, reason))
            continue
        by_date[day.date] = day
    return [by_date[d] for d in sorted(by_date, reverse=True)]


def _load(day: _Day) -> _Day:
    if day.digest is not None:
        return day
    return dataclasses.replace(day, digest=parse_file(day.source))


# ---------------------------------------------------------------------------------------------
# The manifest


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        return {}
    return data


def _fingerprint(cfg: Config) -> str:
    """Everything besides a digest that shapes a page or a feed entry."""
    h = hashlib.sha256()
    # Not the output folder: the same inputs built elsewhere give the same bytes.
    feed = dataclasses.replace(cfg.feed, output=Path())
    h.update(repr((MANIFEST_VERSION, cfg.site, feed)).encode())
    folder = templates_dir(cfg)
    # The site's templates and what they import or include from the top (templates/_macros.html).
    templates = sorted(folder.glob("*.html")) + sorted((folder / "site").rglob("*"))
    for path in templates:
        if path.is_file():
            h.update(str(path.name).encode() + b"\0" + path.read_bytes() + b"\0")
    for path in _code_files():
        h.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=1)
def _code_files() -> tuple[Path, ...]:
    """Every module of the package. The pages depend on site.py and what it imports, directly
    or not (templating, i18n, digest, markdown, config...); hashing the whole package (a few
    hundred kB, about a millisecond) never leaves one out, at the price of one full re-render
    after any code change."""
    found = []
    for root, dirs, files in os.walk(_PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [Path(root, name) for name in files if name.endswith(".py")]
    return tuple(sorted(found))


def _updated_times(
    cfg: Config, days: list[_Day], history: dict[str, Any]
) -> tuple[dict[dt.date, int], dict[str, Any]]:
    """Each day's `updated` (epoch seconds) and the new history to store.

    First seen: updated = published. Changed content: max(file mtime, previous + 1 s). Then
    made distinct (the W3C validator warns on equal updated times) by moving later by 1 s.
    """
    times: dict[dt.date, int] = {}
    for day in sorted(days, key=lambda d: d.date):
        published = _epoch(published_at(cfg, day.date))
        prev = history.get(day.date.isoformat())
        if prev is None:
            updated = published
        elif prev["sha"] == day.sha:
            updated = prev["updated"]
        else:
            updated = max(day.mtime or 0, prev["updated"] + 1)
        times[day.date] = max(updated, published)
    taken: set[int] = set()
    for date in sorted(times):
        while times[date] in taken:
            times[date] += 1
        taken.add(times[date])
    new_history = dict(history)
    for day in days:
        new_history[day.date.isoformat()] = {"sha": day.sha, "updated": times[day.date]}
    return times, new_history


# ---------------------------------------------------------------------------------------------
# Writing


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically, and only when the bytes differ (so mtimes mean something)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the web server must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


# ---------------------------------------------------------------------------------------------
# Rendering


def render_papers(cfg: Config, digest: Digest) -> Markup:
    """The papers of a day as HTML with absolute URLs only: the day page's body and the feed's
    content. Rendered once per day and reused for both."""
    template = jinja_env(cfg).get_template("site/papers.html")
    html = template.render(
        digest=digest,
        anchors=paper_anchors(digest),
        thumb_size=THUMB_SIZE,
        abs_url=lambda u: absolute_url(cfg, u),
    )
    return Markup(html)


def render_feed_summary(cfg: Config, digest: Digest) -> str:
    """A feed entry's content under `[feed] content = "summary"`: linked titles, no summaries."""
    template = jinja_env(cfg).get_template("site/feed_summary.html")
    return template.render(
        digest=digest, anchors=paper_anchors(digest), day_url=day_url(cfg, digest.date)
    )


def _page_context(
    cfg: Config, depth: int, canonical: str, og_type: str = "website", og_image: str = ""
) -> dict[str, Any]:
    base = base_url(cfg)
    return {
        "site": cfg.site,
        "root": "../" * depth,
        "rss_url": urljoin(base, RSS_FILE),
        "atom_url": urljoin(base, ATOM_FILE),
        "json_url": urljoin(base, JSON_FILE),
        "search": cfg.feed.search,
        "canonical": canonical,
        "og_type": og_type,
        "og_image": og_image,
        "og_locale": {"ko": "ko_KR", "en": "en_US"}.get(cfg.site.language, cfg.site.language),
    }


def _month_label(cfg: Config, year: int, month: int) -> str:
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
    ctx = _page_context(
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
            month_label=_month_label(cfg, date.year, date.month),
            newer=(newer, root + day_path(newer)) if newer else None,
            older=(older, root + day_path(older)) if older else None,
        )
    )
    return html.encode("utf-8")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _day_items(days: list[_Day], root: str) -> list[dict[str, Any]]:
    return [
        {"date": d.date, "href": root + day_path(d.date), "papers": d.papers, "titles": d.titles}
        for d in days
    ]


def _months(days: list[_Day]) -> list[tuple[int, int]]:
    """Every (year, month) with a day, oldest first."""
    return sorted({(d.date.year, d.date.month) for d in days})


def render_index(cfg: Config, days: list[_Day]) -> bytes:
    """The newest INDEX_DAYS days and a link to every month page."""
    ctx = _page_context(cfg, depth=0, canonical=base_url(cfg))
    months = [
        {"year": y, "month": m, "href": month_path(y, m), "label": f"{m:02d}"}
        for y, m in _months(days)
    ]
    html = (
        jinja_env(cfg)
        .get_template("site/index.html")
        .render(**ctx, days=_day_items(days[:INDEX_DAYS], ""), months=months)
    )
    return html.encode("utf-8")


def render_month(
    cfg: Config,
    month: tuple[int, int],
    days: list[_Day],
    newer: tuple[int, int] | None,
    older: tuple[int, int] | None,
) -> bytes:
    """A month's days, newest first, with links to the next and previous months."""
    y, m = month
    ctx = _page_context(cfg, depth=2, canonical=urljoin(base_url(cfg), month_path(y, m)))
    root = ctx["root"]

    def link(other: tuple[int, int] | None) -> tuple[str, str] | None:
        return (_month_label(cfg, *other), root + month_path(*other)) if other else None

    html = (
        jinja_env(cfg)
        .get_template("site/month.html")
        .render(
            **ctx,
            title=_month_label(cfg, y, m),
            papers=sum(d.papers for d in days),
            days=_day_items(days, root),
            newer=link(newer),
            older=link(older),
        )
    )
    return html.encode("utf-8")


def render_sitemap(cfg: Config, days: list[_Day], updated: dict[dt.date, int]) -> bytes:
    """sitemap.xml: the index, every month page and every day page, with lastmod."""
    base = base_url(cfg)
    urls: list[tuple[str, int]] = []
    if days:
        urls.append((base, max(updated.values())))
    last: dict[tuple[int, int], int] = {}
    for d in days:
        key = (d.date.year, d.date.month)
        last[key] = max(last.get(key, 0), updated[d.date])
    urls += [(urljoin(base, month_path(*k)), t) for k, t in sorted(last.items(), reverse=True)]
    urls += [(day_url(cfg, d.date), updated[d.date]) for d in days]
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    lines.append('<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">')
    for loc, t in urls:
        mod = _from_epoch(cfg, t).isoformat()
        lines.append(f"<url><loc>{xml_escape(loc)}</loc><lastmod>{mod}</lastmod></url>")
    lines.append("</urlset>")
    return ("\n".join(lines) + "\n").encode("utf-8")


def render_robots(cfg: Config) -> bytes:
    return f"User-agent: *\nAllow: /\nSitemap: {urljoin(base_url(cfg), SITEMAP)}\n".encode()


def _short_summary(cfg: Config, day: _Day) -> str:
    count = strings(cfg.site.language)["papers"].format(n=day.papers)
    more = " …" if day.papers > len(day.titles) else ""
    return f"{count}: " + " · ".join(day.titles) + more


def render_feeds(
    cfg: Config, days: list[_Day], bodies: dict[dt.date, str], updated: dict[dt.date, int]
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
    fg.updated(_from_epoch(cfg, newest))
    fg.lastBuildDate(_from_epoch(cfg, newest))
    for day in days:
        # feedgen prepends by default; append keeps our newest-first order.
        fe = fg.add_entry(order="append")
        fe.id(entry_id(cfg, day.date))  # also the RSS guid, isPermaLink="false"
        fe.title(entry_title(cfg, day.date))
        fe.link(href=day_url(cfg, day.date), rel="alternate", type="text/html")
        fe.published(published_at(cfg, day.date))
        fe.updated(_from_epoch(cfg, updated[day.date]))
        fe.author({"name": cfg.site.author})
        fe.dc.dc_creator(cfg.site.author)
        # summary first: it becomes the RSS description, which feedgen needs before it writes
        # content:encoded at all.
        fe.summary(_short_summary(cfg, day))
        fe.content(bodies[day.date], type="html")

    self_rss = {"href": urljoin(base, RSS_FILE), "rel": "self", "type": "application/rss+xml"}
    self_atom = {"href": urljoin(base, ATOM_FILE), "rel": "self", "type": "application/atom+xml"}
    alternate = {"href": base, "rel": "alternate", "type": "text/html"}
    # The RSS channel <link> is the LAST link added, so there the self link goes first; in Atom
    # the alternate goes first, for readers that take the first link as the site.
    fg.link([self_rss, alternate], replace=True)
    rss = fg.rss_str(pretty=True)
    fg.link([alternate, self_atom], replace=True)
    atom = fg.atom_str(pretty=True)
    return rss, atom


def render_json_feed(
    cfg: Config, days: list[_Day], bodies: dict[dt.date, str], updated: dict[dt.date, int]
) -> bytes:
    """JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/) with the same entries."""
    base = base_url(cfg)
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": cfg.site.title,
        "home_page_url": base,
        "feed_url": urljoin(base, JSON_FILE),
        "description": cfg.site.description,
        "language": cfg.site.language,
        "authors": [{"name": cfg.site.author}],
        "items": [
            {
                "id": entry_id(cfg, d.date),
                "url": day_url(cfg, d.date),
                "title": entry_title(cfg, d.date),
                "content_html": bodies[d.date],
                "summary": _short_summary(cfg, d),
                "date_published": published_at(cfg, d.date).isoformat(),
                "date_modified": _from_epoch(cfg, updated[d.date]).isoformat(),
                "authors": [{"name": cfg.site.author}],
                "language": cfg.site.language,
            }
            for d in days
        ],
    }
    return (json.dumps(feed, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# The build


class SiteWriter:
    """Writes the output through `write_if_changed` and records what it did (Pelican's writer):
    each file written, with its .gz and .br copies, and how many were left as they were."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: list[Path] = []
        self.removed: list[Path] = []  # pages of days no longer in the inbox
        self.unchanged = 0

    def is_current(self, path: Path) -> bool:
        """A file present with its compressed copies: a page whose inputs are unchanged may be
        left as it is (counted as unchanged)."""
        if path.is_file() and not _compress_missing(path):
            self.unchanged += 1
            return True
        return False

    def write(self, path: Path, data: bytes) -> None:
        if write_if_changed(path, data) or _compress_missing(path):
            self.written.append(path)
            _precompress(path, data)
        else:
            self.unchanged += 1


@dataclass(slots=True)
class _Context:
    """What a build collected before writing: the days (newest first), their `updated` times,
    and the previous build's caches; rendered bodies are added as the pages need them."""

    cfg: Config
    days: list[_Day]
    updated: dict[dt.date, int]
    history: dict[str, Any]
    file_cache: dict[str, Any]
    parsed: int
    problems: list[BuildProblem]
    fingerprint: str
    cache: dict[str, Any]  # the previous manifest's caches, if its fingerprint matches
    bodies: dict[dt.date, str] = field(default_factory=dict)
    feed_bodies: dict[dt.date, str] = field(default_factory=dict)
    first_images: dict[dt.date, str] = field(default_factory=dict)
    failed: set[dt.date] = field(default_factory=set)

    @property
    def body_cache(self) -> dict[str, Any]:
        return self.cache.get("bodies", {})

    def load(self, i: int) -> Digest:
        day = self.days[i]
        if day.date in self.failed:
            raise DigestError(day.source, 0, "already reported")
        try:
            self.days[i] = day = _load(day)
        except DigestError as exc:  # changed on disk since it was looked at
            self.failed.add(day.date)
            self.problems.append(BuildProblem(exc.path, exc.line, exc.problem))
            raise
        assert day.digest is not None
        return day.digest

    def body_of(self, i: int) -> str:
        day = self.days[i]
        if day.date in self.bodies:
            return self.bodies[day.date]
        hit = self.body_cache.get(day.date.isoformat())
        if hit and hit["sha"] == day.sha:
            self.bodies[day.date] = hit["html"]
            self.first_images[day.date] = hit.get("image", "")
        else:
            digest = self.load(i)
            self.bodies[day.date] = str(render_papers(self.cfg, digest))
            image = next((p.image for p in digest.papers if p.image), None)
            self.first_images[day.date] = absolute_url(self.cfg, image)
        return self.bodies[day.date]

    def feed_body_of(self, i: int) -> str:
        day = self.days[i]
        if self.cfg.feed.content == "full":
            return self.body_of(i)
        if day.date not in self.feed_bodies:
            hit = self.body_cache.get(day.date.isoformat())
            if hit and hit["sha"] == day.sha and "feed" in hit:
                self.feed_bodies[day.date] = hit["feed"]
            else:
                self.feed_bodies[day.date] = render_feed_summary(self.cfg, self.load(i))
        return self.feed_bodies[day.date]

    def cached_body(self, d: _Day) -> dict[str, Any]:
        entry: dict[str, Any] = {"sha": d.sha}
        if d.date in self.bodies:
            entry["html"] = self.bodies[d.date]
            entry["image"] = self.first_images.get(d.date, "")
        else:
            prev = self.body_cache.get(d.date.isoformat(), {})
            entry.update({k: v for k, v in prev.items() if k in ("html", "image")})
        if d.date in self.feed_bodies:
            entry["feed"] = self.feed_bodies[d.date]
        return entry


def _collect(cfg: Config, manifest: dict[str, Any], digests: list[Digest] | None) -> _Context:
    """Read the inbox (or take `digests`), one digest per date, and each day's `updated`."""
    fingerprint = _fingerprint(cfg)
    cache = manifest.get("cache", {}) if manifest.get("fingerprint") == fingerprint else {}
    problems: list[BuildProblem] = []
    if digests is None:
        raw_days, file_cache, parsed = _read_inbox(cfg, manifest.get("files", {}), problems)
    else:
        raw_days = [_day_from_digest(d, _mtime(d.source)) for d in digests]
        file_cache, parsed = manifest.get("files", {}), len(digests)
    days = _one_per_date(raw_days, problems)  # newest first
    updated, history = _updated_times(cfg, days, manifest.get("entries", {}))
    return _Context(cfg, days, updated, history, file_cache, parsed, problems, fingerprint, cache)


def _write_day_pages(ctx: _Context, writer: SiteWriter) -> dict[str, Any]:
    """Each day's page, rendered only when its inputs changed; returns the pages' inputs."""
    cfg, days, out = ctx.cfg, ctx.days, writer.out
    page_cache: dict[str, Any] = ctx.cache.get("pages", {})
    new_pages: dict[str, Any] = {}
    for i, day in enumerate(days):
        newer = days[i - 1].date if i > 0 else None
        older = days[i + 1].date if i + 1 < len(days) else None
        key = day.date.isoformat()
        inputs = {"sha": day.sha, "newer": _iso(newer), "older": _iso(older)}
        page = out / day_path(day.date) / "index.html"
        new_pages[key] = inputs
        if page_cache.get(key) == inputs and writer.is_current(page):
            continue
        try:
            body = Markup(ctx.body_of(i))
        except DigestError:
            new_pages.pop(key)
            continue
        data = render_day_page(
            cfg, day.date, body, day.papers, newer, older, day.titles, ctx.first_images[day.date]
        )
        writer.write(page, data)
    return new_pages


def _write_month_pages(ctx: _Context, writer: SiteWriter) -> dict[str, Any]:
    """Each month's page, rendered only when its days changed; returns the pages' inputs."""
    days = ctx.days
    month_cache: dict[str, Any] = ctx.cache.get("months", {})
    new_months: dict[str, Any] = {}
    months = _months(days)
    for j, month in enumerate(months):
        in_month = [d for d in days if (d.date.year, d.date.month) == month]
        newer_m = months[j + 1] if j + 1 < len(months) else None
        older_m = months[j - 1] if j > 0 else None
        key = f"{month[0]:04d}-{month[1]:02d}"
        inputs = {
            "days": [[d.date.isoformat(), d.sha] for d in in_month],
            "newer": list(newer_m) if newer_m else None,
            "older": list(older_m) if older_m else None,
        }
        page = writer.out / month_path(*month) / "index.html"
        new_months[key] = inputs
        if month_cache.get(key) == inputs and writer.is_current(page):
            continue
        writer.write(page, render_month(ctx.cfg, month, in_month, newer_m, older_m))
    return new_months


def _write_feeds_and_index(ctx: _Context, writer: SiteWriter) -> list[_Day]:
    """The feeds, the index, the sitemap, robots.txt and the static files; returns the feeds'
    days (the newest feed.max_items whose digest could be read)."""
    cfg, days, out = ctx.cfg, ctx.days, writer.out
    feed_days = days[: cfg.feed.max_items]
    feed_dates = {d.date for d in feed_days}
    for i, day in enumerate(days):
        if day.date in feed_dates:
            try:
                ctx.feed_body_of(i)
            except DigestError:
                continue
    feeds = ctx.feed_bodies if cfg.feed.content == "summary" else ctx.bodies
    feed_days = [d for d in feed_days if d.date in feeds]

    rss, atom = render_feeds(cfg, feed_days, feeds, ctx.updated)
    folder = templates_dir(cfg) / "site"
    static = {
        out / "index.html": render_index(cfg, days),
        out / RSS_FILE: rss,
        out / ATOM_FILE: atom,
        out / JSON_FILE: render_json_feed(cfg, feed_days, feeds, ctx.updated),
        out / SITEMAP: render_sitemap(cfg, days, ctx.updated),
        out / "robots.txt": render_robots(cfg),
    }
    for name in STATIC_FILES:
        static[out / name] = (folder / name).read_bytes()
    for path, data in static.items():
        writer.write(path, data)
    return feed_days


def build_site(cfg: Config, *, digests: list[Digest] | None = None) -> BuildReport:
    """Build feeds and pages into feed.output from the inbox (or from `digests` when given).

    Collect (read the digests and the manifest), then write through one SiteWriter: the day
    pages, the month pages, the feeds and the index, the search index, and the manifest.
    A bad digest is reported in the result and skipped; everything else is still built.
    """
    out = cfg.feed.output
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    manifest = _read_manifest(manifest_path)
    ctx = _collect(cfg, manifest, digests)
    writer = SiteWriter(out)
    new_pages = _write_day_pages(ctx, writer)
    new_months = _write_month_pages(ctx, writer)
    feed_days = _write_feeds_and_index(ctx, writer)
    if digests is None:
        # Pages of days that left the inbox go too; a day whose file is only bad for now (a
        # half-written edit) keeps its page, and its entry in the manifest, until it is fixed.
        kept = _dates_of(ctx.problems)
        new_pages.update({k: v for k, v in _old_pages(manifest).items() if k in kept})
        _remove_stale(writer, manifest, new_pages, new_months)

    searched = False
    changed = writer.written or writer.removed
    if cfg.feed.search and (changed or not (out / SEARCH_FOLDER / "pagefind.js").is_file()):
        index_search(out)
        searched = True

    new_manifest = {
        "version": MANIFEST_VERSION,
        "fingerprint": ctx.fingerprint,
        "entries": ctx.history,
        "files": ctx.file_cache,
        "cache": {
            "pages": new_pages,
            "months": new_months,
            # Only the feed's days: enough to rebuild the feeds without parsing them again.
            "bodies": {d.date.isoformat(): ctx.cached_body(d) for d in feed_days},
        },
    }
    text = json.dumps(new_manifest, ensure_ascii=False, sort_keys=True, indent=0)
    write_if_changed(manifest_path, text.encode("utf-8"))
    days = ctx.days
    return BuildReport(
        output=out,
        days=len(days),
        written=tuple(writer.written),
        removed=tuple(writer.removed),
        unchanged=writer.unchanged,
        parsed=ctx.parsed,
        problems=tuple(ctx.problems),
        rss=out / RSS_FILE,
        atom=out / ATOM_FILE,
        built=tuple(BuiltDay(d.date, d.source, d.sha) for d in days),
        json_feed=out / JSON_FILE,
        searched=searched,
    )


def _old_pages(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest.get("cache", {}).get("pages", {})


_DATE_IN_PATH = re.compile(r"(\d{4})[/-]?(\d{2})[/-]?(\d{2})(?:\.md)?$")


def _dates_of(problems: Iterable[BuildProblem]) -> set[str]:
    """The days (YYYY-MM-DD) that bad files are named for, as far as their names tell."""
    dates = set()
    for problem in problems:
        m = _DATE_IN_PATH.search(Path(problem.path).as_posix())
        if m:
            dates.add("-".join(m.groups()))
    return dates


def _remove_stale(
    writer: SiteWriter,
    manifest: dict[str, Any],
    pages: dict[str, Any],
    months: dict[str, Any],
) -> None:
    """Delete the day and month pages of the previous build that this build no longer has (a
    digest deleted from the inbox, or a whole month of them), with their compressed copies and
    the folders they leave empty. The index, the feeds and the sitemap are rebuilt from the days
    that remain, and a removal counts as a write, so the search index is rebuilt without them."""
    cache = manifest.get("cache", {})
    gone: list[Path] = []
    for key in set(_old_pages(manifest)) - set(pages):
        gone.append(writer.out / day_path(dt.date.fromisoformat(key)) / "index.html")
    for key in set(cache.get("months", {})) - set(months):
        year, month = (int(x) for x in key.split("-"))
        gone.append(writer.out / month_path(year, month) / "index.html")
    for page in sorted(gone):
        for path in (page, *_compressed(page)):
            path.unlink(missing_ok=True)
        writer.removed.append(page)
        folder = page.parent
        while folder != writer.out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent


# ---------------------------------------------------------------------------------------------
# Precompressed copies and the search index


def _compressed(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".gz"), path.with_name(path.name + ".br")


def _compress_missing(path: Path) -> bool:
    if path.suffix not in COMPRESSIBLE:
        return False
    return not all(p.is_file() for p in _compressed(path))


def _precompress(path: Path, data: bytes) -> None:
    """NAME.gz and NAME.br beside NAME, deterministic (no name or time in the gzip header)."""
    if path.suffix not in COMPRESSIBLE:
        return
    gz, br = _compressed(path)
    write_if_changed(gz, gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))
    write_if_changed(br, brotli.compress(data, quality=BROTLI_QUALITY))


def index_search(out: Path) -> None:
    """Run Pagefind over the built day pages (only they carry data-pagefind-body); its bundle
    goes to out/pagefind/. Pagefind has no incremental mode: the whole index is rebuilt, in a
    time measured by bench/build_site.py, into a hidden folder (never served) that then takes
    the old bundle's place, so no stale index file piles up (Pagefind leaves them behind)."""
    try:
        from pagefind.service import get_executable
    except ImportError:  # pragma: no cover - a dependency, but say so plainly if it is missing
        get_executable = None  # type: ignore[assignment]
    exe = get_executable() if get_executable else None
    if exe is None:
        raise ConfigError(
            "'feed.search' is on but the Pagefind binary is missing: pip install 'pagefind[bin]' "
            "(or set search = false under [feed])"
        )
    fresh, old = out / f".{SEARCH_FOLDER}-new", out / f".{SEARCH_FOLDER}-old"
    for leftover in (fresh, old):
        shutil.rmtree(leftover, ignore_errors=True)
    cmd = [str(exe), "--site", str(out), "--output-path", str(fresh), "--quiet"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ConfigError(f"cannot run pagefind ({exe}): {exc.strerror or exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        last = f": {detail[-1]}" if detail else ""
        raise ConfigError(f"pagefind failed on {out} (exit {done.returncode}){last}")
    for path in sorted(fresh.glob("*")):
        if path.is_file() and path.suffix in (".js", ".css", ".json"):
            _precompress(path, path.read_bytes())
    bundle = out / SEARCH_FOLDER
    if bundle.exists():
        bundle.rename(old)
    fresh.rename(bundle)
    shutil.rmtree(old, ignore_errors=True)


def _iso(date: dt.date | None) -> str | None:
    return date.isoformat() if date else None


def _mtime(source: str) -> int | None:
    try:
        return int(os.stat(source).st_mtime)
    except (OSError, ValueError):
        return None
