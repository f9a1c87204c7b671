"""Time `build_site` on the corpus: a full build, then an incremental build after one new digest,
without the search index ([feed] search = false) and then what Pagefind's indexing adds.

Prints each time against its target (3 s full, 0.3 s incremental, +10 s for the search index)
and against a reference measured in the same run (parsing the corpus, with no rendering), so a
slow machine shows as a slow reference rather than as a failure. Also prints the feeds' sizes
(the default [feed] content = "summary") against FeedBurner's 512 KB. With --topics the
shipped config.toml's topics are on, so the topic pages and feeds are built too (the weekly
pages always are), and the largest topic feed is printed beside the site's.

    python bench/build_site.py [--corpus PATH] [--topics]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from publisher.config import default_config, load_config  # noqa: E402
from publisher.digest import find_digests, parse_file  # noqa: E402
from publisher.site import build_site, index_search  # noqa: E402
from publisher.urls import ATOM_FILE, JSON_FILE, RSS_FILE  # noqa: E402

FULL_TARGET = 3.0
INCREMENTAL_TARGET = 0.3
SEARCH_TARGET = 10.0  # what indexing may add to a full build
FEED_LIMIT = 512 * 1024

NEW_DAY = """## Daily Papers ({date})

### [A synthetic new paper](https://arxiv.org/abs/2505.99999)

![](https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2505.99999.png)

Vote: 1

Authors: Ada Lovelace, Alan Turing

- **What's New**: a new day added to time an incremental build.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared/corpus/daily_papers_ko")
    ap.add_argument("--topics", action="store_true", help="build with the shipped topics")
    args = ap.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"corpus not found at {args.corpus}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inbox = root / "inbox"
        shutil.copytree(args.corpus, inbox)
        cfg = default_config(root)
        cfg = dataclasses.replace(
            cfg,
            digests=dataclasses.replace(cfg.digests, inbox=inbox),
            feed=dataclasses.replace(cfg.feed, search=False),
        )
        if args.topics:
            cfg = dataclasses.replace(cfg, topics=load_config(ROOT / "config.toml").topics)

        # The reference also warms the OS file cache, so the full build does not pay for disk.
        start = time.perf_counter()
        files = find_digests(inbox)
        dates = [parse_file(f).date for f in files]
        reference = time.perf_counter() - start

        start = time.perf_counter()
        report = build_site(cfg)
        full = time.perf_counter() - start
        assert report.ok and report.days == len(files), report.problems

        new_date = max(dates) + dt.timedelta(days=1)
        new = inbox / f"{new_date:%Y/%m/%d}.md"
        new.parent.mkdir(parents=True, exist_ok=True)
        new.write_text(NEW_DAY.format(date=new_date.isoformat()), encoding="utf-8")
        start = time.perf_counter()
        inc = build_site(cfg)
        incremental = time.perf_counter() - start
        assert inc.ok and inc.parsed == 1, inc
        sizes = {n: (cfg.feed.output / n).stat().st_size for n in (RSS_FILE, ATOM_FILE, JSON_FILE)}
        for folder in ("weekly", "topics/*"):
            found = list(cfg.feed.output.glob(f"{folder}/{RSS_FILE}"))
            if found:
                biggest = max(found, key=lambda p: p.stat().st_size)
                sizes[biggest.relative_to(cfg.feed.output).as_posix()] = biggest.stat().st_size

        # The search index: Pagefind over every day page (it has no incremental mode).
        start = time.perf_counter()
        index_search(cfg.feed.output)
        search = time.perf_counter() - start
        pages = len(list((cfg.feed.output / "pagefind" / "fragment").glob("*.pf_fragment")))
        bundle = sum(
            p.stat().st_size for p in (cfg.feed.output / "pagefind").rglob("*") if p.is_file()
        )

    topics = f", {len(cfg.topics)} topics" if cfg.topics else ", no topics"
    print(f"corpus: {len(files)} digests from {args.corpus}{topics}")
    print(f"reference (parse the corpus, no output): {reference:.3f} s")
    print(
        f"full build:        {full:.3f} s  target {FULL_TARGET} s  "
        f"({full / FULL_TARGET:.2f} of target; {full / reference:.2f}x reference)"
    )
    print(
        f"incremental build: {incremental:.3f} s  target {INCREMENTAL_TARGET} s  "
        f"({incremental / INCREMENTAL_TARGET:.2f} of target; {incremental / reference:.2f}x "
        f"reference; {len(inc.written)} files written, {inc.unchanged} unchanged)"
    )
    print(
        f"search index:      +{search:.3f} s  target +{SEARCH_TARGET} s  "
        f"({search / SEARCH_TARGET:.2f} of target; {search / reference:.2f}x reference; "
        f"{pages} pages, bundle {bundle / 1e6:.1f} MB, loaded on demand)"
    )
    for name, size in sizes.items():
        print(f"{name + ':':<24} {size / 1024:.0f} KB (limit {FEED_LIMIT // 1024} KB)")


if __name__ == "__main__":
    main()
