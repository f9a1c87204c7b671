"""Compact feeds: under `[feed] content = "summary"` (the default) RSS, Atom and JSON Feed stay
below FeedBurner's 512 KB at max_items on the largest days of the real corpus, and every entry
links to its day page and to each paper's anchor there. JSON Feed 1.1 is checked against a schema
written from the spec; Atom puts rel="alternate" first."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import feedparser
import jsonschema
import pytest
from lxml import etree

from publisher.config import default_config
from publisher.digest import parse_file
from publisher.site import build_site, paper_anchors
from publisher.urls import day_url, entry_id

from .conftest import corpus_files
from .requires import requires
from .sitehelpers import DAYS, site_config, write_digest

LIMIT = 512 * 1024  # FeedBurner refuses bigger feeds
ATOM = "{http://www.w3.org/2005/Atom}"

# JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/): what a reader relies on.
_AUTHOR = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "url": {"type": "string"}},
    "anyOf": [{"required": ["name"]}, {"required": ["url"]}],
}
JSON_FEED_1_1 = {
    "type": "object",
    "required": ["version", "title", "items"],
    "properties": {
        "version": {"const": "https://jsonfeed.org/version/1.1"},
        "title": {"type": "string", "minLength": 1},
        "home_page_url": {"type": "string", "pattern": "^https?://"},
        "feed_url": {"type": "string", "pattern": "^https?://"},
        "description": {"type": "string"},
        "language": {"type": "string"},
        "authors": {"type": "array", "items": _AUTHOR},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "anyOf": [{"required": ["content_html"]}, {"required": ["content_text"]}],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "url": {"type": "string", "pattern": "^https?://"},
                    "title": {"type": "string"},
                    "content_html": {"type": "string"},
                    "summary": {"type": "string"},
                    "date_published": {"type": "string"},
                    "date_modified": {"type": "string"},
                    "authors": {"type": "array", "items": _AUTHOR},
                    "language": {"type": "string"},
                },
            },
        },
    },
}


def _largest_days(n: int) -> list[Path]:
    requires("corpus")
    files = corpus_files()
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:n]


@pytest.fixture(scope="module")
def largest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """An inbox of the max_items largest corpus days (by file size)."""
    inbox = tmp_path_factory.mktemp("largest") / "inbox"
    chosen = _largest_days(default_config(Path()).feed.max_items)
    for i, path in enumerate(chosen):
        dest = inbox / f"{i:02d}-{path.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    return inbox, chosen


def test_default_feeds_stay_under_512_kb_on_the_largest_days(
    tmp_path: Path, largest: tuple[Path, list[Path]]
) -> None:
    inbox, chosen = largest
    cfg = site_config(tmp_path, inbox=inbox, search=False)
    assert cfg.feed.content == "summary"  # the default
    report = build_site(cfg)
    assert report.ok, report.problems
    out = cfg.feed.output
    for name in ("feed.xml", "atom.xml", "feed.json"):
        size = (out / name).stat().st_size
        assert size < LIMIT, f"{name} is {size} bytes"
    digests = {d.date: d for d in map(parse_file, chosen)}
    for name in ("feed.xml", "atom.xml"):
        parsed = feedparser.parse((out / name).read_bytes())
        assert parsed.bozo == 0
        assert len(parsed.entries) == len(chosen) == cfg.feed.max_items
        for entry in parsed.entries:
            date = dt.date.fromisoformat(entry.title.split()[-1])
            page_url = day_url(cfg, date)
            assert entry.link == page_url
            html = entry.content[0].value
            links = re.findall(r'href="([^"]+)"', html)
            anchors = paper_anchors(digests[date])
            # each paper once, at its anchor on the day page, and the whole day once
            assert links == [f"{page_url}#{a}" for a in anchors] + [page_url]
    # the anchors the feed links to exist on the day pages
    for date, digest in digests.items():
        page = (out / f"{date:%Y/%m/%d}/index.html").read_text("utf-8")
        ids = re.findall(r'<h2 class="paper-title" id="([^"]+)"', page)
        assert ids == paper_anchors(digest)


def test_full_content_is_what_the_default_keeps_small(
    tmp_path: Path, largest: tuple[Path, list[Path]]
) -> None:
    """The same days with every summary in the feed go over the limit: the default matters."""
    inbox, _ = largest
    cfg = site_config(tmp_path, inbox=inbox, search=False, content="full")
    build_site(cfg)
    assert (cfg.feed.output / "feed.xml").stat().st_size > LIMIT
    entry = feedparser.parse((cfg.feed.output / "atom.xml").read_bytes()).entries[0]
    assert 'class="summary"' in entry.content[0].value


def test_changing_feed_content_rewrites_the_feeds(tmp_path: Path) -> None:
    for d in DAYS:
        write_digest(tmp_path / "inbox", d)
    cfg = site_config(tmp_path, inbox=tmp_path / "inbox", search=False)
    build_site(cfg)
    small = (cfg.feed.output / "atom.xml").stat().st_size
    full = site_config(tmp_path, inbox=tmp_path / "inbox", search=False, content="full")
    report = build_site(full)
    assert cfg.feed.output / "atom.xml" in report.written
    assert (cfg.feed.output / "atom.xml").stat().st_size > small


@pytest.fixture
def built(tmp_path: Path):
    cfg = site_config(tmp_path, search=False)
    for d in DAYS:
        write_digest(cfg.digests.inbox, d)
    assert build_site(cfg).ok
    return cfg


def test_json_feed_follows_version_1_1_and_matches_the_atom_feed(built) -> None:
    cfg = built
    data = json.loads((cfg.feed.output / "feed.json").read_bytes())
    jsonschema.validate(data, JSON_FEED_1_1)
    assert data["feed_url"] == "http://localhost:8000/feed.json"
    assert data["home_page_url"] == "http://localhost:8000/"
    atom = feedparser.parse((cfg.feed.output / "atom.xml").read_bytes())
    newest_first = sorted(DAYS, reverse=True)
    assert [i["id"] for i in data["items"]] == [entry_id(cfg, d) for d in newest_first]
    assert [i["id"] for i in data["items"]] == [e.id for e in atom.entries]
    assert [i["url"] for i in data["items"]] == [day_url(cfg, d) for d in newest_first]
    raw_atom = etree.fromstring((cfg.feed.output / "atom.xml").read_bytes())
    contents = [e.findtext(f"{ATOM}content") for e in raw_atom.findall(f"{ATOM}entry")]
    for item, content, day in zip(data["items"], contents, newest_first, strict=True):
        published = dt.datetime.fromisoformat(item["date_published"])  # RFC 3339
        assert published == dt.datetime.combine(day, dt.time(8), tzinfo=cfg.tz)
        assert dt.datetime.fromisoformat(item["date_modified"]) >= published
        assert item["content_html"] == content
    # and an invalid feed is caught by the same check
    broken = dict(data, items=[{"id": "x"}])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, JSON_FEED_1_1)


def test_atom_gives_the_site_link_first(built) -> None:
    cfg = built
    root = etree.fromstring((cfg.feed.output / "atom.xml").read_bytes())
    links = root.findall(f"{ATOM}link")
    assert [(ln.get("rel"), ln.get("href")) for ln in links] == [
        ("alternate", "http://localhost:8000/"),
        ("self", "http://localhost:8000/atom.xml"),
    ]
    assert feedparser.parse((cfg.feed.output / "atom.xml").read_bytes()).feed.link == (
        "http://localhost:8000/"
    )
    # RSS keeps its channel <link> the site (feedgen writes the last link added there)
    rss = etree.fromstring((cfg.feed.output / "feed.xml").read_bytes())
    assert rss.find("channel").findtext("link") == "http://localhost:8000/"


def test_bad_feed_content_is_one_clear_line(tmp_path: Path) -> None:
    from publisher.config import load_config
    from publisher.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text('[feed]\ncontent = "everything"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: 'feed.content' must be summary or full, not 'everything'")
