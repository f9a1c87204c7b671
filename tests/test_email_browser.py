"""The newsletter as a phone and a desktop show it: Debian's headless Chromium via Playwright.

Launched by tests/browser.py (`executable_path=/usr/bin/chromium`, nothing downloaded);
Korean is drawn with fonts-noto-cjk (both in .ci/apt-packages). The network is
blocked, so thumbnails show their alt text, as in the many clients that block images.
`bench/email_overflow.py` runs the overflow check over every corpus digest.
"""

from __future__ import annotations

import email
import email.policy
import importlib
from pathlib import Path

import pytest

from publisher.config import Config, load_config
from publisher.digest import parse_file
from publisher.mailer import MessageFactory
from publisher.newsletter import render_newsletter
from publisher.preview import dry_run

from .conftest import CORPUS, ROOT, needs_corpus
from .requires import requires

SECRET = b"v1ugk1HAguTl5BdxewuTaqkABWjfgRW3v_xQ9OqKOMM"
# Days whose email overflowed a 375 px screen before (unbroken URLs and code names in the
# summaries: 2024-02-08's github URL overflowed 600 px too), and the corpus's most Hangul-dense
# day (2023-11-20: half of its characters are Hangul syllables).
OVERFLOWED = ["2024/02/08", "2023/12/22", "2023/12/06", "2024/02/09", "2024/09/19"]
KOREAN_HEAVY = "2023/11/20"


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "config.toml")


@pytest.fixture
def page(browser):  # noqa: ANN001, ANN201
    pg = browser.new_page()
    pg.route("**/*", lambda route: route.abort())  # offline: no image, no font download
    yield pg
    pg.close()


def email_html(cfg: Config, day: str) -> tuple[str, str]:
    """The HTML part of a day's message as sent to one reader, and its unsubscribe link."""
    factory = MessageFactory(render_newsletter(parse_file(CORPUS / f"{day}.md"), cfg), cfg, SECRET)
    raw = factory.build("reader@example.com", subscriber_id=1)
    part = email.message_from_bytes(raw, policy=email.policy.default).get_body(("html",))
    assert part is not None
    return part.get_content(), factory.unsubscribe_url(1)


# Line breaks between two Hangul syllables: each character's box is measured, and a character
# that starts a new line right after another Hangul syllable is a break inside a Korean word.
MID_WORD_BREAKS = """() => {
  const hangul = /[\\uac00-\\ud7a3]/;
  const found = [];
  const walker = document.createTreeWalker(document.querySelector('[role=main]'), 4);
  const range = document.createRange();
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const s = node.data;
    let prevTop = null;
    for (let i = 0; i < s.length; i++) {
      range.setStart(node, i); range.setEnd(node, i + 1);
      const r = range.getClientRects()[0];
      if (!r) continue;
      if (prevTop !== null && r.top > prevTop + 2 && hangul.test(s[i]) && hangul.test(s[i - 1]))
        found.push(s.slice(Math.max(0, i - 6), i) + ' / ' + s.slice(i, i + 6));
      prevTop = r.top;
    }
  }
  return found;
}"""


@needs_corpus
@pytest.mark.parametrize("day", [*OVERFLOWED, KOREAN_HEAVY])
def test_no_horizontal_overflow_and_unsubscribe_in_view(cfg: Config, page, day: str) -> None:  # noqa: ANN001
    html, unsubscribe = email_html(cfg, day)
    page.set_content(html, wait_until="domcontentloaded")
    link = page.locator(f'a[href="{unsubscribe}"]')
    for scheme, background in (("light", "rgb(244, 245, 247)"), ("dark", "rgb(13, 17, 23)")):
        page.emulate_media(color_scheme=scheme)
        # the scheme took effect: the page background follows it
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == background
        for width in (375, 600):
            page.set_viewport_size({"width": width, "height": 800})
            scroll = page.evaluate("document.scrollingElement.scrollWidth")
            assert scroll <= width, f"{day} {scheme} {width}px: scrollWidth {scroll}"
            link.scroll_into_view_if_needed()
            box = link.bounding_box()
            assert box is not None, f"{day}: no unsubscribe link"
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (day, scheme, width, box)
            assert box["y"] >= 0 and box["y"] + box["height"] <= 800, (day, scheme, width, box)


@needs_corpus
def test_korean_wraps_between_words_on_a_phone(cfg: Config, page) -> None:  # noqa: ANN001
    page.set_viewport_size({"width": 375, "height": 800})
    page.set_content(email_html(cfg, KOREAN_HEAVY)[0], wait_until="domcontentloaded")
    lines = page.evaluate(
        "document.querySelector('[role=main]').getBoundingClientRect().height / 20"
    )
    assert lines > 100  # long enough to wrap a lot at 375 px
    assert page.evaluate(MID_WORD_BREAKS) == []


# A day with full cards only, and the 68-paper day (shortened cards, the "more papers" list).
@pytest.mark.parametrize("day", [OVERFLOWED[0], "2025/02/19"])
def test_axe_finds_no_violation_in_the_preview(
    tmp_path: Path,
    cfg: Config,
    page,  # noqa: ANN001
    day: str,
) -> None:
    requires("axe")
    axe_module = importlib.import_module("axe_playwright_python.sync_playwright")
    digest = CORPUS / f"{day}.md"
    report = dry_run(
        cfg,
        digest_path=digest if digest.exists() else None,
        to=("reader@example.com",),
        out=tmp_path / "preview",
    )
    page.set_content(report.html_path.read_text(encoding="utf-8"), wait_until="domcontentloaded")
    axe = axe_module.Axe()
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in (375, 600):
            page.set_viewport_size({"width": width, "height": 800})
            results = axe.run(page)
            assert results.violations_count == 0, f"{scheme} {width}px\n" + (
                results.generate_report()
            )
