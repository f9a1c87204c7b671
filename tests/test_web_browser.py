"""A real browser fills in the signup form: Debian's headless Chromium driven by Playwright.

Launched by tests/browser.py (Playwright told where Chromium is, so nothing is downloaded: no
`playwright install`) through conftest's `browser` fixture. Skips, saying why, where
/usr/bin/chromium is absent, and fails under CI=true (`.ci/run` installs it from
`.ci/apt-packages` when it runs as root on Debian).
"""

from __future__ import annotations

from pathlib import Path

from publisher.i18n import strings
from publisher.state import ACTIVE, PENDING, Store
from publisher.web import create_app

from .smtp_server import smtp_server
from .webhelpers import SECRET, live_server, web_config


def test_browser_fills_in_the_signup_form(tmp_path: Path, browser) -> None:  # noqa: ANN001
    t = strings("ko")
    with smtp_server() as (inbox, port):
        stores: list[Store] = []

        def make_app(base: str):  # noqa: ANN202
            cfg = web_config(tmp_path, base, port)
            stores.append(Store.open(cfg))
            return create_app(cfg, secret=SECRET, store=stores[0])

        with live_server(make_app) as base:
            page = browser.new_page()
            page.goto(base + "subscribe")
            page.fill("#email", "Grace.Hopper@Example.com")
            page.fill("#name", "그레이스")
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert page.locator("h1").inner_text() == t["check_inbox_title"]
            assert page.url == base + "subscribe"
            # The page is styled by the archive's stylesheet (the shared look).
            bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert bg in ("rgb(244, 245, 247)", "rgb(13, 17, 23)")
            page.close()
        [msg] = inbox.to("grace.hopper@example.com")
        assert msg["Subject"] == t["confirm_subject"].format(title="Daily Papers")
        sub = stores[0].get("grace.hopper@example.com")
        assert (sub.status, sub.name) == (PENDING, "그레이스")
        stores[0].close()


def test_pages_work_under_the_content_security_policy_and_confirm_by_button(
    tmp_path: Path,
    browser,  # noqa: ANN001
) -> None:
    """The strict CSP blocks nothing the pages use (Chromium reports every violation as a
    `securitypolicyviolation` event and on the console), the web pages keep their own styles,
    and a person confirms a signup with the page's button (the GET alone changed nothing)."""
    t = strings("ko")
    with smtp_server() as (inbox, port):
        stores: list[Store] = []

        def make_app(base: str):  # noqa: ANN202
            cfg = web_config(tmp_path, base, port)
            stores.append(Store.open(cfg))
            return create_app(cfg, secret=SECRET, store=stores[0])

        with live_server(make_app) as base:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(msg.text))
            page.add_init_script(
                "window.__violations = [];"
                "document.addEventListener('securitypolicyviolation',"
                " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
            )
            page.goto(base + "subscribe")
            page.fill("#email", "ada@example.com")
            with page.expect_navigation():
                page.click("button[type=submit]")
            [msg] = inbox.to("ada@example.com")
            link = next(
                w for w in msg.get_body(("plain",)).get_content().split() if "/confirm/" in w
            )
            for url in (base, base + "2024/05/15/", base + "subscribe", link):
                page.goto(url)
                assert page.evaluate("window.__violations") == [], url
                # The archive's stylesheet and, on the web pages, web.css are applied.
                bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
                assert bg in ("rgb(244, 245, 247)", "rgb(13, 17, 23)"), url
            assert stores[0].get("ada@example.com").status == PENDING  # type: ignore[union-attr]
            radius = page.evaluate(
                "getComputedStyle(document.querySelector('.button')).borderRadius"
            )
            assert radius == "8px"  # from web.css, not an inline <style> the CSP would block
            with page.expect_navigation():
                page.click("button[type=submit]")
            assert page.locator("h1").inner_text() == t["confirmed_title"]
            assert page.evaluate("window.__violations") == []
            page.close()
        assert not [line for line in console if "Content Security Policy" in line], console
        assert stores[0].get("ada@example.com").status == ACTIVE  # type: ignore[union-attr]
        stores[0].close()
