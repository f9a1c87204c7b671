"""One way to launch Debian's headless Chromium, for the browser tests and the bench scripts.

Playwright is told where Chromium is (`executable_path`), so nothing is downloaded (no
`playwright install`). Imports neither pytest nor Playwright at module level, so bench/ can use
it (`from tests.browser import ...` after putting the checkout on sys.path).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Offline and quiet: no sandbox (root in CI containers), no GPU, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MISSING = f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)"


def launch(playwright: Any, *extra_args: str) -> Any:
    """A headless Chromium from a running `sync_playwright()`."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
    )


@contextmanager
def chromium(*extra_args: str) -> Iterator[Any]:
    """Playwright started and a headless Chromium launched; both closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p, *extra_args)
        try:
            yield browser
        finally:
            browser.close()
