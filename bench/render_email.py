"""Per-digest render cost vs per-recipient build cost of the newsletter email (not a CI test).

    python bench/render_email.py [DIGEST] [N]

Default DIGEST: the corpus's 68-paper day (../shared/corpus/daily_papers_ko/2025/02/19.md),
else the newest sample digest. Prints the time to render one digest (Jinja + premailer +
size budget), the time to build one personalised message, and their ratio; the targets are
under 0.2 s per digest and under 50 µs per recipient. The reference measured in the same run is
one plain `str.replace` pass over the HTML: the floor of any per-reader substitution.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from publisher.config import load_config
from publisher.digest import parse_file
from publisher.mailer import MessageFactory
from publisher.newsletter import PLACEHOLDER_UNSUBSCRIBE, render_newsletter
from publisher.tokens import Signer

ROOT = Path(__file__).resolve().parent.parent
BIG_DAY = ROOT.parent / "shared" / "corpus" / "daily_papers_ko" / "2025" / "02" / "19.md"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else BIG_DAY
    if not path.exists():
        path = ROOT / "digests" / "2025" / "04" / "11.md"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    cfg = load_config(ROOT / "config.toml")
    digest = parse_file(path)
    render_newsletter(digest, cfg)  # warm caches (templates, CSS parsing)
    renders = []
    for _ in range(5):
        t0 = time.perf_counter()
        nl = render_newsletter(digest, cfg)
        renders.append(time.perf_counter() - t0)
    factory = MessageFactory(nl, cfg, b"bench-secret-0123456789abcdefghij")
    t0 = time.perf_counter()
    size = 0
    for i in range(n):
        size += len(factory.build(f"reader{i}@example.com", f"Reader {i}", 100_000 + i))
    per_message = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        nl.html.replace(PLACEHOLDER_UNSUBSCRIBE, f"https://x.example/u/{i}")
    reference = (time.perf_counter() - t0) / n
    render = statistics.median(renders)
    # The unsubscribe token alone: the current form (a signed id) against the old one (the
    # address in clear) that it replaced, same Signer, same run.
    signer = Signer(b"bench-secret-0123456789abcdefghij", "unsubscribe")
    t0 = time.perf_counter()
    for i in range(n):
        signer.sign_id(100_000 + i)
    token_id = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        signer.sign(f"reader{i}@example.com")
    token_old = (time.perf_counter() - t0) / n
    print(f"digest:        {path} ({len(digest.papers)} papers)")
    print(f"html part:     {nl.html_bytes:,} bytes; message ~{size // n:,} bytes")
    print(f"render:        {render * 1000:.1f} ms per digest (median of 5; target < 200 ms)")
    print(f"build:         {per_message * 1e6:.1f} µs per recipient over {n} (target < 50 µs)")
    print(f"reference:     {reference * 1e6:.1f} µs for one str.replace over the HTML")
    print(
        f"token:         {token_id * 1e6:.2f} µs per signed id vs {token_old * 1e6:.2f} µs for the "
        f"old address form (ratio {token_id / token_old:.2f})"
    )
    print(
        f"ratio:         build / reference = {per_message / reference:.2f}; "
        f"render / build = {render / per_message:,.0f}"
    )


if __name__ == "__main__":
    main()
