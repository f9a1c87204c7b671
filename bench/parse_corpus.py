"""Parse speed over the whole corpus: files/s and papers/s, against a reference from the same run.

    python bench/parse_corpus.py [CORPUS_DIR] [--repeat N]

The reference is the floor any parser pays: reading and decoding every file and splitting it
into lines. The ratio says how much the parser costs on top of that; the target is the whole
corpus (260 files) in under 1 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from publisher.digest import find_digests, parse_file

DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "daily_papers_ko"


def _time(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    files = find_digests(args.corpus)
    if not files:
        raise SystemExit(f"no digests under {args.corpus}")
    papers = sum(len(parse_file(f).papers) for f in files)  # also warms caches

    reference = _time(
        lambda: [f.read_bytes().decode("utf-8", "replace").split("\n") for f in files], args.repeat
    )
    parse = _time(lambda: [parse_file(f) for f in files], args.repeat)

    print(f"corpus:    {len(files)} files, {papers} papers ({args.corpus})")
    print(f"reference: read+decode+split {reference * 1000:8.1f} ms")
    print(
        f"parse:     {parse * 1000:8.1f} ms  = {len(files) / parse:,.0f} files/s, "
        f"{papers / parse:,.0f} papers/s"
    )
    print(f"ratio parse/reference: {parse / reference:.1f}x")
    verdict = "OK" if parse < 1.0 else "SLOW"
    print(f"target: whole corpus under 1 s -> {parse:.3f} s {verdict}")


if __name__ == "__main__":
    main()
