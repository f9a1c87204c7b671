"""Digest archive -> public/: feed.xml (RSS 2.0), atom.xml, index.html and one page a day.

Readers (digest.py) turn files into Digests; this module decides what to build and writes it.

Three promises, and how they are kept:

- Deterministic bytes. No wall clock anywhere: an entry's `published` is its date at
  `feed.publish_hour` in `site.timezone`, its `updated` comes from the manifest below, and the
  feeds' own updated/lastBuildDate is the newest entry's updated.
- Stable entries. Each day's id is a tag: URI (see `entry_id`). The manifest
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
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from feedgen.feed import FeedGenerator
from markupsafe import Markup

from .config import Config
from .digest import Digest, find_digests, parse_file
from .errors import ConfigError, DigestError
from .i18n import strings
from .templating import jinja_env, templates_dir

MANIFEST = ".build-manifest.json"
# Bump when the manifest's shape or the meaning of its caches changes.
MANIFEST_VERSION = 1
RSS_FILE = "feed.xml"
ATOM_FILE = "atom.xml"
STYLESHEET = "style.css"
# Files whose change must re-render every page (the fingerprint covers them and the templates).
_CODE = [Path(__file__).with_name(n) for n in ("site.py", "markdown.py", "digest.py", "i18n.py")]


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


def base_url(cfg: Config) -> str:
    base = cfg.site.base_url
    return base if base.endswith("/") else base + "/"


def day_path(date: dt.date) -> str:
    """A day's folder relative to the output root: `YYYY/MM/DD/` (its page is index.html)."""
    return f"{date.year:04d}/{date.month:02d}/{date.day:02d}/"


def day_url(cfg: Config, date: dt.date) -> str:
    """Absolute URL of a day's page; the email's "view in browser" link. Keep it stable."""
    return urljoin(base_url(cfg), day_path(date))


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


def digest_sha(digest: Digest) -> str:
    """A hash of what a digest says (not where it lives, nor its whitespace)."""
    data = digest.to_dict()
    data.pop("file", None)
    data.pop("warnings", None)
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    inbox: Path, file_cache: dict[str, Any], problems: list[BuildProblem]
) -> tuple[list[_Day], dict[str, Any], int]:
    """Every digest in the inbox; files whose (mtime_ns, size) match the cache are not read."""
    days: list[_Day] = []
    new_cache: dict[str, Any] = {}
    parsed = 0
    for path in find_digests(inbox):
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
    folder = templates_dir(cfg) / "site"
    for path in sorted(folder.rglob("*")) + _CODE:
        if path.is_file():
            h.update(str(path.name).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


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
    html = template.render(digest=digest, abs_url=lambda u: absolute_url(cfg, u))
    return Markup(html)


def _page_context(cfg: Config, depth: int) -> dict[str, Any]:
    base = base_url(cfg)
    return {
        "site": cfg.site,
        "root": "../" * depth,
        "rss_url": urljoin(base, RSS_FILE),
        "atom_url": urljoin(base, ATOM_FILE),
    }


def render_day_page(
    cfg: Config,
    date: dt.date,
    body: Markup,
    papers: int,
    newer: dt.date | None,
    older: dt.date | None,
) -> bytes:
    ctx = _page_context(cfg, depth=3)
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
            canonical=day_url(cfg, date),
            newer=(newer, root + day_path(newer)) if newer else None,
            older=(older, root + day_path(older)) if older else None,
        )
    )
    return html.encode("utf-8")


def render_index(cfg: Config, days: list[_Day]) -> bytes:
    ctx = _page_context(cfg, depth=0)
    items = [
        {"date": d.date, "href": day_path(d.date), "papers": d.papers, "titles": d.titles}
        for d in days
    ]
    html = jinja_env(cfg).get_template("site/index.html").render(**ctx, days=items)
    return html.encode("utf-8")


def _short_summary(cfg: Config, day: _Day) -> str:
    count = strings(cfg.site.language)["papers"].format(n=day.papers)
    more = " …" if day.papers > len(day.titles) else ""
    return f"{count}: " + " · ".join(day.titles) + more


def render_feeds(
    cfg: Config, days: list[_Day], bodies: dict[dt.date, str], updated: dict[dt.date, int]
) -> tuple[bytes, bytes]:
    """RSS 2.0 and Atom 1.0 for the newest days (already cut to feed.max_items, newest first)."""
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

    def with_links(self_file: str, mime: str) -> None:
        # The RSS channel <link> is the LAST link added, so the self link goes first.
        fg.link(
            [
                {"href": urljoin(base, self_file), "rel": "self", "type": mime},
                {"href": base, "rel": "alternate", "type": "text/html"},
            ],
            replace=True,
        )

    with_links(RSS_FILE, "application/rss+xml")
    rss = fg.rss_str(pretty=True)
    with_links(ATOM_FILE, "application/atom+xml")
    atom = fg.atom_str(pretty=True)
    return rss, atom


# ---------------------------------------------------------------------------------------------
# The build


def build_site(cfg: Config, *, digests: list[Digest] | None = None) -> BuildReport:
    """Build feeds and pages into feed.output from the inbox (or from `digests` when given).

    A bad digest is reported in the result and skipped; everything else is still built.
    """
    out = cfg.feed.output
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    manifest = _read_manifest(manifest_path)
    fingerprint = _fingerprint(cfg)
    cache = manifest.get("cache", {}) if manifest.get("fingerprint") == fingerprint else {}
    problems: list[BuildProblem] = []

    if digests is None:
        raw_days, file_cache, parsed = _read_inbox(
            cfg.digests.inbox, manifest.get("files", {}), problems
        )
    else:
        raw_days = [_day_from_digest(d, _mtime(d.source)) for d in digests]
        file_cache, parsed = manifest.get("files", {}), len(digests)
    days = _one_per_date(raw_days, problems)  # newest first
    updated, history = _updated_times(cfg, days, manifest.get("entries", {}))

    written: list[Path] = []
    unchanged = 0
    page_cache: dict[str, Any] = cache.get("pages", {})
    body_cache: dict[str, Any] = cache.get("bodies", {})
    new_pages: dict[str, Any] = {}
    feed_days = days[: cfg.feed.max_items]
    feed_dates = {d.date for d in feed_days}
    bodies: dict[dt.date, str] = {}
    failed: set[dt.date] = set()

    def body_of(i: int) -> str:
        day = days[i]
        if day.date in bodies:
            return bodies[day.date]
        if day.date in failed:
            raise DigestError(day.source, 0, "already reported")
        hit = body_cache.get(day.date.isoformat())
        if hit and hit["sha"] == day.sha:
            bodies[day.date] = hit["html"]
        else:
            try:
                days[i] = day = _load(day)
            except DigestError as exc:  # changed on disk since it was looked at
                failed.add(day.date)
                problems.append(BuildProblem(exc.path, exc.line, exc.problem))
                raise
            assert day.digest is not None
            bodies[day.date] = str(render_papers(cfg, day.digest))
        return bodies[day.date]

    for i, day in enumerate(days):
        newer = days[i - 1].date if i > 0 else None
        older = days[i + 1].date if i + 1 < len(days) else None
        key = day.date.isoformat()
        inputs = {"sha": day.sha, "newer": _iso(newer), "older": _iso(older)}
        page = out / day_path(day.date) / "index.html"
        new_pages[key] = inputs
        if page_cache.get(key) == inputs and page.is_file():
            unchanged += 1
            continue
        try:
            body = Markup(body_of(i))
        except DigestError:
            new_pages.pop(key)
            continue
        data = render_day_page(cfg, day.date, body, day.papers, newer, older)
        if write_if_changed(page, data):
            written.append(page)
        else:
            unchanged += 1

    for i, day in enumerate(days):
        if day.date in feed_dates:
            try:
                body_of(i)
            except DigestError:
                continue
    feed_days = [d for d in feed_days if d.date in bodies]

    rss, atom = render_feeds(cfg, feed_days, bodies, updated)
    static = {
        out / "index.html": render_index(cfg, days),
        out / RSS_FILE: rss,
        out / ATOM_FILE: atom,
        out / STYLESHEET: (templates_dir(cfg) / "site" / STYLESHEET).read_bytes(),
    }
    for path, data in static.items():
        if write_if_changed(path, data):
            written.append(path)
        else:
            unchanged += 1

    new_manifest = {
        "version": MANIFEST_VERSION,
        "fingerprint": fingerprint,
        "entries": history,
        "files": file_cache,
        "cache": {
            "pages": new_pages,
            # Only the feed's days: enough to rebuild the feeds without parsing them again.
            "bodies": {
                d.isoformat(): {"sha": next(x.sha for x in days if x.date == d), "html": h}
                for d, h in sorted(bodies.items())
                if d in feed_dates
            },
        },
    }
    text = json.dumps(new_manifest, ensure_ascii=False, sort_keys=True, indent=0)
    write_if_changed(manifest_path, text.encode("utf-8"))
    return BuildReport(
        output=out,
        days=len(days),
        written=tuple(written),
        unchanged=unchanged,
        parsed=parsed,
        problems=tuple(problems),
        rss=out / RSS_FILE,
        atom=out / ATOM_FILE,
        built=tuple(BuiltDay(d.date, d.source, d.sha) for d in days),
    )


def _iso(date: dt.date | None) -> str | None:
    return date.isoformat() if date else None


def _mtime(source: str) -> int | None:
    try:
        return int(os.stat(source).st_mtime)
    except (OSError, ValueError):
        return None
