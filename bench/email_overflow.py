"""Every corpus digest's newsletter in headless Chromium at 375 and 600 px, light and dark.

    python bench/email_overflow.py [CORPUS_DIR]      # default ../shared/corpus/daily_papers_ko

Renders each digest's HTML part once (as `publisher send` would), loads it into Debian's
/usr/bin/chromium through Playwright (network blocked: thumbnails show their alt text, as in
clients that block images) and, for each width and colour scheme, checks that nothing scrolls
sideways (document.scrollingElement.scrollWidth <= the viewport width) and that the unsubscribe
link lies inside the viewport's width. Prints each failing day and width, then how many digests
overflow (target 0). Not a CI test: tests/test_email_browser.py checks the hard days in CI.
"""

from __future__ import annotations

import email
import email.policy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from publisher.config import load_config  # noqa: E402
from publisher.digest import parse_file  # noqa: E402
from publisher.mailer import MessageFactory  # noqa: E402
from publisher.newsletter import render_newsletter  # noqa: E402
from tests.browser import chromium  # noqa: E402  (the tests' launch: same flags)

CORPUS = ROOT.parent / "shared" / "corpus" / "daily_papers_ko"
WIDTHS = (375, 600)
SCHEMES = ("light", "dark")
SECRET = b"Ufd2xj9Qe7mWcL4tZr0NbK8sHaY3vGp1oE6iTqJ5nRw"

MEASURE = """(href) => {
  const a = [...document.querySelectorAll('a')].find((x) => x.href === href);
  const r = a ? a.getBoundingClientRect() : null;
  return {
    scroll: document.scrollingElement.scrollWidth,
    left: r ? r.left + window.scrollX : -1,
    right: r ? r.right + window.scrollX : 1e9,
  };
}"""


def check(page, html: str, unsubscribe: str) -> list[str]:  # noqa: ANN001
    """The failures of one HTML document, as 'WIDTHpx SCHEME: what' strings."""
    page.set_content(html, wait_until="domcontentloaded")
    failures = []
    for scheme in SCHEMES:
        page.emulate_media(color_scheme=scheme)
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            m = page.evaluate(MEASURE, unsubscribe)
            if m["scroll"] > width:
                failures.append(f"{width}px {scheme}: scrollWidth {m['scroll']}")
            if m["left"] < 0 or m["right"] > width:
                where = f"{m['left']:.0f}-{m['right']:.0f}"
                failures.append(f"{width}px {scheme}: unsubscribe link at {where}")
    return failures


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    files = sorted(corpus.rglob("*.md"))
    cfg = load_config(ROOT / "config.toml")
    overflowing = 0
    t0 = time.perf_counter()
    with chromium() as browser:
        page = browser.new_page()
        page.route("**/*", lambda route: route.abort())  # offline: images blocked
        for path in files:
            factory = MessageFactory(render_newsletter(parse_file(path), cfg), cfg, SECRET)
            raw = factory.build("reader@example.com", subscriber_id=1)
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            html = msg.get_body(("html",)).get_content()
            failures = check(page, html, factory.unsubscribe_url(1))
            if failures:
                overflowing += 1
                print(f"{path.relative_to(corpus)}: " + "; ".join(failures))
    elapsed = time.perf_counter() - t0
    print(
        f"overflowing: {overflowing} of {len(files)} digests "
        f"(widths {', '.join(map(str, WIDTHS))} px, light and dark; target 0) in {elapsed:.0f} s"
    )


if __name__ == "__main__":
    main()
