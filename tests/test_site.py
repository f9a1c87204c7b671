"""The web archive: valid HTML5 pages, stable URLs, incremental rebuilds, bad digests, the CLI,
and the whole corpus."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import brotli
import feedparser
import html5lib
import pytest
from click.testing import CliRunner

from publisher.cli import cli
from publisher.digest import parse
from publisher.site import build_site
from publisher.site.collect import _code_files
from publisher.urls import day_url

from .conftest import corpus_date, corpus_files, largest_corpus_digest, needs_corpus
from .sitehelpers import DAYS, digest_text, site_config, write_digest


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []
        self.imgs: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.meta: list[dict[str, str | None]] = []
        self.h2_text: list[str] = []
        self.inline: list[str] = []  # style= and on*= attributes, <style> elements
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        d = dict(attrs)
        self.inline += [f"{tag} {k}" for k in d if k == "style" or k.startswith("on")]
        if tag == "style":
            self.inline.append("style element")
        {"link": self.links, "img": self.imgs, "script": self.scripts, "meta": self.meta}.get(
            tag, []
        ).append(d)
        if tag == "h2" and "paper-title" in (d.get("class") or ""):
            self._in_h2 = True
            self.h2_text.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2_text[-1] += data


def check_page(path: Path) -> _Page:
    """Valid HTML5 (html5lib in strict mode raises on any parse error), feeds advertised,
    a phone viewport, no inline script or style (a strict CSP holds; the one script is the search
    module), images with a width and height (all but the first lazy) whose alt text is the
    paper's title."""
    raw = path.read_bytes()
    html5lib.HTMLParser(strict=True).parse(raw)
    page = _Page()
    page.feed(raw.decode("utf-8"))
    alternates = {
        (ln.get("type"), ln.get("href")) for ln in page.links if ln.get("rel") == "alternate"
    }
    assert ("application/rss+xml", "http://localhost:8000/feed.xml") in alternates
    assert ("application/atom+xml", "http://localhost:8000/atom.xml") in alternates
    assert any(
        m.get("name") == "viewport" and "width=device-width" in (m.get("content") or "")
        for m in page.meta
    )
    assert page.scripts == [{"type": "module", "src": page.scripts[0]["src"]}]
    assert (page.scripts[0]["src"] or "").endswith("search.js")
    assert page.inline == []
    # the first thumbnail is the largest paint: fetched at once; the others when scrolled to
    for i, img in enumerate(page.imgs):
        if i == 0:
            assert img.get("fetchpriority") == "high" and "loading" not in img
        else:
            assert img.get("loading") == "lazy"
        assert (img.get("width"), img.get("height")) == ("1200", "648")
    assert [img.get("alt") for img in page.imgs] == page.h2_text[: len(page.imgs)]
    return page


def test_pages_are_valid_and_follow_the_rules(tmp_path: Path) -> None:
    cfg = site_config(tmp_path)
    for d in DAYS:
        write_digest(cfg.digests.inbox, d)
    build_site(cfg)
    check_page(cfg.feed.output / "index.html")
    for d in DAYS:
        page = check_page(cfg.feed.output / f"{d:%Y/%m/%d}/index.html")
        assert len(page.imgs) == 2
        assert page.imgs[0]["alt"] == f'Paper 1 of {d}: <think> & "quotes" $x^2$'
    css = (cfg.feed.output / "style.css").read_text("utf-8")
    assert '"Apple SD Gothic Neo"' in css and "prefers-color-scheme: dark" in css


def test_day_url_is_the_page_built_for_that_day(tmp_path: Path) -> None:
    cfg = site_config(tmp_path)
    write_digest(cfg.digests.inbox, DAYS[2])
    build_site(cfg)
    assert day_url(cfg, DAYS[2]) == "http://localhost:8000/2024/05/15/"
    html = (cfg.feed.output / "2024/05/15/index.html").read_text("utf-8")
    assert '<link rel="canonical" href="http://localhost:8000/2024/05/15/">' in html


def test_index_lists_days_newest_first(tmp_path: Path) -> None:
    cfg = site_config(tmp_path)
    for d in DAYS:
        write_digest(cfg.digests.inbox, d)
    build_site(cfg)
    html = (cfg.feed.output / "index.html").read_text("utf-8")
    positions = [html.index(f'href="{d:%Y/%m/%d}/"') for d in sorted(DAYS, reverse=True)]
    assert positions == sorted(positions)


def _stats(paths: list[Path]) -> list[tuple[int, int]]:
    return [(p.stat().st_mtime_ns, p.stat().st_ino) for p in paths]


def test_one_new_digest_rewrites_only_what_shows_it(tmp_path: Path) -> None:
    cfg = site_config(tmp_path)
    for d in DAYS:
        write_digest(cfg.digests.inbox, d)
    build_site(cfg)
    pages = [cfg.feed.output / f"{d:%Y/%m/%d}/index.html" for d in DAYS]
    before = _stats(pages)
    new_day = dt.date(2024, 5, 16)
    write_digest(cfg.digests.inbox, new_day)
    report = build_site(cfg)
    assert report.parsed == 1
    new_page = cfg.feed.output / "2024/05/16/index.html"
    # the old newest page gets a "newer" link, the month page a new day; the others are not
    # touched at all. The search index is rebuilt whole (Pagefind has no incremental mode).
    out = cfg.feed.output
    assert set(report.written) == {
        new_page,
        pages[2],
        out / "2024/05/index.html",
        out / "index.html",
        out / "feed.xml",
        out / "atom.xml",
        out / "feed.json",
        out / "sitemap.xml",
    }
    assert report.searched
    assert _stats(pages[:2]) == before[:2]
    assert 'href="../../../2024/05/16/"' in pages[2].read_text("utf-8")
    # each written file has its compressed copies, made from its new bytes
    for path in report.written:
        assert gzip.decompress(path.with_name(path.name + ".gz").read_bytes()) == path.read_bytes()
        assert brotli.decompress(path.with_name(path.name + ".br").read_bytes()) == (
            path.read_bytes()
        )
    # the search bundle is replaced whole: no index file of the first build is left over
    bundle = {p for p in (out / "pagefind").rglob("*") if p.is_file()}
    report = build_site(cfg, digests=None)
    assert not report.searched
    (cfg.digests.inbox / "2024/05/16.md").write_text(
        digest_text(new_day, extra=" (edited)"), encoding="utf-8"
    )
    assert build_site(cfg).searched
    after = {p for p in (out / "pagefind").rglob("*") if p.is_file()}
    fragments = [p for p in after if p.suffix == ".pf_fragment"]
    assert len(fragments) == len(DAYS) + 1  # one per day page, nothing stale
    assert after != bundle
    assert not [p for p in out.iterdir() if p.name.startswith(".pagefind")]
    # and a rebuild with nothing new writes nothing, nor reindexes
    again = build_site(cfg)
    assert again.written == () and again.parsed == 0 and not again.searched


def test_a_changed_template_rebuilds_pages_even_when_digests_did_not_change(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parent.parent / "templates"
    templates = tmp_path / "templates"
    shutil.copytree(src, templates)
    cfg = site_config(tmp_path)
    cfg = dataclasses.replace(cfg, site=dataclasses.replace(cfg.site, templates=templates))
    write_digest(cfg.digests.inbox, DAYS[0])
    build_site(cfg)
    day = templates / "site" / "day.html"
    day.write_text(day.read_text("utf-8").replace("{{ body }}", "<p>restyled</p>\n{{ body }}"))
    report = build_site(cfg)
    assert cfg.feed.output / "2024/05/13/index.html" in report.written
    assert "restyled" in (cfg.feed.output / "2024/05/13/index.html").read_text("utf-8")


def test_a_changed_macro_rebuilds_pages_even_when_digests_did_not_change(tmp_path: Path) -> None:
    # templates/_macros.html sits beside site/, not in it: the fingerprint must cover it too.
    src = Path(__file__).resolve().parent.parent / "templates"
    templates = tmp_path / "templates"
    shutil.copytree(src, templates)
    cfg = site_config(tmp_path)
    cfg = dataclasses.replace(cfg, site=dataclasses.replace(cfg.site, templates=templates))
    write_digest(cfg.digests.inbox, DAYS[0])
    build_site(cfg)
    macros = templates / "_macros.html"
    text = macros.read_text("utf-8")
    assert '<ul class="{{ class }}">' in text
    macros.write_text(text.replace('<ul class="{{ class }}">', '<ul class="{{ class }} restyled">'))
    report = build_site(cfg)
    page = cfg.feed.output / "2024/05/13/index.html"
    assert page in report.written
    assert 'class="summary restyled"' in page.read_text("utf-8")


def test_the_fingerprint_covers_every_module_the_site_imports() -> None:
    # What importing publisher.site loads, in a fresh interpreter: every such module of the
    # package can change a page's bytes, so each must be in the build's fingerprint.
    code = (
        "import sys, publisher.site\n"
        "for m in sorted(sys.modules):\n"
        "    if m.startswith('publisher.'):\n"
        "        print(sys.modules[m].__file__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {Path(line).resolve() for line in done.stdout.split()}
    covered = set(_code_files())
    names = {"build.py", "pages.py", "feeds.py", "templating.py", "i18n.py", "digest.py"}
    assert {p.name for p in loaded} >= names
    assert loaded <= covered, sorted(str(p) for p in loaded - covered)


def test_the_send_side_does_not_load_the_site_builder() -> None:
    # publish.py (`publisher send`, `run`'s send job) needs a digest's hash, not feedgen/brotli
    code = "import json, sys, publisher.publish\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert "publisher.publish" in loaded
    assert not {"feedgen", "publisher.site", "publisher.site.build"} & loaded
    # nor prometheus_client: /metrics' per-process counters load it after a send, not at start
    assert "prometheus_client" not in loaded


def test_a_bad_digest_is_reported_and_the_rest_still_build(tmp_path: Path) -> None:
    cfg = site_config(tmp_path)
    for d in DAYS:
        write_digest(cfg.digests.inbox, d)
    bad = cfg.digests.inbox / "2024" / "05" / "bad.md"
    bad.write_text("# not a digest\n\nhello\n", encoding="utf-8")
    dup = cfg.digests.inbox / "2024" / "05" / "zz-copy.md"
    dup.write_text(digest_text(DAYS[0]), encoding="utf-8")
    report = build_site(cfg)
    assert report.days == 3
    assert [(p.path, p.line) for p in report.problems] == [(str(bad), 1), (str(dup), 1)]
    assert "no '## Daily Papers (YYYY-MM-DD)' header" in report.problems[0].reason
    assert "another digest for 2024-05-13" in report.problems[1].reason
    assert len(feedparser.parse((cfg.feed.output / "feed.xml").read_bytes()).entries) == 3


def test_build_command_prints_a_summary_and_each_bad_digest(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[digests]\ninbox = "inbox"\n[feed]\noutput = "out"\n', encoding="utf-8"
    )
    inbox = tmp_path / "inbox"
    write_digest(inbox, DAYS[0])
    runner = CliRunner()
    ok = runner.invoke(cli, ["build", "--config", str(tmp_path / "config.toml")])
    assert ok.exit_code == 0, ok.output
    assert "built 1 days" in ok.output and "out/feed.xml" in ok.output
    assert (tmp_path / "out" / "2024/05/13/index.html").is_file()
    (inbox / "broken.md").write_text("## Daily Papers (2024-02-30)\n", encoding="utf-8")
    bad = runner.invoke(cli, ["build", "--config", str(tmp_path / "config.toml")])
    assert bad.exit_code == 1
    assert f"{inbox / 'broken.md'}:1: invalid date in header" in bad.output
    assert "1 digests skipped" in bad.output


def test_given_digests_build_without_an_inbox(tmp_path: Path) -> None:
    cfg = site_config(tmp_path)
    digests = [parse(digest_text(d), source=f"<{d}>") for d in DAYS]
    report = build_site(cfg, digests=digests)
    assert report.ok and report.days == 3
    assert (cfg.feed.output / "2024/05/14/index.html").is_file()


@needs_corpus
def test_the_whole_corpus_builds(tmp_path: Path, corpus: Path) -> None:
    cfg = site_config(tmp_path, inbox=corpus)
    report = build_site(cfg)
    assert report.ok, report.problems[:5]
    days = sorted({corpus_date(p) for p in corpus_files()})  # counted from the corpus
    assert report.days == len(days)
    out = cfg.feed.output
    assert len(list(out.glob("*/*/*/index.html"))) == len(days)
    for name in ("feed.xml", "atom.xml"):
        parsed = feedparser.parse((out / name).read_bytes())
        assert parsed.bozo == 0
        assert len(parsed.entries) == min(cfg.feed.max_items, len(days))
        assert parsed.entries[0].link == day_url(cfg, days[-1])
    # a day with <think> in its text, and the largest day, are valid pages
    think = next(p for p in corpus_files() if "<think>" in p.read_text(encoding="utf-8"))
    for path in (largest_corpus_digest(), think):
        check_page(out / f"{corpus_date(path):%Y/%m/%d}" / "index.html")
    assert "&lt;think&gt;" in (out / f"{corpus_date(think):%Y/%m/%d}/index.html").read_text("utf-8")
    check_page(out / "index.html")
    assert build_site(cfg).written == ()


def test_a_bad_entry_title_is_a_config_error(tmp_path: Path) -> None:
    from publisher.errors import ConfigError

    cfg = site_config(tmp_path, entry_title="Papers {day}")
    write_digest(cfg.digests.inbox, DAYS[0])
    with pytest.raises(ConfigError, match="feed.entry_title"):
        build_site(cfg)


def test_a_failed_pagefind_run_is_a_build_error_not_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from publisher.errors import BuildError, ConfigError
    from publisher.site import index_search

    monkeypatch.setenv("PAGEFIND_BINARY_PATH", "/bin/false")
    with pytest.raises(BuildError, match="pagefind failed") as caught:
        index_search(tmp_path)
    assert not isinstance(caught.value, ConfigError)


@pytest.mark.parametrize(
    ("binary", "message"),
    [
        ("/bin/false", "pagefind failed on {out} (exit 1)"),
        ("/nonexistent/pagefind", "cannot run pagefind (/nonexistent/pagefind): No such file"),
    ],
)
def test_a_failing_search_indexer_is_one_line(tmp_path: Path, binary: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(
        '[digests]\ninbox = "in"\n[feed]\noutput = "out"\n', encoding="utf-8"
    )
    write_digest(tmp_path / "in", DAYS[0])
    env = dict(os.environ, PAGEFIND_BINARY_PATH=binary)
    config = str(tmp_path / "config.toml")
    cmd = [sys.executable, "-m", "publisher.cli", "build", "--config", config]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(out=tmp_path / "out") in lines[0], result.stderr
    assert lines[0].startswith("error: ")
    # search = false builds without it
    (tmp_path / "config.toml").write_text(
        '[digests]\ninbox = "in"\n[feed]\noutput = "out"\nsearch = false\n', encoding="utf-8"
    )
    ok = CliRunner().invoke(cli, ["build", "--config", str(tmp_path / "config.toml")])
    assert ok.exit_code == 0, ok.output
