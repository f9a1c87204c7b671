"""Paging: the index shows the newest INDEX_DAYS days and links to month pages (YYYY/MM/), so no
page grows with the archive, and adding a day rewrites a bounded set of files. Also the sitemap,
the labelled navigation and the Open Graph / canonical links of each kind of page."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import html5lib
from lxml import etree

from publisher.editions import Week
from publisher.site import INDEX_DAYS, build_site

from .sitehelpers import site_config, write_digest

START = dt.date(2024, 1, 1)
SITEMAP = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


def _days(first: int, count: int) -> list[dt.date]:
    return [START + dt.timedelta(days=i) for i in range(first, first + count)]


def _elements(path: Path) -> int:
    doc = html5lib.parse(path.read_bytes(), treebuilder="lxml", namespaceHTMLElements=False)
    return sum(1 for _ in doc.iter(tag=etree.Element))


def _day_links(html: str) -> list[str]:
    return re.findall(r'class="day-link" href="([^"]+)"', html)


def _months(days: list[dt.date]) -> set[tuple[int, int]]:
    return {(d.year, d.month) for d in days}


def test_index_and_month_pages_stay_bounded_as_days_are_added(tmp_path: Path) -> None:
    cfg = site_config(tmp_path, search=False)
    out = cfg.feed.output
    first = _days(0, INDEX_DAYS + 15)
    for d in first:
        write_digest(cfg.digests.inbox, d)
    build_site(cfg)
    index = out / "index.html"
    size, elements = index.stat().st_size, _elements(index)
    jan = out / "2024/01/index.html"
    jan_bytes = jan.read_bytes()

    more = _days(len(first), 120)  # four more months
    for d in more:
        write_digest(cfg.digests.inbox, d)
    build_site(cfg)
    html = index.read_text("utf-8")
    newest = sorted(first + more, reverse=True)[:INDEX_DAYS]
    assert _day_links(html) == [f"{d:%Y/%m/%d}/" for d in newest]
    # the index grew only by the links to the new months, not by the 120 new days
    new_months = len(_months(first + more) - _months(first))
    assert _elements(index) - elements <= new_months * 2
    assert index.stat().st_size - size <= new_months * 64
    for y, m in sorted(_months(first + more)):
        assert f'href="{y:04d}/{m:02d}/"' in html
    # a month page lists its own days, newest first, and no other
    for y, m in _months(first + more):
        page = (out / f"{y:04d}/{m:02d}/index.html").read_text("utf-8")
        own = sorted((d for d in first + more if (d.year, d.month) == (y, m)), reverse=True)
        assert _day_links(page) == [f"../../{d:%Y/%m/%d}/" for d in own]
        assert len(own) <= 31
    # an old month's page does not change when later days are added
    assert jan.read_bytes() == jan_bytes


def test_adding_a_day_rewrites_a_bounded_set_of_files(tmp_path: Path) -> None:
    cfg = site_config(tmp_path, search=False)
    out = cfg.feed.output
    days = _days(0, 100)
    for d in days:
        write_digest(cfg.digests.inbox, d)
    build_site(cfg)
    # a day that opens a new month: its page, the previous newest day (its "newer" link), the new
    # month and the previous month (its "newer month" link), index, three feeds, sitemap
    new = dt.date(2024, 5, 1)
    assert new > days[-1] and new.month != days[-1].month
    write_digest(cfg.digests.inbox, new)
    report = build_site(cfg)
    rel = {str(p.relative_to(out)) for p in report.written}
    assert rel == {
        "2024/05/01/index.html",
        f"{days[-1]:%Y/%m/%d}/index.html",
        "2024/05/index.html",
        f"{days[-1]:%Y/%m}/index.html",
        "index.html",
        "feed.xml",
        "atom.xml",
        "feed.json",
        "sitemap.xml",
        # the newest day before was a Tuesday (2024-W15): a day after its Sunday completes that
        # week, so its page, the previous week's ("newer" link), the weekly index and feeds
        "weekly/2024-W15/index.html",
        "weekly/2024-W14/index.html",
        "weekly/index.html",
        "weekly/feed.xml",
        "weekly/atom.xml",
        "weekly/feed.json",
    }


def test_sitemap_lists_every_page_once(tmp_path: Path) -> None:
    cfg = site_config(tmp_path, search=False)
    days = _days(25, 20)  # January and February
    for d in days:
        write_digest(cfg.digests.inbox, d)
    build_site(cfg)
    root = etree.fromstring((cfg.feed.output / "sitemap.xml").read_bytes())
    locs = [u.findtext(f"{SITEMAP}loc") for u in root.findall(f"{SITEMAP}url")]
    base = "http://localhost:8000/"
    expected = {base, base + "2024/01/", base + "2024/02/"} | {
        base + f"{d:%Y/%m/%d}/" for d in days
    }
    # the weekly editions' index and each complete week's page
    weeks = {Week.of(d) for d in days if Week.of(d).sunday <= days[-1]}
    expected |= {base + "weekly/"} | {base + f"weekly/{w}/" for w in weeks}
    assert len(locs) == len(set(locs)) and set(locs) == expected
    for u in root.findall(f"{SITEMAP}url"):
        dt.datetime.fromisoformat(u.findtext(f"{SITEMAP}lastmod"))
    robots = (cfg.feed.output / "robots.txt").read_text("utf-8")
    assert f"Sitemap: {base}sitemap.xml" in robots.splitlines()


def _head(path: Path) -> dict[str, str]:
    html = path.read_text("utf-8")
    meta = dict(re.findall(r'<meta property="(og:[a-z_]+)" content="([^"]*)">', html))
    canonical = re.findall(r'<link rel="canonical" href="([^"]+)">', html)
    navs = re.findall(r"<nav([^>]*)>", html)
    assert navs and all('aria-label="' in n for n in navs), navs
    labels = [re.search(r'aria-label="([^"]+)"', n).group(1) for n in navs]  # type: ignore[union-attr]
    assert len(labels) == len(set(labels)), labels  # each landmark named, and differently
    assert '<link rel="icon" href="' in html
    return {**meta, "canonical": canonical[0]}


def test_each_page_has_canonical_open_graph_and_labelled_navigation(tmp_path: Path) -> None:
    cfg = site_config(tmp_path, search=False)
    d = dt.date(2024, 5, 15)
    write_digest(cfg.digests.inbox, d)
    write_digest(cfg.digests.inbox, d - dt.timedelta(days=1))
    build_site(cfg)
    out = cfg.feed.output
    base = "http://localhost:8000/"
    day = _head(out / "2024/05/15/index.html")
    assert day["canonical"] == day["og:url"] == base + "2024/05/15/"
    assert day["og:type"] == "article" and day["og:title"].startswith("Daily Papers 2024-05-15")
    assert day["og:image"].endswith("/2405.15001.png") and day["og:locale"] == "ko_KR"
    assert day["og:description"].startswith("논문 2편: Paper 1 of 2024-05-15")
    index = _head(out / "index.html")
    assert index["canonical"] == index["og:url"] == base and index["og:type"] == "website"
    month = _head(out / "2024/05/index.html")
    assert month["canonical"] == base + "2024/05/" and month["og:title"].startswith("2024년 5월")
