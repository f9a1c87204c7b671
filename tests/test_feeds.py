"""The feeds: parsed back with feedparser, and the W3C Feed Validation Service's rules checked
one by one on the raw XML."""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from lxml import etree

from publisher.site import build_site
from publisher.urls import day_url, entry_id

from .sitehelpers import DAYS, digest_text, site_config, write_digest

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}encoded"


@pytest.fixture
def built(tmp_path: Path):
    # The whole day in each entry ([feed] content = "full"); test_feed_size.py covers "summary".
    cfg = site_config(tmp_path, content="full", search=False)
    for day in DAYS:
        write_digest(cfg.digests.inbox, day)
    report = build_site(cfg)
    assert report.ok, report.problems
    return cfg


def _xml(path: Path) -> etree._Element:
    return etree.fromstring(path.read_bytes())


def test_both_feeds_parse_cleanly_and_recover_titles_links_dates(built) -> None:
    cfg = built
    newest_first = sorted(DAYS, reverse=True)
    for name in ("feed.xml", "atom.xml"):
        parsed = feedparser.parse((cfg.feed.output / name).read_bytes())
        assert parsed.bozo == 0, (name, parsed.get("bozo_exception"))
        assert [e.title for e in parsed.entries] == [f"Daily Papers {d}" for d in newest_first]
        assert [e.link for e in parsed.entries] == [day_url(cfg, d) for d in newest_first]
        assert [e.id for e in parsed.entries] == [entry_id(cfg, d) for d in newest_first]
        for entry, day in zip(parsed.entries, newest_first, strict=True):
            # publish_hour 8 in Asia/Seoul is 23:00 UTC the day before
            published = dt.datetime(*entry.published_parsed[:6], tzinfo=dt.UTC)
            assert published == dt.datetime.combine(day, dt.time(8), tzinfo=cfg.tz)
            if name == "atom.xml":  # RSS items have no updated time of their own
                assert entry.updated_parsed is not None
            assert "Ada Lovelace" in entry.content[0].value
            assert entry.summary.startswith("논문 2편:")
        assert parsed.feed.language == "ko"
        assert parsed.feed.title == cfg.site.title


def test_self_links_point_at_the_feeds_themselves(built) -> None:
    cfg = built
    rss = _xml(cfg.feed.output / "feed.xml").find("channel")
    self_links = [ln for ln in rss.findall(f"{ATOM}link") if ln.get("rel") == "self"]
    assert [ln.get("href") for ln in self_links] == ["http://localhost:8000/feed.xml"]
    # feedgen writes the LAST link added as the channel <link>: it must be the site, not the feed
    assert rss.findtext("link") == "http://localhost:8000/"
    atom = _xml(cfg.feed.output / "atom.xml")
    self_links = [ln for ln in atom.findall(f"{ATOM}link") if ln.get("rel") == "self"]
    assert [ln.get("href") for ln in self_links] == ["http://localhost:8000/atom.xml"]


def test_ids_and_guids_are_unique_and_guid_is_not_a_permalink(built) -> None:
    cfg = built
    items = _xml(cfg.feed.output / "feed.xml").findall("channel/item")
    guids = [i.find("guid") for i in items]
    assert len({g.text for g in guids}) == len(items) == 3
    # a tag: URI is not a URL, so isPermaLink must be false (the validator checks it)
    assert all(g.get("isPermaLink") == "false" and g.text.startswith("tag:") for g in guids)
    entries = _xml(cfg.feed.output / "atom.xml").findall(f"{ATOM}entry")
    assert len({e.findtext(f"{ATOM}id") for e in entries}) == 3


RFC822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$"
)


def test_rss_dates_are_rfc822_and_atom_updated_times_distinct(built) -> None:
    cfg = built
    channel = _xml(cfg.feed.output / "feed.xml").find("channel")
    dates = [i.findtext("pubDate") for i in channel.findall("item")]
    dates.append(channel.findtext("lastBuildDate"))
    for value in dates:
        assert RFC822.match(value), value
        assert email.utils.parsedate_to_datetime(value).tzinfo is not None
    updated = [
        e.findtext(f"{ATOM}updated")
        for e in _xml(cfg.feed.output / "atom.xml").findall(f"{ATOM}entry")
    ]
    assert len(set(updated)) == len(updated) == 3


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.refs += [v or "" for k, v in attrs if k in ("href", "src")]


def _contents(cfg) -> list[str]:
    rss = _xml(cfg.feed.output / "feed.xml").findall(f"channel/item/{CONTENT}")
    atom = _xml(cfg.feed.output / "atom.xml").findall(f"{ATOM}entry/{ATOM}content")
    assert all(c.get("type") == "html" for c in atom)
    return [c.text for c in rss + atom]


def test_content_has_absolute_urls_only(built) -> None:
    for html in _contents(built):
        refs = _Refs()
        refs.feed(html)
        assert refs.refs, "content should link the papers"
        for ref in refs.refs:
            parts = urlsplit(ref)
            assert parts.scheme in ("http", "https") and parts.netloc, ref
        # the relative Markdown link in the digest is not turned into a link at all
        assert "/etc/passwd" not in refs.refs


def test_pseudo_tags_show_as_text_never_as_tags(built) -> None:
    for html in _contents(built):
        assert "&lt;think&gt;" in html and "&lt;EOS&gt;" in html
        assert "<think>" not in html and "<EOS>" not in html
        refs = _Refs()
        refs.feed(html)
        assert "think" not in refs.tags and "eos" not in refs.tags
    parsed = feedparser.parse((built.feed.output / "atom.xml").read_bytes())
    assert "&lt;think&gt;" in parsed.entries[0].content[0].value


def test_content_has_linked_titles_authors_votes_thumbnail_and_bold_labels(built) -> None:
    html = _contents(built)[0]
    assert '<a href="https://arxiv.org/abs/2405.15001">Paper 1 of 2024-05-15' in html
    assert "Ada Lovelace, Alan Turing" in html
    assert "추천:</b> 3" in html
    assert (
        'src="https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.15001.png"'
        in html
    )
    assert '<strong class="label">What&#39;s New:</strong>' in html


def test_control_characters_are_dropped_not_fatal(tmp_path: Path) -> None:
    cfg = site_config(tmp_path, content="full", search=False)
    text = digest_text(DAYS[0], extra=" bad\x00\x01\x0b\x1b\x7f chars").replace(
        "Paper 1", "Paper\x0c 1"
    )
    write_digest(cfg.digests.inbox, DAYS[0], text)
    report = build_site(cfg)
    assert report.ok
    for name in ("feed.xml", "atom.xml"):
        raw = (cfg.feed.output / name).read_bytes()
        assert feedparser.parse(raw).bozo == 0
        assert b"bad chars" in raw and b"\x0c" not in raw


def test_an_edited_digest_keeps_its_id_and_moves_updated_forward(tmp_path: Path) -> None:
    cfg = site_config(tmp_path, content="full", search=False)
    paths = [write_digest(cfg.digests.inbox, d) for d in DAYS]
    build_site(cfg)
    before = feedparser.parse((cfg.feed.output / "atom.xml").read_bytes()).entries
    # edit the middle day; its file time is set well after its publication
    edited_at = dt.datetime(2024, 5, 20, 12, 0, tzinfo=dt.UTC).timestamp()
    paths[1].write_text(digest_text(DAYS[1], extra=" (corrected)"), encoding="utf-8")
    os.utime(paths[1], (edited_at, edited_at))
    build_site(cfg)
    after = feedparser.parse((cfg.feed.output / "atom.xml").read_bytes()).entries
    assert [e.id for e in after] == [e.id for e in before]
    assert "(corrected)" in after[1].content[0].value
    assert after[1].updated_parsed > before[1].updated_parsed
    assert dt.datetime(*after[1].updated_parsed[:6], tzinfo=dt.UTC).timestamp() == edited_at
    assert after[1].published == before[1].published
    assert [after[i].updated for i in (0, 2)] == [before[i].updated for i in (0, 2)]
    # a second edit whose file time is older still moves forward (previous + 1 s)
    paths[1].write_text(digest_text(DAYS[1], extra=" (again)"), encoding="utf-8")
    os.utime(paths[1], (0, 0))
    build_site(cfg)
    again = feedparser.parse((cfg.feed.output / "atom.xml").read_bytes()).entries
    assert dt.datetime(*again[1].updated_parsed[:6], tzinfo=dt.UTC).timestamp() == edited_at + 1


def test_touching_a_digest_without_changing_it_changes_nothing(tmp_path: Path) -> None:
    cfg = site_config(tmp_path)
    paths = [write_digest(cfg.digests.inbox, d) for d in DAYS]
    build_site(cfg)
    feeds = [(cfg.feed.output / n).read_bytes() for n in ("feed.xml", "atom.xml")]
    os.utime(paths[0], (2_000_000_000, 2_000_000_000))
    report = build_site(cfg)
    assert report.parsed == 1 and report.written == ()
    assert [(cfg.feed.output / n).read_bytes() for n in ("feed.xml", "atom.xml")] == feeds


def test_two_builds_give_identical_bytes(tmp_path: Path) -> None:
    outputs = []
    for d in DAYS:
        write_digest(tmp_path / "inbox", d)
    for name in ("a", "b"):
        cfg = site_config(tmp_path / name, inbox=tmp_path / "inbox")
        build_site(cfg)
        outputs.append(
            {
                p.relative_to(cfg.feed.output): p.read_bytes()
                for p in cfg.feed.output.rglob("*")
                if p.is_file()
            }
        )
    assert outputs[0] == outputs[1]
    names = {str(p) for p in outputs[0]}
    days = {f"{d:%Y/%m/%d}/index.html" for d in DAYS}
    assert days | {"index.html", "feed.xml", "atom.xml", "feed.json", "2024/05/index.html"} <= names
    assert "pagefind/pagefind.js" in names  # the search index is as reproducible as the rest


def test_feed_time_is_the_newest_digest_not_the_clock(built) -> None:
    channel = _xml(built.feed.output / "feed.xml").find("channel")
    newest = dt.datetime.combine(DAYS[-1], dt.time(8), tzinfo=built.tz)
    assert email.utils.parsedate_to_datetime(channel.findtext("lastBuildDate")) == newest
    atom = _xml(built.feed.output / "atom.xml")
    assert dt.datetime.fromisoformat(atom.findtext(f"{ATOM}updated")) == newest


def test_max_items_keeps_the_newest(tmp_path: Path) -> None:
    cfg = site_config(tmp_path, max_items=2)
    for d in DAYS:
        write_digest(cfg.digests.inbox, d)
    build_site(cfg)
    for name in ("feed.xml", "atom.xml"):
        entries = feedparser.parse((cfg.feed.output / name).read_bytes()).entries
        assert [e.title for e in entries] == [f"Daily Papers {d}" for d in (DAYS[2], DAYS[1])]
    # the archive still has every day
    assert all((cfg.feed.output / f"{d:%Y/%m/%d}/index.html").is_file() for d in DAYS)
