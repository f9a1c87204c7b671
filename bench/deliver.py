"""Delivery speed against Postfix's smtp-sink, with smtp-source as the reference, on SQLite and
on PostgreSQL, by one `publisher send` and by several at once; memory at 1k and 100k subscribers.

    python bench/deliver.py [--subscribers 20000] [--connections 4]
                            [--backends sqlite,postgresql] [--workers 3] [--rounds 1]
                            [--memory-large 100000] [--skip-memory]

1. starts `smtp-sink` on a free loopback port and, for PostgreSQL, a throwaway cluster of its own
   (tests/pg.py's `Cluster(durable=True)`: on disk, fsync, synchronous_commit and
   full_page_writes on: PostgreSQL's defaults, as in production; printed with the results);
2. times `smtp-source` sending N copies of the very message publisher builds (same bytes, so
   same size) over the same number of parallel connections, each reused (-d);
3. for each backend, in a fresh project with a fresh database (the subscriber list imported
   first, untimed, as the previous day's send would have): times one `publisher send` (a
   subprocess, the real command) to the N subscribers, then with --workers W > 1 times W
   `publisher send` processes started together on one more fresh database, which split the
   send through the ledger's claims (wall time until the last one exits; each has
   --connections connections). Each must exit 0 with nothing failed, their counts adding up
   to exactly N;
4. prints one line per measurement (messages/s of the whole command) and the ratios:
     (a) PostgreSQL / SQLite, one process each                         target >= 0.8
     (b) W processes / one process, on PostgreSQL (the same N in all)  target >= 0.9
     (c) SQLite / smtp-source, one process                             target >= 1.0
         (about 1.05 at 20,000 before PostgreSQL support; the first target was 0.8)
   (W processes / one on SQLite is printed too, without a target: SQLite has one writer),
   and for each measurement the CPU per message of each program (medians): publisher (or
   smtp-source), the PostgreSQL server (its postmaster and every process it started:
   backends, WAL writer, checkpointer, autovacuum), and smtp-sink; their sum bounds the rate
   on this machine's cores however the work is spread (cores / total);
   With --rounds R every measurement is taken R times, interleaved, in the reverse order every
   other round (smtp-source first, then last), and the medians are used: the machine's noise
   then hits all of them alike. Only ratios from one run compare;
5. runs `publisher send` to 1,000 and to --memory-large subscribers in fresh SQLite projects and
   compares their peak RSS (resource.getrusage(RUSAGE_CHILDREN) in a wrapper process; target
   <= 1.2x). --skip-memory leaves this out.

--backends defaults to both when PostgreSQL's server binaries are installed (Debian: apt-get
install postgresql; tests/pg.py finds them), else to SQLite alone. `--backends sqlite --workers 1`
is the bench as it was before PostgreSQL: smtp-source against one SQLite send, line (c), then the
memory check. For a decision take --rounds 3 or more: on a busy machine one round's ratios vary
by 10% or more. Needs /usr/sbin/smtp-sink and /usr/sbin/smtp-source (Debian package postfix).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.net import free_port  # noqa: E402  (the tests' helper)

DIGEST = ROOT / "digests" / "2024" / "05" / "15.md"
SBIN = ("/usr/sbin", "/usr/local/sbin")

# signs unsubscribe links; at least 32 bytes (publisher/tokens.py)
os.environ.setdefault("PUBLISHER_SECRET", "Ufd2xj9Qe7mWcL4tZr0NbK8sHaY3vGp1oE6iTqJ5nRw")


def tool(name: str) -> str:
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None
    )
    if not found:
        sys.exit(
            f"{name} not found. It ships with Postfix; on Debian/Ubuntu install it with:\n"
            "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive "
            "apt-get install -y postfix\n"
            "(the postfix service need not run: the bench uses only smtp-sink and smtp-source)"
        )
    return found


def start_sink(port: int) -> subprocess.Popen[bytes]:
    cmd = [tool("smtp-sink")]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # smtp-sink refuses to run as root otherwise
    cmd += [f"127.0.0.1:{port}", "1024"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit(f"smtp-sink did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


def make_project(
    folder: Path, port: int, n: int, connections: int, database: str | None = None
) -> Path:
    """A project sending to n subscribers; on `database` (a URL) or a new SQLite file in it."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "config.toml"
    cfg.write_text(
        "[smtp]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        'security = "none"\n'
        f"connections = {connections}\n"
        "messages_per_connection = 1000\n"
        "[subscribers]\n"
        'file = "subscribers.csv"\n'
        "[digests]\n"
        f'inbox = "{DIGEST.parent}"\n' + (f'[state]\ndatabase = "{database}"\n' if database else "")
    )
    with (folder / "subscribers.csv").open("w") as fh:
        fh.write("email,name\n")
        for i in range(n):
            fh.write(f"reader{i}@example.com,Reader {i}\n")
    return cfg


def built_message(cfg_path: Path, digest: Path = DIGEST) -> bytes:
    """The message publisher builds of `digest` for one reader (CRLF), for smtp-source."""
    sys.path.insert(0, str(ROOT))
    from publisher.config import load_config
    from publisher.digest import parse_file
    from publisher.mailer import MessageFactory
    from publisher.newsletter import render_newsletter

    cfg = load_config(cfg_path)
    newsletter = render_newsletter(parse_file(digest), cfg)
    return MessageFactory(newsletter, cfg, b"bench-secret").build("reader0@example.com", "Reader 0")


def write_for_source(message: bytes, path: Path) -> Path:
    """`message` as smtp-source's -F file wants it: plain newlines (it sends CRLF itself)."""
    path.write_bytes(message.replace(b"\r\n", b"\n"))
    return path


def smtp_source(port: int, n: int, connections: int, msg_file: Path) -> float:
    """Postfix's smtp-source sending `n` copies of `msg_file` over `connections` parallel
    connections, each reused (-d), into the sink on `port`: its wall time. The reference for
    any sender on this machine: a C program that does nothing but SMTP."""
    t0 = time.perf_counter()
    subprocess.run(
        [
            *(tool("smtp-source"), "-d", "-s", str(connections), "-m", str(n)),
            *("-F", str(msg_file), "-f", "papers@localhost"),
            *("-t", "reader@example.com", f"127.0.0.1:{port}"),
        ],
        check=True,
    )
    return time.perf_counter() - t0


def publisher_cmd(cfg: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "publisher.cli",
        "send",
        "--config",
        str(cfg),
        "--digest",
        str(DIGEST),
    ]


def import_subscribers(cfg: Path) -> None:
    """Import the list first, as the previous day's send would have: the timed send then finds
    the CSV unchanged, like every steady-state daily send."""
    subprocess.run(
        [sys.executable, "-m", "publisher.cli", "subscribers", "import", "--config", str(cfg)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )


SENT = re.compile(r": (\d+) sent, (\d+) failed")


def daily_cache(cfg: Path) -> None:
    """publisher's cache folder (publisher/caches.py) as the day's first send of a new edition
    finds it (`forget_edition`). One folder beside the bench's projects, not the user's
    ~/.cache."""
    cache = cfg.parent.parent / "publisher-cache"
    forget_edition(cache)
    os.environ["XDG_CACHE_HOME"] = str(cache)


def forget_edition(cache: Path) -> None:
    """Leave in the cache folder `cache` (an XDG_CACHE_HOME) what the day's first send of a new
    edition finds there: the compiled templates and the secret's strength of earlier sends,
    not this edition's CSS inlining nor its rendered Markdown."""
    for kind in ("inline", "markdown"):
        shutil.rmtree(cache / "publisher" / kind, ignore_errors=True)


def run_publishers(cfg: Path, processes: int, n: int) -> tuple[float, str]:
    """Start `processes` `publisher send` at once; the wall time until the last one exits, and
    the sent counts. Exits unless all succeed and they sent exactly n between them."""
    daily_cache(cfg)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            publisher_cmd(cfg),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    outputs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - t0
    counts = []
    for p, (out, err) in zip(procs, outputs, strict=True):
        found = SENT.search(out)
        if p.returncode != 0 or not found or found[2] != "0":
            sys.exit(f"publisher send failed (exit {p.returncode}):\n{out}\n{err}")
        counts.append(int(found[1]))
    if sum(counts) != n:
        sys.exit(f"{processes} senders sent {counts} = {sum(counts)} messages, not {n}")
    return elapsed, "+".join(map(str, counts))


def peak_rss_kib(cfg: Path) -> int:
    """Peak RSS of one `publisher send`, measured by a wrapper whose only child it is."""
    daily_cache(cfg)
    wrapper = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
        "assert r.returncode == 0, r.stderr.decode()\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, *publisher_cmd(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return int(out.stdout.strip())


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_times(pid: int) -> list[int]:
    """utime, stime, cutime, cstime of a live process, in clock ticks (proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return [int(x) for x in fields[11:15]]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far (smtp-sink)."""
    utime, stime, _, _ = _proc_times(pid)
    return (utime + stime) / _TICK


def server_cpu(cluster: Any) -> float:
    """CPU seconds used so far by a PostgreSQL server: its postmaster, the backends that have
    ended (reaped by it, so in its children's times), and the processes it runs now."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = sum(_proc_times(postmaster))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def children_cpu() -> float:
    """CPU seconds (user + system) used by this process's ended children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_postgresql() -> Any:
    """A throwaway PostgreSQL cluster with production durability (tests/pg.py)."""
    sys.path.insert(0, str(ROOT))
    from tests.pg import Cluster, ClusterError, find_bindir

    bindir = find_bindir()
    if bindir is None:
        sys.exit(
            "PostgreSQL server binaries not found (initdb, pg_ctl, postgres); on Debian:\n"
            "  apt-get install postgresql   (or leave it out: --backends sqlite)"
        )
    cluster = Cluster(bindir, durable=True)
    try:
        cluster.start()
    except ClusterError as exc:
        cluster.stop()
        sys.exit(f"PostgreSQL did not start: {exc}")
    return cluster


def describe_postgresql(cluster: Any) -> str:
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=cluster.user, dbname="postgres"
    ) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        shown = ", ".join(
            f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
            for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
        )
    return (
        f"PostgreSQL {version}, throwaway cluster on disk in {cluster.root}: {shown} "
        "(publisher's own connection for sent marks sets synchronous_commit=off)"
    )


@dataclass
class Measurement:
    label: str
    backend: str  # "sqlite", "postgresql" or "" (smtp-source)
    processes: int
    seconds: list[float] = field(default_factory=list)
    # CPU seconds per run: the sender(s) (publisher or smtp-source), PostgreSQL, smtp-sink
    cpu: list[tuple[float, float, float]] = field(default_factory=list)

    def rate(self, n: int) -> float:
        return n / statistics.median(self.seconds)


def verdict(name: str, value: float, target: float, note: str = "") -> str:
    mark = "PASS" if value >= target else "MISS"
    return f"{name:<44} {value:5.2f}  (target >= {target}{note}) {mark}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=20_000)
    ap.add_argument("--connections", type=int, default=4, help="per `publisher send` process")
    ap.add_argument(
        "--backends",
        default=None,
        help="comma-separated: sqlite, postgresql (default: both if PostgreSQL is installed)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=3,
        help="`publisher send` processes started together, per backend (1: one process only)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="repeat and take medians")
    ap.add_argument("--memory-small", type=int, default=1_000)
    ap.add_argument("--memory-large", type=int, default=100_000)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    if args.backends is None:
        sys.path.insert(0, str(ROOT))
        from tests.pg import find_bindir

        args.backends = "sqlite,postgresql" if find_bindir() else "sqlite"
        if args.backends == "sqlite":
            print("PostgreSQL is not installed: SQLite only (apt-get install postgresql)")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"sqlite", "postgresql"}:
        ap.error("--backends: a comma-separated list of sqlite, postgresql")
    tool("smtp-source")  # before anything starts: the message says how to install it
    n, c = args.subscribers, args.connections
    port = free_port()
    sink = start_sink(port)
    cluster = start_postgresql() if "postgresql" in backends else None
    try:
        with tempfile.TemporaryDirectory(prefix="publisher-bench-") as tmp:
            tmp_path = Path(tmp)
            message = built_message(make_project(tmp_path / "message", port, 1, c))
            msg_file = write_for_source(message, tmp_path / "message.eml")
            print(
                f"{n} messages of {len(message)} bytes, {c} connections per process, "
                f"{args.rounds} round(s), whole commands timed"
            )
            if cluster is not None:
                print(describe_postgresql(cluster))

            source_m = Measurement("smtp-source", "", 1)
            measurements = [source_m]
            for backend in backends:
                for procs in dict.fromkeys((1, max(args.workers, 1))):
                    noun = "process" if procs == 1 else "processes started together"
                    label = f"publisher send, {backend}, {procs} {noun}"
                    measurements.append(Measurement(label, backend, procs))

            def pg_cpu() -> float:
                return server_cpu(cluster) if cluster is not None else 0.0

            def cpu_since(before: tuple[float, float, float]) -> tuple[float, float, float]:
                now = (children_cpu(), pg_cpu(), process_cpu(sink.pid))
                return (now[0] - before[0], now[1] - before[1], now[2] - before[2])

            runs = 0
            for n_round in range(args.rounds):
                # The order reversed every other round (as bench/compare.py does), so a drift in
                # the machine's load does not always fall on the same measurement.
                for m in measurements if n_round % 2 == 0 else measurements[::-1]:
                    before = (children_cpu(), pg_cpu(), process_cpu(sink.pid))
                    if not m.backend:
                        m.seconds.append(smtp_source(port, n, c, msg_file))
                        m.cpu.append(cpu_since(before))
                        continue
                    runs += 1
                    folder = tmp_path / f"run{runs}"
                    dbname = cluster.create_database() if m.backend == "postgresql" else None
                    database = cluster.url(dbname) if dbname else None
                    cfg = make_project(folder, port, n, c, database=database)
                    import_subscribers(cfg)
                    before = (children_cpu(), pg_cpu(), process_cpu(sink.pid))
                    elapsed, counts = run_publishers(cfg, m.processes, n)
                    m.seconds.append(elapsed)
                    m.cpu.append(cpu_since(before))
                    print(f"  {m.label}: {elapsed:.2f}s, sent {counts}", flush=True)
                    if dbname:
                        cluster.drop_database(dbname)
                    shutil.rmtree(folder, ignore_errors=True)

            print()
            for m in measurements:
                each = ", ".join(f"{n / s:.0f}" for s in m.seconds)
                more = f" (median of {each})" if len(m.seconds) > 1 else ""
                print(f"{m.label + ':':<58} {m.rate(n):6.0f} msg/s{more}")
            cores = os.cpu_count() or 1
            print(f"\nCPU per message, ms (medians; {cores} cores: the total caps the rate at")
            print("cores / total, however the work is spread):")
            for m in measurements:
                sender, server, sink_ms = (
                    statistics.median(run[i] for run in m.cpu) / n * 1000 for i in range(3)
                )
                total = sender + server + sink_ms
                who = "smtp-source" if not m.backend else "publisher"
                print(
                    f"  {m.label + ':':<56} {who} {sender:.3f}, postgresql {server:.3f}, "
                    f"smtp-sink {sink_ms:.3f}, total {total:.3f} "
                    f"(cap {cores / total * 1000:,.0f} msg/s)"
                )

            def rate(backend: str, procs: int) -> float | None:
                for m in measurements:
                    if m.backend == backend and m.processes == procs:
                        return m.rate(n)
                return None

            ref = source_m.rate(n)
            workers = max(args.workers, 1)
            sqlite1, pg1 = rate("sqlite", 1), rate("postgresql", 1)
            sqlite_w, pg_w = rate("sqlite", workers), rate("postgresql", workers)
            print()
            if sqlite1 and pg1:
                print(verdict("(a) postgresql / sqlite, 1 process each:", pg1 / sqlite1, 0.8))
            if pg1 and pg_w and workers > 1:
                name = f"(b) postgresql, {workers} processes / 1 process:"
                print(verdict(name, pg_w / pg1, 0.9))
            if sqlite1:
                note = "; about 1.05 before"
                print(verdict("(c) sqlite / smtp-source, 1 process:", sqlite1 / ref, 1.0, note))
            if pg1:
                print(f"{'    postgresql / smtp-source, 1 process:':<44} {pg1 / ref:5.2f}")
            if sqlite1 and sqlite_w and workers > 1:
                name = f"    sqlite, {workers} processes / 1 process:"
                print(f"{name:<44} {sqlite_w / sqlite1:5.2f}  (no target: one writer)")

            if not args.skip_memory:
                small = make_project(tmp_path / "small", port, args.memory_small, c)
                large = make_project(tmp_path / "large", port, args.memory_large, c)
                rss_small = peak_rss_kib(small)
                rss_large = peak_rss_kib(large)
                print(
                    f"peak RSS: {args.memory_small} subscribers {rss_small / 1024:.1f} MiB, "
                    f"{args.memory_large} subscribers {rss_large / 1024:.1f} MiB, "
                    f"ratio {rss_large / rss_small:.2f} (target <= 1.2)"
                )
    finally:
        sink.terminate()
        sink.wait()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
