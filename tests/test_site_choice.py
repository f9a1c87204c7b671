"""Pages and feeds per reader choice (issue 21): /topics/NAME/ and /weekly/ with their feeds,
built from a month of corpus days and the shipped topics; what each feed holds is checked
against what the mail side computes (topics.select, editions.weekly_papers), feeds parsed back
with feedparser and JSON Feed validated against the 1.1 schema."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import html5lib
import jsonschema
import pytest
from lxml import etree

from publisher.config import load_config
from publisher.digest import Digest, parse_file
from publisher.editions import Week, weekly_papers
from publisher.site import build_site
from publisher.topics import TopicMatcher, select
from publisher.urls import (
    base_url,
    paper_anchors,
    paper_url,
    topic_entry_id,
    topic_url,
    week_entry_id,
)

from .requires import CORPUS, ROOT
from .sitehelpers import site_config
from .test_feed_size import JSON_FEED_1_1
from .test_feeds import RFC822
from .test_site import check_page

pytestmark = pytest.mark.requires("corpus")

# May 2024 in the corpus: ten days over five ISO weeks, three of them complete.
MONTH = "2024/05"
FEEDS = ("feed.xml", "atom.xml", "feed.json")


def _month_files() -> list[Path]:
    return sorted((CORPUS / MONTH).glob("*.md"))


def _config(tmp: Path, **feed: object):
    cfg = site_config(tmp, **feed)
    topics = load_config(ROOT / "config.toml").topics
    assert len(topics) >= 8
    return dataclasses.replace(cfg, topics=topics)


def _copy(cfg, files: list[Path]) -> None:
    for f in files:
        dest = cfg.digests.inbox / f.relative_to(CORPUS)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    cfg = _config(tmp_path_factory.mktemp("choice"), search=True)
    files = _month_files()
    assert len(files) >= 8, files
    _copy(cfg, files)
    report = build_site(cfg)
    assert report.ok, report.problems
    digests = sorted((parse_file(f) for f in files), key=lambda d: d.date, reverse=True)
    return cfg, digests


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.alternates: list[tuple[str | None, str | None]] = []
        self.topic_links: list[list[str]] = []  # per paper card on a day page
        self._in_topics = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        if tag == "article":
            self.topic_links.append([])
        if tag == "p" and d.get("class") == "topics":
            self._in_topics = True
        if tag == "a" and d.get("href"):
            self.hrefs.append(d["href"] or "")
            if self._in_topics:
                self.topic_links[-1].append(d["href"] or "")
        if tag == "link" and d.get("rel") == "alternate":
            self.alternates.append((d.get("type"), d.get("href")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_topics = False


def _links(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


def _paper_links(cfg, html: str) -> list[str]:
    """The links of a feed entry's content that point at a paper's card on a day page."""
    return [h for h in _links(html).hrefs if "#" in h and h.startswith(base_url(cfg))]


def _parsed(cfg, folder: str, name: str):
    parsed = feedparser.parse((cfg.feed.output / folder / name).read_bytes())
    assert parsed.bozo == 0, (folder, name, parsed.get("bozo_exception"))
    return parsed


def _expected_topic_days(cfg, digests: list[Digest], name: str) -> list[tuple[dt.date, list[str]]]:
    """What a daily reader of this topic was mailed, day by day: the mail side's selection."""
    matcher = TopicMatcher.from_config(cfg)
    out = []
    for digest in digests:
        chosen = select(digest.papers, matcher, {name})
        if not chosen:
            continue  # no email that day, so no entry
        anchors = dict(zip(map(id, digest.papers), paper_anchors(digest), strict=True))
        out.append((digest.date, [paper_url(cfg, digest.date, anchors[id(p)]) for p in chosen]))
    return out[: cfg.feed.max_items]


def test_each_topic_feed_holds_what_a_daily_reader_of_that_topic_got(site) -> None:
    cfg, digests = site
    nonempty = 0
    for topic in cfg.topics:
        expected = _expected_topic_days(cfg, digests, topic.name)
        nonempty += bool(expected)
        folder = f"topics/{topic.name}"
        for name in ("feed.xml", "atom.xml"):
            parsed = _parsed(cfg, folder, name)
            assert [e.id for e in parsed.entries] == [
                topic_entry_id(cfg, topic.name, d) for d, _ in expected
            ]
            got = [_paper_links(cfg, e.content[0].value) for e in parsed.entries]
            assert got == [links for _, links in expected], (topic.name, name)
            assert all(topic.label in e.title for e in parsed.entries)
            assert parsed.feed.title.endswith(topic.label)
        data = _json(cfg, folder)
        assert [i["id"] for i in data["items"]] == [
            topic_entry_id(cfg, topic.name, d) for d, _ in expected
        ]
        assert data["feed_url"] == f"{topic_url(cfg, topic.name)}feed.json"
    assert nonempty >= 8  # the shipped topics cover the corpus


def _json(cfg, folder: str) -> dict:
    import json

    data = json.loads((cfg.feed.output / folder / "feed.json").read_text("utf-8"))
    jsonschema.validate(data, JSON_FEED_1_1)
    return data


def test_the_weekly_feed_has_each_complete_week_with_the_weekly_emails_papers(site) -> None:
    cfg, digests = site
    newest = max(d.date for d in digests)
    weeks = sorted({Week.of(d.date) for d in digests if Week.of(d.date).sunday <= newest})
    weeks.reverse()
    assert len(weeks) >= 3
    assert Week.of(newest) not in weeks  # the week in progress is left out
    expected = []
    for week in weeks:
        in_week = [d for d in digests if d.date in week]
        anchors = {
            id(p): a for d in in_week for p, a in zip(d.papers, paper_anchors(d), strict=True)
        }
        expected.append(
            [paper_url(cfg, wp.day, anchors[id(wp.paper)]) for wp in weekly_papers(in_week)]
        )
    for name in ("feed.xml", "atom.xml"):
        parsed = _parsed(cfg, "weekly", name)
        assert [e.id for e in parsed.entries] == [week_entry_id(cfg, w, w.monday) for w in weeks]
        assert [_paper_links(cfg, e.content[0].value) for e in parsed.entries] == expected
        assert [e.link for e in parsed.entries] == [f"{base_url(cfg)}weekly/{w}/" for w in weeks]
    data = _json(cfg, "weekly")
    assert len(data["items"]) == len(weeks)
    # each week's page lists the same papers, linked relatively to their cards
    for week, links in zip(weeks, expected, strict=True):
        page = (cfg.feed.output / f"weekly/{week}/index.html").read_text("utf-8")
        rel = [h for h in _links(page).hrefs if "#" in h]
        assert [base_url(cfg) + h.removeprefix("../../") for h in rel] == links


def test_day_pages_link_each_paper_to_its_topics(site) -> None:
    cfg, digests = site
    matcher = TopicMatcher.from_config(cfg)
    for digest in digests[:3]:
        page = cfg.feed.output / f"{digest.date:%Y/%m/%d}/index.html"
        got = _links(page.read_text("utf-8")).topic_links
        expected = [
            [topic_url(cfg, n) for n in matcher.names if n in matcher.topics_of(p)]
            for p in digest.papers
        ]
        assert got == expected
        assert any(expected)


def test_pages_are_valid_linked_for_autodiscovery_in_the_sitemap_and_searchable(site) -> None:
    cfg, digests = site
    out = cfg.feed.output
    base = base_url(cfg)
    weeks = sorted(p.parent.name for p in out.glob("weekly/*/index.html"))
    pages = ["topics/index.html", "weekly/index.html"]
    pages += [f"topics/{t.name}/index.html" for t in cfg.topics]
    pages += [f"weekly/{w}/index.html" for w in weeks]
    for rel in pages:
        check_page(out / rel)  # strict HTML5, the site feeds advertised, no inline script
    for topic in cfg.topics:
        alternates = _links((out / f"topics/{topic.name}/index.html").read_text("utf-8")).alternates
        for kind, name in zip(
            ("application/rss+xml", "application/atom+xml", "application/feed+json"),
            FEEDS,
            strict=True,
        ):
            assert (kind, f"{base}topics/{topic.name}/{name}") in alternates
    for rel in ("index.html", "weekly/index.html", f"weekly/{weeks[0]}/index.html"):
        alternates = _links((out / rel).read_text("utf-8")).alternates
        assert ("application/atom+xml", f"{base}weekly/atom.xml") in alternates, rel
    sitemap = etree.fromstring((out / "sitemap.xml").read_bytes())
    ns = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
    locs = [u.findtext(f"{ns}loc") for u in sitemap.findall(f"{ns}url")]
    assert len(locs) == len(set(locs))
    assert {base + "topics/", base + "weekly/"} <= set(locs)
    assert {f"{base}topics/{t.name}/" for t in cfg.topics} <= set(locs)
    assert {f"{base}weekly/{w}/" for w in weeks} <= set(locs)
    # Pagefind indexed the day pages with each paper's topics as a filter
    filters = list((out / "pagefind" / "filter").glob("*.pf_filter"))
    assert filters, "no Pagefind filter index"
    meta = (out / "pagefind" / "pagefind-entry.json").read_text("utf-8")
    assert '"page_count":' in meta
    html5lib.HTMLParser(strict=True).parse((out / "topics/index.html").read_bytes())


def test_adding_a_day_rewrites_only_its_topics_and_its_week(tmp_path: Path) -> None:
    cfg = _config(tmp_path, search=False)
    files = _month_files()
    # the last day of the month is added to a site built without it; it is a Friday whose week
    # is not complete, so no weekly file may change
    *before, new = files
    _copy(cfg, before)
    build_site(cfg)
    _copy(cfg, [new])
    report = build_site(cfg)
    assert report.parsed == 1
    out = cfg.feed.output
    written = {p.relative_to(out).as_posix() for p in report.written}
    digest = parse_file(new)
    matcher = TopicMatcher.from_config(cfg)
    touched = set().union(*(matcher.topics_of(p) for p in digest.papers))
    assert touched and touched != set(matcher.names)
    previous = parse_file(before[-1]).date
    assert Week.of(digest.date).sunday > digest.date  # the week is still in progress
    expected = {
        f"{digest.date:%Y/%m/%d}/index.html",
        f"{previous:%Y/%m/%d}/index.html",  # its "newer" link
        f"{digest.date:%Y/%m}/index.html",
        "index.html",
        *FEEDS,
        "sitemap.xml",
        "topics/index.html",  # the paper counts
    }
    for name in touched:
        expected |= {f"topics/{name}/index.html"} | {f"topics/{name}/{f}" for f in FEEDS}
    assert written == expected


def test_a_topic_taken_out_of_the_config_loses_its_page_and_feeds(tmp_path: Path) -> None:
    cfg = _config(tmp_path, search=False)
    _copy(cfg, _month_files()[:3])
    build_site(cfg)
    gone = cfg.topics[0].name
    assert (cfg.feed.output / f"topics/{gone}/feed.xml").is_file()
    cfg = dataclasses.replace(cfg, topics=cfg.topics[1:])
    report = build_site(cfg)
    assert not (cfg.feed.output / f"topics/{gone}").exists()
    assert cfg.feed.output / f"topics/{gone}/index.html" in report.removed
    assert (cfg.feed.output / f"topics/{cfg.topics[0].name}/feed.xml").is_file()


def test_the_pages_are_in_the_sites_language(tmp_path: Path) -> None:
    cfg = _config(tmp_path, search=False)
    cfg = dataclasses.replace(cfg, site=dataclasses.replace(cfg.site, language="en"))
    _copy(cfg, _month_files()[:8])
    build_site(cfg)
    out = cfg.feed.output
    assert "<h1>Topics</h1>" in (out / "topics/index.html").read_text("utf-8")
    assert "<h1>Weekly editions</h1>" in (out / "weekly/index.html").read_text("utf-8")
    week = next(out.glob("weekly/*-W*/index.html"))
    assert f"<h1>Week {week.parent.name}</h1>" in week.read_text("utf-8")


ATOM = "{http://www.w3.org/2005/Atom}"


def test_topic_and_weekly_feeds_follow_the_feed_validators_rules(site) -> None:
    cfg, _ = site
    out = cfg.feed.output
    folders = [f"topics/{t.name}/" for t in cfg.topics] + ["weekly/"]
    for folder in folders:
        page = base_url(cfg) + folder
        rss = etree.fromstring((out / folder / "feed.xml").read_bytes()).find("channel")
        selfs = [ln.get("href") for ln in rss.findall(f"{ATOM}link") if ln.get("rel") == "self"]
        assert selfs == [page + "feed.xml"]
        assert rss.findtext("link") == page  # the channel's link is its page, not the feed
        guids = [i.find("guid") for i in rss.findall("item")]
        assert all(g.get("isPermaLink") == "false" and g.text.startswith("tag:") for g in guids)
        assert len({g.text for g in guids}) == len(guids)
        for value in [i.findtext("pubDate") for i in rss.findall("item")]:
            assert RFC822.match(value), value
        atom = etree.fromstring((out / folder / "atom.xml").read_bytes())
        selfs = [ln.get("href") for ln in atom.findall(f"{ATOM}link") if ln.get("rel") == "self"]
        assert selfs == [page + "atom.xml"]
        updated = [e.findtext(f"{ATOM}updated") for e in atom.findall(f"{ATOM}entry")]
        assert len(set(updated)) == len(updated)
        for content in atom.findall(f"{ATOM}entry/{ATOM}content"):
            for href in _links(content.text).hrefs:
                parts = urlsplit(href)
                assert parts.scheme in ("http", "https") and parts.netloc, (folder, href)


def test_full_content_topic_entries_hold_the_topics_papers_only(tmp_path: Path) -> None:
    cfg = _config(tmp_path, search=False, content="full")
    files = _month_files()[:3]
    _copy(cfg, files)
    build_site(cfg)
    digests = sorted((parse_file(f) for f in files), key=lambda d: d.date, reverse=True)
    topic = cfg.topics[0]
    expected = _expected_topic_days(cfg, digests, topic.name)
    assert expected
    parsed = _parsed(cfg, f"topics/{topic.name}", "atom.xml")
    for entry, (_, links) in zip(parsed.entries, expected, strict=True):
        html = entry.content[0].value
        # a full card per paper (its heading carries the anchor), the topic's papers only
        ids = [
            f"{links[0].split('#')[0]}#{a}"
            for a in re.findall(r'<h2 class="paper-title" id="([^"]+)"', html)
        ]
        assert ids == links


def test_no_topics_left_means_no_topics_folder(tmp_path: Path) -> None:
    cfg = _config(tmp_path, search=False)
    _copy(cfg, _month_files()[:2])
    build_site(cfg)
    assert (cfg.feed.output / "topics/index.html").is_file()
    build_site(dataclasses.replace(cfg, topics=()))
    assert not (cfg.feed.output / "topics").exists()
    assert 'href="../topics/"' not in (cfg.feed.output / "weekly/index.html").read_text("utf-8")
