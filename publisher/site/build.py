"""The build: collect, then render and write through one SiteWriter (Pelican's `run`)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..config import Config
from ..digest import Digest
from ..errors import DigestError
from ..templating import templates_dir
from ..topics import TopicMatcher
from ..urls import (
    ATOM_FILE,
    JSON_FILE,
    RSS_FILE,
    SITEMAP,
    absolute_url,
    day_path,
    month_path,
)
from .choice import Outputs, readable, weekly_feed_links
from .collect import (
    MANIFEST,
    MANIFEST_VERSION,
    BuildProblem,
    BuiltDay,
    Card,
    Day,
    cards_key,
    config_fingerprint,
    dates_of,
    day_from_digest,
    iso,
    load_digest,
    make_cards,
    mtime_of,
    one_per_date,
    read_inbox,
    read_manifest,
    updated_times,
)
from .feeds import render_feed_summary, render_feeds, render_json_feed
from .pages import (
    STATIC_FILES,
    months_of,
    render_day_page,
    render_index,
    render_month,
    render_papers,
    render_robots,
    render_sitemap,
)
from .search import SEARCH_FOLDER, index_search
from .topic_pages import write_topics
from .weekly import write_weekly
from .writer import SiteWriter, compressed, write_if_changed


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


@dataclass(slots=True)
class Context:
    """What a build collected before writing: the days (newest first), their `updated` times,
    and the previous build's caches; rendered bodies are added as the pages need them."""

    cfg: Config
    days: list[Day]
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
    matcher: TopicMatcher = field(default_factory=lambda: TopicMatcher(()))
    cards: dict[dt.date, list[Card]] = field(default_factory=dict)
    card_cache: dict[str, Any] = field(default_factory=dict)  # the previous build's Cards

    @property
    def body_cache(self) -> dict[str, Any]:
        return self.cache.get("bodies", {})

    def load(self, i: int) -> Digest:
        day = self.days[i]
        if day.date in self.failed:
            raise DigestError(day.source, 0, "already reported")
        try:
            self.days[i] = day = load_digest(day)
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
            cards = self.cards_of(i)
            self.bodies[day.date] = str(render_papers(self.cfg, digest, cards))
            image = next((p.image for p in digest.papers if p.image), None)
            self.first_images[day.date] = absolute_url(self.cfg, image)
        return self.bodies[day.date]

    def cards_of(self, i: int) -> list[Card]:
        """The day's papers as Cards (anchor, title, votes, topics), from the manifest when
        the day is unchanged: the topic and weekly pages need no parsing of older days."""
        day = self.days[i]
        if day.date not in self.cards:
            hit = self.card_cache.get(day.date.isoformat())
            if hit and hit["sha"] == day.sha:
                self.cards[day.date] = [Card.from_json(row) for row in hit["papers"]]
            else:
                self.cards[day.date] = make_cards(self.load(i), self.matcher)
        return self.cards[day.date]

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

    def cached_body(self, d: Day) -> dict[str, Any]:
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


def collect(cfg: Config, manifest: dict[str, Any], digests: list[Digest] | None) -> Context:
    """Read the inbox (or take `digests`), one digest per date, and each day's `updated`."""
    fingerprint = config_fingerprint(cfg)
    cache = manifest.get("cache", {}) if manifest.get("fingerprint") == fingerprint else {}
    problems: list[BuildProblem] = []
    if digests is None:
        raw_days, file_cache, parsed = read_inbox(cfg, manifest.get("files", {}), problems)
    else:
        raw_days = [day_from_digest(d, mtime_of(d.source)) for d in digests]
        file_cache, parsed = manifest.get("files", {}), len(digests)
    days = one_per_date(raw_days, problems)  # newest first
    updated, history = updated_times(cfg, days, manifest.get("entries", {}))
    ctx = Context(cfg, days, updated, history, file_cache, parsed, problems, fingerprint, cache)
    ctx.matcher = TopicMatcher.from_config(cfg)
    # Cards outlive a change of templates or code: matching the topics is most of their cost.
    cards = manifest.get("cards", {})
    if cards.get("key") == cards_key(cfg):
        ctx.card_cache = cards.get("days", {})
    return ctx


def _write_day_pages(ctx: Context, writer: SiteWriter) -> dict[str, Any]:
    """Each day's page, rendered only when its inputs changed; returns the pages' inputs."""
    cfg, days, out = ctx.cfg, ctx.days, writer.out
    page_cache: dict[str, Any] = ctx.cache.get("pages", {})
    new_pages: dict[str, Any] = {}
    for i, day in enumerate(days):
        newer = days[i - 1].date if i > 0 else None
        older = days[i + 1].date if i + 1 < len(days) else None
        key = day.date.isoformat()
        inputs = {"sha": day.sha, "newer": iso(newer), "older": iso(older)}
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


def _write_month_pages(ctx: Context, writer: SiteWriter) -> dict[str, Any]:
    """Each month's page, rendered only when its days changed; returns the pages' inputs."""
    days = ctx.days
    month_cache: dict[str, Any] = ctx.cache.get("months", {})
    new_months: dict[str, Any] = {}
    months = months_of(days)
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


def _write_feeds_and_index(
    ctx: Context, writer: SiteWriter, more: list[tuple[str, int]]
) -> list[Day]:
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
        out / "index.html": render_index(cfg, days, [weekly_feed_links(cfg)]),
        out / RSS_FILE: rss,
        out / ATOM_FILE: atom,
        out / JSON_FILE: render_json_feed(cfg, feed_days, feeds, ctx.updated),
        out / SITEMAP: render_sitemap(cfg, days, ctx.updated, more),
        out / "robots.txt": render_robots(cfg),
    }
    for name in STATIC_FILES:
        static[out / name] = (folder / name).read_bytes()
    for path, data in static.items():
        writer.write(path, data)
    return feed_days


def _write_choices(
    ctx: Context, writer: SiteWriter, manifest: dict[str, Any] | None
) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The pages and feeds per reader choice: each topic's and the weekly editions', with their
    index pages; returns their inputs (for the manifest) and their URLs with lastmod (for the
    sitemap). Those of a topic no longer configured, or a week no longer in the inbox, go."""
    outputs = Outputs(ctx.cache.get("choices", {}), writer)
    days = readable(ctx)
    sitemap = write_topics(ctx, outputs, days) + write_weekly(ctx, outputs, days)
    if manifest is not None:
        outputs.remove_gone(manifest.get("cache", {}).get("choices", {}))  # any fingerprint
    return outputs.new, sitemap


def build_site(cfg: Config, *, digests: list[Digest] | None = None) -> BuildReport:
    """Build feeds and pages into feed.output from the inbox (or from `digests` when given).

    Collect (read the digests and the manifest), then write through one SiteWriter: the day
    pages, the month pages, the feeds and the index, the search index, and the manifest.
    A bad digest is reported in the result and skipped; everything else is still built.
    """
    out = cfg.feed.output
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    manifest = read_manifest(manifest_path)
    ctx = collect(cfg, manifest, digests)
    writer = SiteWriter(out)
    new_pages = _write_day_pages(ctx, writer)
    new_months = _write_month_pages(ctx, writer)
    # Like the day pages, removals only when the whole inbox was read.
    choices, more = _write_choices(ctx, writer, manifest if digests is None else None)
    feed_days = _write_feeds_and_index(ctx, writer, more)
    if digests is None:
        # Pages of days that left the inbox go too; a day whose file is only bad for now (a
        # half-written edit) keeps its page, and its entry in the manifest, until it is fixed.
        kept = dates_of(ctx.problems)
        new_pages.update({k: v for k, v in _old_pages(manifest).items() if k in kept})
        _remove_stale(writer, manifest, new_pages, new_months)

    searched = False
    changed = writer.written or writer.removed
    if cfg.feed.search and (changed or not (out / SEARCH_FOLDER / "pagefind.js").is_file()):
        index_search(out)
        searched = True

    shas = {d.date: d.sha for d in ctx.days}
    new_manifest = {
        "version": MANIFEST_VERSION,
        "fingerprint": ctx.fingerprint,
        "entries": ctx.history,
        "files": ctx.file_cache,
        # Every day's papers as Cards: the topic and weekly pages without parsing.
        "cards": {
            "key": cards_key(cfg),
            "days": {
                d.isoformat(): {"sha": shas[d], "papers": [c.to_json() for c in cards]}
                for d, cards in ctx.cards.items()
            },
        },
        "cache": {
            "pages": new_pages,
            "months": new_months,
            "choices": choices,
            # Only the feed's days: enough to rebuild the feeds without parsing them again.
            "bodies": {d.date.isoformat(): ctx.cached_body(d) for d in feed_days},
        },
    }
    # Compact: without indent, json's C encoder writes the Cards of every day in milliseconds.
    text = json.dumps(new_manifest, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
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
        for path in (page, *compressed(page)):
            path.unlink(missing_ok=True)
        writer.removed.append(page)
        folder = page.parent
        while folder != writer.out and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
