"""A million readers: the list, the status, the web side and the send at scale, on PostgreSQL.

    python bench/scale.py [--large] [--send] [--readers N] [--digests 5] [--skip-memory]

Runs at 100,000 readers (1,000,000 with --large; --readers sets any N) on a throwaway
PostgreSQL cluster on disk with production durability (fsync and synchronous_commit on:
tests/pg.py's `Cluster(durable=True)`, as bench/deliver.py), and prints each figure against its
target (targets are for 1M readers on a 2-core machine and scale linearly with N where the work
does):

  1. `publisher subscribers import` of a new N-row CSV                 <= 60 s at 1M
  2. the same command again on the unchanged file (a forced sync)     <= 30 s at 1M
  3. `publisher status`, whole command, with a ledger of --digests sent digests of N
     readers each                                                     <= 1 s
  4. `GET /metrics` and a reader's preferences page from `publisher serve` over HTTP
     (the first request, and the median of three more)                <= 1 s each
  5. peak RSS of one `publisher send` to 1,000 readers and to N readers into Postfix's
     smtp-sink (each on its own database)                             ratio <= 1.2
  6. with --send: 4 `publisher send` processes started together to N readers (another
     digest), each reader exactly once                                 <= 4 min at 1M
     and, before and after it, Postfix's smtp-source sending N copies of the same message over
     as many connections into the same sink: what this machine allows any sender. When the
     faster of the two misses the target too, no sender can meet it here (the line says so).

Needs PostgreSQL's server binaries (Debian: postgresql) and /usr/sbin/smtp-sink (postfix).
Speed claims come from here, never from timed tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import deliver  # noqa: E402  (bench/deliver.py: the project, smtp-sink, the cluster)

from tests.net import free_port  # noqa: E402

OTHER_DIGEST = ROOT / "digests" / "2024" / "10" / "18.md"
MILLION = 1_000_000


def cli(cfg: Path, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """`publisher ARGS --config cfg`, timed whole; (seconds, stdout)."""
    cmd = [sys.executable, "-m", "publisher.cli", *args, "--config", str(cfg)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if out.returncode not in ok:
        sys.exit(f"{' '.join(args)} exited {out.returncode}:\n{out.stdout}{out.stderr}")
    return elapsed, out.stdout


def line(name: str, value: float, unit: str, target: float, note: str = "") -> None:
    mark = "PASS" if value <= target else "MISS"
    print(f"{name:<52} {value:8.2f} {unit:<3} (target <= {target:g}{note}) {mark}", flush=True)


def fill_ledger(cluster: Any, dbname: str, digests: int) -> int:
    """`digests` sent digests (2024-04-01 on) of every reader, with their publications: the
    history `status`, /metrics and the preferences page read. Returns the ledger's row count."""
    import datetime as dt

    from publisher.state import Store

    with Store(cluster.url(dbname)) as store:  # the months' partitions, as a send makes them
        for n in range(digests):
            store.ensure_ledger_partition(dt.date(2024, 4, 1) + dt.timedelta(days=n))
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=cluster.user, dbname=dbname
    ) as conn:
        days = "generate_series('2024-04-01'::date, '2024-04-01'::date + %s, '1 day')"
        conn.execute(
            "INSERT INTO ledger (edition, digest_date, subscriber_id, status, attempts,"
            " final, last_reply, updated_at, topics, max_papers)"
            " SELECT 'daily', d::date, s.id, 'sent', 1, false, '250 2.0.0 Ok',"
            f" d + interval '7 hours', '', 0 FROM subscribers s, {days} d",
            (digests - 1,),
        )
        conn.execute(
            "INSERT INTO publications (edition, digest_date, source, content_hash, email_status,"
            " sent, failed, email_retries, created_at, updated_at, email_started_at,"
            " email_finished_at)"
            " SELECT 'daily', d::date, 'bench', 'bench', 'sent',"
            " (SELECT count(*) FROM subscribers), 0, 0, d, d, d + interval '6 hours',"
            f" d + interval '7 hours' FROM {days} d",
            (digests - 1,),
        )
        conn.execute("ANALYZE")
        return conn.execute("SELECT count(*) FROM ledger").fetchone()[0]


def http_get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        resp.read()
        assert resp.status == 200, resp.status
    return time.perf_counter() - t0


def serve_figures(cfg: Path, dbname: str, cluster: Any) -> None:
    """`publisher serve` on a free port: /metrics and a preferences page, timed over HTTP."""
    from publisher.tokens import Signer

    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=cluster.user, dbname=dbname
    ) as conn:
        sub_id = conn.execute("SELECT max(id) / 2 FROM subscribers").fetchone()[0]
    token = Signer(os.environ["PUBLISHER_SECRET"].encode(), "unsubscribe").sign_id(sub_id)
    port = free_port()
    cmd = [sys.executable, "-m", "publisher.cli", "serve", "--config", str(cfg)]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "healthz", timeout=5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    sys.exit(f"publisher serve exited: {proc.stderr.read().decode()}")
                time.sleep(0.1)
        for name, url in (
            ("GET /metrics", base + "metrics"),
            ("GET /preferences/TOKEN", base + f"preferences/{token}"),
        ):
            first = http_get(url)
            median = statistics.median(http_get(url) for _ in range(3))
            line(f"{name} (first)", first, "s", 1)
            line(f"{name} (median of 3 more)", median, "s", 1)
    finally:
        proc.terminate()
        proc.wait(30)


def memory_figures(
    cluster: Any, tmp: Path, sink_port: int, cfg: Path, n: int, connections: int
) -> None:
    """Peak RSS of one `publisher send` to 1,000 readers (a database of its own) and to the N
    of `cfg`, into smtp-sink."""
    small_db = cluster.create_database()
    small = deliver.make_project(
        tmp / "small", sink_port, 1000, connections, database=cluster.url(small_db)
    )
    cli(small, "subscribers", "import")
    rss_small = deliver.peak_rss_kib(small)
    t0 = time.perf_counter()
    rss_large = deliver.peak_rss_kib(cfg)
    took = time.perf_counter() - t0
    print(
        f"peak RSS of publisher send: 1000 readers {rss_small / 1024:.1f} MiB, "
        f"{n} readers {rss_large / 1024:.1f} MiB (that send took {took:.0f} s)"
    )
    line("peak RSS ratio, N readers / 1000 readers", rss_large / rss_small, "x", 1.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--large", action="store_true", help="1,000,000 readers")
    ap.add_argument("--send", action="store_true", help="also the 4-process send (with --large)")
    ap.add_argument("--readers", type=int, default=None, help="N (default 100,000; 1M --large)")
    ap.add_argument("--digests", type=int, default=5, help="sent digests in the ledger")
    ap.add_argument("--connections", type=int, default=4, help="per `publisher send`")
    ap.add_argument("--skip-memory", action="store_true", help="no 1k and N-reader sends")
    args = ap.parse_args()
    n = args.readers or (MILLION if args.large else 100_000)
    scale = n / MILLION
    sink_port = free_port()
    sink = deliver.start_sink(sink_port)
    cluster = deliver.start_postgresql()
    try:
        with tempfile.TemporaryDirectory(prefix="publisher-scale-") as tmp:
            now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            print(f"{n} readers, {os.cpu_count()} cores, {now}")
            print(deliver.describe_postgresql(cluster), flush=True)
            dbname = cluster.create_database()
            folder = Path(tmp) / "big"
            cfg = deliver.make_project(
                folder, sink_port, n, args.connections, database=cluster.url(dbname)
            )

            seconds, out = cli(cfg, "subscribers", "import")
            assert f"{n} added" in out, out
            line(f"subscribers import, {n} new rows", seconds, "s", 60 * scale)
            seconds, out = cli(cfg, "subscribers", "import")
            assert "0 added, 0 reactivated" in out and "0 removed" in out, out
            line(f"subscribers import, unchanged {n}-row file", seconds, "s", 30 * scale)

            rows = fill_ledger(cluster, dbname, args.digests)
            print(f"ledger: {rows} rows ({args.digests} digests of {n} readers)", flush=True)
            seconds, _ = cli(cfg, "status", ok=(0, 1, 2))
            line("publisher status", seconds, "s", 1)
            serve_figures(cfg, dbname, cluster)

            if not args.skip_memory:
                memory_figures(cluster, Path(tmp), sink_port, cfg, n, args.connections)

            if args.send:
                streams = 4 * args.connections
                msg_file = deliver.write_for_source(
                    deliver.built_message(cfg, OTHER_DIGEST), Path(tmp) / "message.eml"
                )
                reference = [deliver.smtp_source(sink_port, n, streams, msg_file)]
                cmd = [sys.executable, "-m", "publisher.cli", "send", "--config", str(cfg)]
                cmd += ["--digest", str(OTHER_DIGEST)]
                t0 = time.perf_counter()
                procs = [
                    subprocess.Popen(
                        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    )
                    for _ in range(4)
                ]
                both = [p.communicate() for p in procs]  # stderr: the progress lines
                seconds = time.perf_counter() - t0
                outs = [out for out, _ in both]
                counts = [deliver.SENT.search(o) for o in outs]
                if any(p.returncode for p in procs) or not all(counts):
                    sys.exit("a sender failed:\n" + "\n".join(o + e[-2000:] for o, e in both))
                sent = sum(int(c[1]) for c in counts if c)
                with psycopg.connect(
                    host="127.0.0.1", port=cluster.port, user=cluster.user, dbname=dbname
                ) as conn:
                    once = conn.execute(
                        "SELECT count(*), count(DISTINCT subscriber_id) FROM ledger"
                        " WHERE digest_date = '2024-10-18' AND status = 'sent'"
                    ).fetchone()
                print(f"4 senders sent {sent}; ledger: {once[0]} sent rows, {once[1]} readers")
                if sent != n or once != (n, n):
                    print("MISS: not every reader exactly once")
                reference.append(deliver.smtp_source(sink_port, n, streams, msg_file))
                line(f"send to {n} readers, 4 processes", seconds, "s", 240 * scale)
                best = min(reference)
                line(
                    f"smtp-source, {n} messages, {streams} connections",
                    best,
                    "s",
                    240 * scale,
                    f"; the faster of {reference[0]:.1f} and {reference[1]:.1f} s",
                )
                print(
                    f"publisher / smtp-source: {best / seconds:.2f} "
                    f"({n / seconds:,.0f} against {n / best:,.0f} msg/s)"
                    + (
                        "; smtp-source misses the send's target too: no sender meets it here"
                        if best > 240 * scale
                        else ""
                    ),
                    flush=True,
                )
    finally:
        sink.terminate()
        sink.wait()
        cluster.stop()


if __name__ == "__main__":
    main()
