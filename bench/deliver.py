"""Delivery speed and memory against Postfix's smtp-sink, with smtp-source as the reference.

    python bench/deliver.py [--subscribers 10000] [--connections 4] [--memory-large 100000]

1. starts `smtp-sink` on a free loopback port;
2. times `smtp-source` sending N copies of the very message publisher builds (same bytes, so
   same size) over the same number of parallel connections, each reused (-d);
3. times `publisher send` (a subprocess, the real command) to N subscribers over SMTP;
4. prints both rates and publisher / smtp-source (target >= 0.8 at 4 connections);
5. runs `publisher send` to 1,000 and to --memory-large subscribers in fresh projects and compares
   their peak RSS (resource.getrusage(RUSAGE_CHILDREN) in a wrapper process; target <= 1.2x).

Needs /usr/sbin/smtp-sink and /usr/sbin/smtp-source (Debian package postfix).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIGEST = ROOT / "digests" / "2024" / "05" / "15.md"
SBIN = ("/usr/sbin", "/usr/local/sbin")

os.environ.setdefault("PUBLISHER_SECRET", "bench-secret")  # signs unsubscribe links


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def make_project(folder: Path, port: int, n: int, connections: int) -> Path:
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
        f'inbox = "{DIGEST.parent}"\n'
    )
    with (folder / "subscribers.csv").open("w") as fh:
        fh.write("email,name\n")
        for i in range(n):
            fh.write(f"reader{i}@example.com,Reader {i}\n")
    return cfg


def built_message(cfg_path: Path) -> bytes:
    sys.path.insert(0, str(ROOT))
    from publisher.config import load_config
    from publisher.digest import parse_file
    from publisher.mailer import MessageFactory
    from publisher.newsletter import render_newsletter

    cfg = load_config(cfg_path)
    newsletter = render_newsletter(parse_file(DIGEST), cfg)
    return MessageFactory(newsletter, cfg, b"bench-secret").build("reader0@example.com", "Reader 0")


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


def run_publisher(cfg: Path) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(publisher_cmd(cfg), capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"publisher send failed:\n{res.stdout}\n{res.stderr}")
    print(f"  {res.stdout.strip()}")
    return elapsed


def peak_rss_kib(cfg: Path) -> int:
    """Peak RSS of one `publisher send`, measured by a wrapper whose only child it is."""
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--subscribers", type=int, default=10_000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--memory-small", type=int, default=1_000)
    ap.add_argument("--memory-large", type=int, default=100_000)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    source = tool("smtp-source")
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="publisher-bench-") as tmp:
            tmp_path = Path(tmp)
            n, c = args.subscribers, args.connections
            cfg = make_project(tmp_path / "speed", port, n, c)
            message = built_message(cfg)
            msg_file = tmp_path / "message.eml"
            # smtp-source wants the file with plain newlines; it sends CRLF itself.
            msg_file.write_bytes(message.replace(b"\r\n", b"\n"))
            print(f"{n} messages of {len(message)} bytes over {c} connections")

            t0 = time.perf_counter()
            subprocess.run(
                [
                    source,
                    "-d",
                    "-s",
                    str(c),
                    "-m",
                    str(n),
                    "-F",
                    str(msg_file),
                    "-f",
                    "papers@localhost",
                    "-t",
                    "reader@example.com",
                    f"127.0.0.1:{port}",
                ],
                check=True,
            )
            ref = n / (time.perf_counter() - t0)
            print(f"smtp-source:     {ref:8.0f} msg/s")

            # Import the list first, as the previous day's send would have: the timed send
            # then finds the CSV unchanged, like every steady-state daily send.
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "publisher.cli",
                    "subscribers",
                    "import",
                    "--config",
                    str(cfg),
                ],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            elapsed = run_publisher(cfg)
            ours = n / elapsed
            print(f"publisher send:  {ours:8.0f} msg/s (whole command, {elapsed:.2f}s)")
            print(f"ratio publisher/smtp-source: {ours / ref:.2f} (target >= 0.8)")

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


if __name__ == "__main__":
    main()
