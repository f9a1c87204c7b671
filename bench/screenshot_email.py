"""Render a preview.html to PNG with headless Chromium at 600 and 375 px wide (not a CI test).

    publisher send --dry-run --out preview
    python bench/screenshot_email.py preview/preview.html   # writes preview/email-600.png, -375.png

Needs Debian's chromium (`apt-get install chromium`; fonts-noto-cjk for Korean). Offline flags:
remote thumbnails will not load here, which shows how the email looks with images blocked.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (the tests' flags)


def screenshot(html: Path, width: int, height: int = 2400) -> Path:
    out = html.with_name(f"email-{width}.png")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                *CHROMIUM_ARGS,
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={out}",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return out


def main() -> None:
    html = Path(sys.argv[1] if len(sys.argv) > 1 else "preview/preview.html")
    for width in (600, 375):
        print(screenshot(html, width))


if __name__ == "__main__":
    main()
