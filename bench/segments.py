"""Render once per segment: a send to N readers spread over 50 segments (topics, cap) against
the same send to one segment, with the real `publisher send` to Postfix's smtp-sink, on SQLite.

    python bench/segments.py [--readers 20000] [--segments 50] [--connections 4] [--rounds 1]

1. starts `smtp-sink` on a free loopback port;
2. builds two fresh projects with the shipped topics and N readers each (the list imported
   first, untimed): one where every reader has the default choice (one segment), one where the
   readers are spread evenly over --segments distinct (topics, max_papers) choices: by default
   every paper with caps above the day's count (distinct segments, each rendered, whose
   messages are the same as the one segment's, so only the rendering differs), with --mixed
   real topic and cap choices, each matching some paper (smaller messages);
3. times `publisher send` in each (alternating, --rounds times; medians), checks that each
   mailed exactly N, and prints messages/s of each and the ratio 50 segments / 1 segment
   (goal >= 0.9), with the time of the one Jinja + premailer pass over the edition and the
   time per segment (assembled from that pass's pieces) that the send itself reports.

The digest is the corpus's largest day when ../shared/corpus is present (more topics to choose
from), else the sample digest. Needs /usr/sbin/smtp-sink (Debian package postfix).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.deliver import start_sink  # noqa: E402
from tests.net import free_port  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "daily_papers_ko"
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/corpus/daily_papers_ko")
SAMPLE = ROOT / "digests" / "2024" / "05" / "15.md"
RENDERED = re.compile(
    r"rendered (\d+) segment\(s\) of readers in ([0-9.]+) s \(after inlining the edition "
    r"once, ([0-9.]+) s\)"
)
SENT = re.compile(r": (\d+) sent, (\d+) failed")


def pick_digest() -> Path:
    if not CORPUS.is_dir():
        return SAMPLE
    from publisher.digest import parse_file

    return max(sorted(CORPUS.rglob("*.md")), key=lambda p: len(parse_file(p).papers))


def choices(digest: Path, count: int, mixed: bool) -> list[tuple[str, int]]:
    """`count` distinct (topics, cap) choices. Default: every paper, with caps above the
    digest's paper count, so each segment is rendered on its own but every message is the
    same as the one segment's (the ratio then measures the rendering, not smaller messages).
    `mixed`: real choices, topics and caps, each matching some paper (smaller messages)."""
    from publisher.config import load_config
    from publisher.digest import parse_file
    from publisher.topics import TopicMatcher

    if not mixed:
        papers = len(parse_file(digest).papers)
        return [("", papers + i) for i in range(count)]

    matcher = TopicMatcher.from_config(load_config(ROOT / "config.toml"))
    present = sorted(set().union(*(matcher.topics_of(p) for p in parse_file(digest).papers)))
    sets = [""] + present + [f"{a};{b}" for i, a in enumerate(present) for b in present[i + 1 :]]
    out = [(t, cap) for cap in (0, 5, 10, 3, 1, 20) for t in sets]
    if len(out) < count:
        sys.exit(f"only {len(out)} distinct choices match this digest")
    return out[:count]


def make_project(folder: Path, port: int, n: int, connections: int, digest: Path,
                 segs: list[tuple[str, int]]) -> Path:  # fmt: skip
    folder.mkdir(parents=True)
    shipped = (ROOT / "config.toml").read_text(encoding="utf-8")
    topics = shipped[shipped.index("[topics.") :]
    (folder / "config.toml").write_text(
        "[smtp]\n"
        f'host = "127.0.0.1"\nport = {port}\nsecurity = "none"\nconnections = {connections}\n'
        "messages_per_connection = 1000\n"
        '[subscribers]\nfile = "subscribers.csv"\n'
        f'[digests]\ninbox = "{digest.parent}"\n' + topics,
        encoding="utf-8",
    )
    with (folder / "subscribers.csv").open("w") as fh:
        fh.write("email,name,topics,max_papers\n")
        for i in range(n):
            t, cap = segs[i * len(segs) // n]  # in runs, like a list sorted by nothing
            fh.write(f"reader{i}@example.com,Reader {i},{t},{cap}\n")
    subprocess.run(
        [sys.executable, "-m", "publisher.cli", "subscribers", "import", "--config",
         str(folder / "config.toml")],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return folder / "config.toml"


def send(cfg: Path, digest: Path, n: int) -> tuple[float, int, float, float]:
    """One timed `publisher send`: (seconds, segments, their seconds, the inlining's)."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "publisher.cli", "send", "--config", str(cfg), "--digest",
         str(digest)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    sent = SENT.search(r.stdout)
    rendered = RENDERED.search(r.stdout + r.stderr)
    if r.returncode != 0 or not sent or int(sent[1]) != n or sent[2] != "0" or not rendered:
        sys.exit(f"publisher send failed (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    return elapsed, int(rendered[1]), float(rendered[2]), float(rendered[3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readers", type=int, default=20000)
    ap.add_argument("--segments", type=int, default=50)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--mixed", action="store_true", help="real topic/cap choices (smaller messages)"
    )
    args = ap.parse_args()
    import os

    os.environ.setdefault("PUBLISHER_SECRET", "bench-secret-0123456789abcdefghij")
    digest = pick_digest()
    segs = choices(digest, args.segments, args.mixed)
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-segments-") as tmp:
            one: list[float] = []
            many: list[float] = []
            stats = {}
            for r in range(args.rounds):
                for label, chosen, into in (("one", [("", 0)], one), ("many", segs, many)):
                    cfg = make_project(Path(tmp) / f"{label}{r}", port, args.readers,
                                       args.connections, digest, chosen)  # fmt: skip
                    seconds, renders, render_s, inline_s = send(cfg, digest, args.readers)
                    into.append(seconds)
                    stats[label] = (renders, render_s, inline_s)
    finally:
        sink.terminate()
        sink.wait()
    n = args.readers
    t1, tm = statistics.median(one), statistics.median(many)
    kind = "mixed topics and caps" if args.mixed else "same-size segments"
    print(
        f"digest {digest} ({args.readers} readers, {args.connections} connections, SQLite, {kind})"
    )
    for label, t in (("1 segment", t1), (f"{args.segments} segments", tm)):
        renders, render_s, inline_s = stats["one" if label == "1 segment" else "many"]
        print(
            f"{label:>12}: {t:6.2f} s, {n / t:7.0f} messages/s; Jinja + premailer once "
            f"{inline_s * 1000:.0f} ms, then {renders} segments at "
            f"{render_s / max(renders, 1) * 1000:.1f} ms each (wall, beside the sending threads)"
        )
    print(f"ratio {args.segments} segments / 1 segment (messages/s): {t1 / tm:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
