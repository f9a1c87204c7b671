"""The archive in a real browser (Debian's headless Chromium driven by Playwright, as in
test_web_browser.py; nothing downloaded): Pagefind search finds an English and a Korean term and
lands on the right paper's anchor, from `publisher serve` and from a plain static server under a
sub-path; axe-core finds no violation on the index, a month and a day page, light and dark."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from publisher.site import build_site
from publisher.state import Store
from publisher.web import create_app

from .net import free_port
from .requires import requires
from .sitehelpers import DAYS, digest_text, site_config, write_digest
from .webhelpers import SECRET, live_server

SPECIAL_DAY = dt.date(2024, 5, 14)
SPECIAL = """## Daily Papers (2024-05-14)

### [Draft Trees for Speculative Decoding](https://arxiv.org/abs/2405.14001)

![](https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.14001.png)

Vote: 12

Authors: Grace Hopper, Edsger Dijkstra

- **What's New**: 작은 초안 모델이 여러 토큰을 제안하고 큰 모델이 한 번에 검증합니다.
- **Method**: 트리 구조로 후보를 펼쳐 수락률을 높였습니다.

### [Low-bit Weights without Retraining](https://arxiv.org/abs/2405.14002)

![](https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.14002.png)

Vote: 7

Authors: Barbara Liskov

- **What's New**: 재학습 없이 가중치를 4비트로 줄이는 양자화 기법을 제안합니다.
- **Results**: 메모리 사용량이 크게 줄었습니다.
"""


def _build(root: Path, base_url: str = "http://localhost:8000/"):  # noqa: ANN202
    cfg = site_config(root)
    cfg = dataclasses.replace(cfg, site=dataclasses.replace(cfg.site, base_url=base_url))
    for d in DAYS:
        if d == SPECIAL_DAY:
            write_digest(cfg.digests.inbox, d, SPECIAL)
        else:
            write_digest(cfg.digests.inbox, d, digest_text(d))
    report = build_site(cfg)
    assert report.ok and report.searched
    return cfg


@contextmanager
def static_server(folder: Path, prefix: str) -> Iterator[str]:
    """Python's own static file server (no Content-Encoding, no rewrites), with the archive
    under `prefix`: what any static host does."""
    served = folder.parent / "static-root"
    (served / prefix).parent.mkdir(parents=True, exist_ok=True)
    (served / prefix).symlink_to(folder, target_is_directory=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/{prefix}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def served_archive(tmp_path: Path, how: str) -> Iterator[str]:
    if how.startswith("publisher serve"):
        stores: list[Store] = []

        def make_app(base: str):  # noqa: ANN202
            cfg = _build(tmp_path, base)
            stores.append(Store.open(cfg))
            app = create_app(cfg, secret=SECRET, store=stores[0])
            return app

        try:
            with live_server(make_app) as base:
                yield base
        finally:
            for s in stores:
                s.close()
    else:
        cfg = _build(tmp_path)
        with static_server(cfg.feed.output, "archive/daily") as base:
            yield base


def _search(page, query: str) -> list[str]:  # noqa: ANN001
    page.fill("#search-q", query)
    page.wait_for_function(
        "q => document.querySelector('.search-results').dataset.query === q", arg=query
    )
    links = page.locator(".search-results li > a")
    return links.evaluate_all("els => els.map(e => e.getAttribute('href'))")


@pytest.mark.parametrize("how", ["publisher serve", "static host under a sub-path"])
def test_search_finds_english_and_korean_terms_and_lands_on_the_paper(
    tmp_path: Path,
    browser,  # noqa: ANN001
    how: str,
) -> None:
    with served_archive(tmp_path, how) as base:
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        response = page.goto(base)
        if how == "publisher serve":
            # served under the app's own strict policy (web.content_security_policy), which
            # allows exactly what the search needs: Pagefind's WebAssembly and index fetches
            csp = response.headers["content-security-policy"]  # type: ignore[union-attr]
            assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "default-src 'none'" in csp
        assert page.locator("form.search").is_visible()
        day = base + "2024/05/14/"
        for query, anchor in (
            ("speculative", "2405.14001"),  # English, in a title
            ("양자화", "2405.14002"),  # Korean, in a summary ("양자화 기법을")
            ("4비트로", "2405.14002"),  # Korean with its particle, as written
            ("가중치", "2405.14002"),  # a Korean stem: the page says "가중치를" (prefix match)
        ):
            hrefs = _search(page, query)
            expected = urlpath(day) + "#" + anchor
            assert hrefs[0] == expected, (query, hrefs)
        # from a day page too, and a click lands on the paper's heading
        page.goto(base + "2024/05/13/")
        _search(page, "speculative")
        page.locator(".search-results li > a").first.click()
        page.wait_for_url(day + "#2405.14001")
        target = page.locator("[id='2405.14001']")
        assert "Speculative Decoding" in target.inner_text()
        assert page.evaluate("document.querySelector(':target').id") == "2405.14001"
        box = target.bounding_box()
        assert box is not None and 0 <= box["y"] < page.viewport_size["height"]  # type: ignore[index]
        page.close()
        # no thumbnails can load offline; anything else in the console (a CSP refusal, a script
        # error) is a failure
        assert [e for e in errors if "Failed to load resource" not in e] == []


def urlpath(url: str) -> str:
    return "/" + url.split("/", 3)[3]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_violation(tmp_path: Path, browser, scheme: str) -> None:  # noqa: ANN001
    requires("axe")
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    with served_archive(tmp_path, "publisher serve") as base:
        page = browser.new_page(color_scheme=scheme)
        for path in ("", "2024/05/", "2024/05/14/"):
            page.goto(base + path)
            results = axe.run(page)
            assert results.violations_count == 0, (path, results.generate_report())
        # and with search results shown
        page.goto(base)
        _search(page, "speculative")
        results = axe.run(page)
        assert results.violations_count == 0, results.generate_report()
        page.close()
