"""This tree against another revision, on one bench, in one run: a guard against regressions.

    python bench/compare.py REV [--bench deliver|startup|import|parse|render|build] [--rounds 3]
                            [--subscribers 20000] [--connections 4]
                            [--backend sqlite|postgresql] [--threshold 0.05]
                            [--cache daily|cold|warm] [--keep]

1. checks REV (anything `git rev-parse` takes: main, 0238d54, HEAD~3) out into a temporary git
   worktree and installs it into a venv of its own there (its requirements.lock, then `pip
   install --no-deps -e`; without a lock file, `pip install -e`: about a minute), so REV runs
   with its own code and its own dependency pins;
2. runs the same measurement on both sides: this file's code, each timed step a subprocess
   started with that side's Python in that side's folder (the very `publisher` command, checked
   to import that side's package). "This tree" is the working tree as it is, uncommitted changes
   included, run with the Python that runs this script (its venv);
3. takes every measurement `--rounds` times, interleaved, the order reversed every other round
   (round 1: [smtp-source,] REV, tree; round 2: tree, REV[, smtp-source]; ...), so the noise of a
   busy machine and any warm-up effect hit both sides alike;
4. prints each run, the medians, and the ratios of speed: tree / REV (> 1: the tree is faster)
   and, for `deliver`, each / Postfix's smtp-source; then exits 1 if the tree is more than
   --threshold (5%) slower than REV, else 0. The verdict is the median of the rounds' own
   ratios (the two sides of a round run back to back, under the same load); the ratio of the
   medians is printed too. Ratios compare only within one run. For `deliver` it also prints
   the CPU (user + system, from the child's rusage) of each `publisher send`, and its median
   per message: a figure far less noisy than the wall clock on a shared machine, and the
   issue's budget (publisher CPU per message), start-up included.

Benches (each timed step is a whole command, start-up included, unless said otherwise):
  deliver  `publisher send` to --subscribers readers over --connections connections into
           Postfix's smtp-sink, on a fresh SQLite file (or --backend postgresql: a throwaway
           cluster with production durability, as bench/deliver.py), the list imported first,
           untimed; smtp-source sends the same number of the same-sized message over as many
           connections, as the reference. Needs /usr/sbin/smtp-sink and smtp-source (postfix).
  startup  `publisher send` to one reader into smtp-sink, on a fresh SQLite file (the reader
           imported first, untimed): the whole command, from exec to exit, so everything a
           send pays before its first message and after its last (imports, the edition's
           render and CSS inlining, the database's checks, the interpreter's exit). Each
           measurement is the median of 5 such sends; the issue's target (0.3 s) is printed
           against each side's median.
  import   `publisher subscribers import` of a CSV of --subscribers new readers into a fresh
           SQLite file.
  parse    parsing every digest of the corpus (../shared/corpus), 3 times in one process, the
           median (in-process time, without start-up; uses publisher.digest's find_digests and
           parse_file, so REV must have them).
  render   the email of RENDER_DIGESTS digests spread over the corpus (their first render of
           the day: Jinja and premailer, nothing from the cache), each side with its own
           config.toml, 3 times in one process, the median (in-process time, the imports and
           one warm-up render left out; uses publisher.newsletter's render_newsletter(digest,
           cfg), so REV must have it).
  build    a full `publisher build` of the corpus into a fresh folder, without the search index
           ([feed] search = false, so REV must know that key).

--cache (deliver, startup): what each send finds in publisher's cache folder
  (publisher/caches.py; one per side): `daily` (the default) the compiled templates and
  the secret's strength of the side's previous sends but not the edition's CSS inlining
  nor its Markdown, as the day's first send of a new edition finds it; `cold` nothing (a
  new machine); `warm` everything, as a re-run, a `send` after `send --dry-run`, or a
  second sender on the machine finds it.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import deliver as bench_deliver  # noqa: E402  (bench/deliver.py: the project, sink and checks)

# ../shared/corpus next to the checkout (as the tests look for it), or two levels up from a
# worktree under a folder of worktrees.
CORPUS = ROOT.parent / "shared" / "corpus"
if not CORPUS.is_dir():
    CORPUS = ROOT.parent.parent / "shared" / "corpus"

PARSE = """
import statistics, sys, time
from pathlib import Path
from publisher.digest import find_digests, parse_file
files = find_digests(Path(sys.argv[1]))
assert files, "no digests"
runs = []
for _ in range(3):
    t0 = time.perf_counter()
    for f in files:
        parse_file(f)
    runs.append(time.perf_counter() - t0)
print(statistics.median(runs))
"""

RENDER_DIGESTS = 10
RENDER = """
import os, shutil, statistics, sys, tempfile, time
from pathlib import Path
cache = tempfile.mkdtemp()
os.environ["XDG_CACHE_HOME"] = cache  # this process's own, removed at the end
from publisher.config import load_config
from publisher.digest import find_digests, parse_file
from publisher.newsletter import render_newsletter
cfg = load_config("config.toml")
files = find_digests(Path(sys.argv[1]))
count = int(sys.argv[2])
digests = [parse_file(files[i * len(files) // count]) for i in range(count)]
render_newsletter(digests[0], cfg)  # the imports and Jinja's compiled templates: not timed
runs = []
for _ in range(3):
    # what the day's first send finds (--cache daily): no edition's CSS inlining nor Markdown
    for kind in ("inline", "markdown"):
        shutil.rmtree(os.path.join(cache, "publisher", kind), ignore_errors=True)
    t0 = time.perf_counter()
    for digest in digests:
        render_newsletter(digest, cfg)
    runs.append(time.perf_counter() - t0)
shutil.rmtree(cache)
print(statistics.median(runs))
"""


@dataclass
class Side:
    """One thing measured: a revision (its Python and folder) or smtp-source."""

    label: str
    python: str = ""
    root: Path = ROOT
    seconds: list[float] = field(default_factory=list)
    # CPU seconds (user + system) of each timed command, where the bench reports it (deliver)
    cpu: list[float] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.seconds)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.setdefault("PUBLISHER_SECRET", "bench-secret-0123456789abcdefghij")
    return env


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by this process's ended children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(side: Side, *args: str) -> tuple[float, str, float]:
    """`side`'s Python with args, in `side`'s folder; (seconds, stdout, CPU seconds of that
    process). Stops the bench if it fails."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    out = subprocess.run(
        [side.python, *args], cwd=side.root, env=clean_env(), capture_output=True, text=True
    )
    elapsed, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if out.returncode != 0:
        fail(
            f"{side.label}: {' '.join(args[:4])} exited {out.returncode}:\n{out.stdout}{out.stderr}"
        )
    return elapsed, out.stdout, cpu


def check_imports_own_package(side: Side) -> None:
    """The side's `python -m publisher.cli` must run the side's own code, not the other's."""
    out = run(side, "-c", "import publisher; print(publisher.__file__)")[1]
    where = Path(out.strip()).resolve()
    if not where.is_relative_to(side.root.resolve()):
        fail(f"{side.label}: its Python imports publisher from {where}, not from {side.root}")


def precompile(side: Side) -> None:
    """Byte-compile the side's package, so that REV's fresh checkout does not pay for it in its
    first timed run while the tree's is compiled already."""
    run(side, "-m", "compileall", "-q", str(side.root / "publisher"))


def install(rev: str, folder: Path) -> Side:
    """REV in a detached worktree at `folder` with a venv of its own; its Side."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not sha:
        fail(f"{rev!r} is not a revision of {ROOT}")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(folder), sha],
        check=True,
    )
    print(f"installing {rev} ({sha[:10]}) into {folder} ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(folder / ".venv")], check=True)
    python = str(folder / ".venv" / "bin" / "python")
    # REV's own pins when it has them (requirements.lock, as its README installs it), so both
    # sides run the versions they were tested with; else the newest within its pyproject.
    lock = folder / "requirements.lock"
    steps = [["-r", str(lock)], ["--no-deps", "-e", str(folder)]] if lock.is_file() else []
    for step in steps or [["-e", str(folder)]]:
        pip = subprocess.run(
            [python, "-m", "pip", "install", "-q", *step],
            env=clean_env(),
            capture_output=True,
            text=True,
        )
        if pip.returncode != 0:
            fail(f"installing {rev} failed:\n{pip.stdout}{pip.stderr}")
    print(f"  with {'its requirements.lock' if steps else 'no lock file: newest versions'}")
    print(f"  installed in {time.perf_counter() - t0:.0f}s", flush=True)
    return Side(f"{rev} ({sha[:10]})", python, folder)


def remove(folder: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)],
        capture_output=True,
    )
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], capture_output=True)


class Deliver:
    """`publisher send` into smtp-sink; smtp-source as the reference."""

    unit = "msg/s"

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.n, self.c, self.tmp = args.subscribers, args.connections, tmp
        self.cache = args.cache
        self.source = bench_deliver.tool("smtp-source")
        self.port = bench_deliver.free_port()
        self.sink = bench_deliver.start_sink(self.port)
        self.cluster = bench_deliver.start_postgresql() if args.backend == "postgresql" else None
        message = bench_deliver.built_message(
            bench_deliver.make_project(tmp / "message", self.port, 1, self.c)
        )
        self.msg_file = tmp / "message.eml"
        # smtp-source wants plain newlines; it sends CRLF itself.
        self.msg_file.write_bytes(message.replace(b"\r\n", b"\n"))
        self.runs = 0
        where = (
            "SQLite" if self.cluster is None else bench_deliver.describe_postgresql(self.cluster)
        )
        self.describe = (
            f"deliver: {self.n} messages of {len(message)} bytes, {self.c} connections, {where}"
        )

    def reference(self) -> Side | None:
        return Side("smtp-source")

    def speed(self, seconds: float) -> float:
        return self.n / seconds

    def measure(self, side: Side) -> float:
        if side.label == "smtp-source":
            t0 = time.perf_counter()
            subprocess.run(
                [
                    *(self.source, "-d", "-s", str(self.c), "-m", str(self.n)),
                    *("-F", str(self.msg_file), "-f", "papers@localhost"),
                    *("-t", "reader@example.com", f"127.0.0.1:{self.port}"),
                ],
                check=True,
            )
            return time.perf_counter() - t0
        self.runs += 1
        folder = self.tmp / f"run{self.runs}"
        dbname = self.cluster.create_database() if self.cluster is not None else None
        database = self.cluster.url(dbname) if dbname else None
        cfg = bench_deliver.make_project(folder, self.port, self.n, self.c, database=database)
        # publisher's cache folder (publisher/caches.py), one per side, as --cache says.
        cache = self.tmp / f"cache-{side.root.name}"
        if self.cache == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        elif self.cache == "daily":
            bench_deliver.forget_edition(cache)
        os.environ["XDG_CACHE_HOME"] = str(cache)
        try:
            run(side, "-m", "publisher.cli", "subscribers", "import", "--config", str(cfg))
            cmd = ["-m", "publisher.cli", "send", "--config", str(cfg)]
            elapsed, out, cpu = run(side, *cmd, "--digest", str(bench_deliver.DIGEST))
            found = bench_deliver.SENT.search(out)
            if not found or int(found[1]) != self.n or found[2] != "0":
                fail(f"{side.label}: publisher send did not send {self.n}, nothing failed:\n{out}")
            side.cpu.append(cpu)
            return elapsed
        finally:
            if dbname:
                self.cluster.drop_database(dbname)
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self.sink.terminate()
        self.sink.wait()
        if self.cluster is not None:
            self.cluster.stop()


class Startup(Deliver):
    """`publisher send` to one reader: what a send costs besides its messages."""

    unit = "sends/s"
    TARGET = 0.3  # seconds (issue 25)
    REPEAT = 5

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        args.subscribers = 1
        super().__init__(args, tmp)
        self.describe = (
            f"startup: `publisher send` to 1 reader into smtp-sink, SQLite, whole command; "
            f"median of {self.REPEAT} per measurement"
        )

    def reference(self) -> Side | None:
        return None

    def measure(self, side: Side) -> float:
        runs, cpus = [], []
        for _ in range(self.REPEAT):
            runs.append(super().measure(side))
            cpus.append(side.cpu.pop())
        side.cpu.append(statistics.median(cpus))
        return statistics.median(runs)

    def verdicts(self, sides: list[Side]) -> list[str]:
        return [
            f"{side.label + ':':<26} start-up {side.median():.3f} s, target <= {self.TARGET} s "
            + ("PASS" if side.median() <= self.TARGET else "MISS")
            for side in sides
        ]


class Import:
    """`publisher subscribers import` of N new readers into a fresh SQLite file."""

    unit = "rows/s"

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.n, self.tmp, self.runs = args.subscribers, tmp, 0
        self.describe = f"import: `publisher subscribers import` of {self.n} new readers, SQLite"

    def reference(self) -> Side | None:
        return None

    def speed(self, seconds: float) -> float:
        return self.n / seconds

    def measure(self, side: Side) -> float:
        self.runs += 1
        folder = self.tmp / f"run{self.runs}"
        cfg = bench_deliver.make_project(folder, 25, self.n, 1)
        try:
            cmd = ["-m", "publisher.cli", "subscribers", "import", "--config", str(cfg)]
            return run(side, *cmd)[0]
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        pass


class Parse:
    """Parsing the corpus, in-process time."""

    unit = "corpora/s"

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        if not CORPUS.is_dir():
            fail(f"the corpus is not at {CORPUS}")
        self.describe = f"parse: every digest under {CORPUS}, median of 3 in one process"

    def reference(self) -> Side | None:
        return None

    def speed(self, seconds: float) -> float:
        return 1 / seconds

    def measure(self, side: Side) -> float:
        return float(run(side, "-c", PARSE, str(CORPUS))[1].strip())

    def close(self) -> None:
        pass


class Render:
    """The email of a few corpus digests, rendered afresh, in-process time."""

    unit = "renders/s"

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        if not CORPUS.is_dir():
            fail(f"the corpus is not at {CORPUS}")
        self.describe = (
            f"render: the email of {RENDER_DIGESTS} digests spread over {CORPUS}, "
            "nothing cached, median of 3 in one process"
        )

    def reference(self) -> Side | None:
        return None

    def speed(self, seconds: float) -> float:
        return RENDER_DIGESTS / seconds

    def measure(self, side: Side) -> float:
        return float(run(side, "-c", RENDER, str(CORPUS), str(RENDER_DIGESTS))[1].strip())

    def close(self) -> None:
        pass


class Build:
    """A full `publisher build` of the corpus, without the search index."""

    unit = "builds/s"

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        if not CORPUS.is_dir():
            fail(f"the corpus is not at {CORPUS}")
        self.tmp, self.runs = tmp, 0
        self.describe = f"build: full `publisher build` of {CORPUS}, no search index"

    def reference(self) -> Side | None:
        return None

    def speed(self, seconds: float) -> float:
        return 1 / seconds

    def measure(self, side: Side) -> float:
        self.runs += 1
        folder = self.tmp / f"build{self.runs}"
        folder.mkdir()
        cfg = folder / "config.toml"
        cfg.write_text(
            f'[digests]\ninbox = "{CORPUS}"\n[feed]\noutput = "public"\nsearch = false\n'
        )
        try:
            return run(side, "-m", "publisher.cli", "build", "--config", str(cfg))[0]
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        pass


BENCHES: dict[str, Callable[[argparse.Namespace, Path], Any]] = {
    "deliver": Deliver,
    "startup": Startup,
    "import": Import,
    "parse": Parse,
    "render": Render,
    "build": Build,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("rev", help="the revision to compare with (main, a tag, a commit)")
    ap.add_argument("--bench", choices=sorted(BENCHES), default="deliver")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=20_000, help="deliver and import")
    ap.add_argument("--connections", type=int, default=4, help="deliver")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument(
        "--threshold", type=float, default=0.05, help="how much slower the tree may be (0.05)"
    )
    ap.add_argument(
        "--cache",
        choices=("daily", "cold", "warm"),
        default="daily",
        help="deliver, startup: what each send finds in publisher's cache folder (see above)",
    )
    ap.add_argument("--keep", action="store_true", help="keep REV's worktree (path printed)")
    args = ap.parse_args()
    if args.rounds < 1 or args.subscribers < 1 or args.connections < 1:
        ap.error("--rounds, --subscribers and --connections must be at least 1")

    tree = Side("tree", sys.executable, ROOT)
    check_imports_own_package(tree)
    precompile(tree)
    tmp = Path(tempfile.mkdtemp(prefix="publisher-compare-"))
    worktree = tmp / "rev"
    bench = None
    try:
        rev = install(args.rev, worktree)
        check_imports_own_package(rev)
        precompile(rev)
        bench = BENCHES[args.bench](args, tmp)
        ref = bench.reference()
        order = [s for s in (ref, rev, tree) if s is not None]
        print(bench.describe)
        print(f"{args.rounds} round(s), order reversed every other round; {os.cpu_count()} cores")
        for r in range(args.rounds):
            for side in order if r % 2 == 0 else order[::-1]:
                seconds = bench.measure(side)
                side.seconds.append(seconds)
                cpu = f"  CPU {side.cpu[-1]:6.3f}s" if len(side.cpu) == len(side.seconds) else ""
                print(
                    f"  round {r + 1}: {side.label:<24} {seconds:7.3f}s "
                    f"{bench.speed(seconds):9.4g} {bench.unit}{cpu}",
                    flush=True,
                )
        print()
        for side in order:
            each = ", ".join(f"{bench.speed(s):.4g}" for s in side.seconds)
            print(
                f"{side.label + ':':<26} {bench.speed(side.median()):9.4g} {bench.unit}, "
                f"{side.median():.3f}s (median of {each})"
            )
        for line in bench.verdicts(order) if hasattr(bench, "verdicts") else []:
            print(line)
        for side in order:
            if side.cpu:
                # the whole command's CPU (start-up included) per message: the budget
                # is publisher CPU per message, which this bounds from above
                per = statistics.median(side.cpu) / bench.n * 1000
                print(f"{side.label + ':':<26} CPU {per:.3f} ms per message (median, start-up in)")
        # Speed of the tree / speed of REV, per round: both sides of a round ran back to back,
        # under the same load, so the median of these pairs is what decides; the ratio of the
        # two medians (of runs from different rounds) is printed too.
        paired = [r_s / t_s for r_s, t_s in zip(rev.seconds, tree.seconds, strict=True)]
        ratio = statistics.median(paired)
        print()
        if ref is not None:
            print(f"{rev.label} / {ref.label}: {ref.median() / rev.median():.2f}")
            print(f"tree / {ref.label}: {ref.median() / tree.median():.2f}")
        print(
            f"tree / {rev.label}: {ratio:.3f}, median of the rounds' ratios ("
            + ", ".join(f"{p:.3f}" for p in paired)
            + f"); ratio of the medians {rev.median() / tree.median():.3f}"
        )
        slower = ratio < 1 - args.threshold
        verdict = "SLOWER" if slower else "OK"
        print(f"{verdict}: the tree may be at most {args.threshold:.0%} slower than {args.rev}")
        code = 1 if slower else 0
    finally:
        if bench is not None:
            bench.close()
        if args.keep and worktree.exists():
            print(f"kept {args.rev}'s worktree: {worktree}")
        else:
            remove(worktree)
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
