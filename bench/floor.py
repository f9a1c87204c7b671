"""Where a message's CPU goes: the three steps every message takes, each measured alone, against
the whole `publisher send` that runs them, in one run on this machine.

    python bench/floor.py [--messages 20000] [--rounds 3]

Per message, in CPU microseconds (user + system, this process alone, one thread, medians of
--rounds; the sink and the database are other processes and not counted):

  build      MessageFactory.build: one reader's message from the edition's prepared parts
             (publisher/mailer.py);
  transport  SmtpTransport.send of an already built message over one pipelined connection into
             Postfix's smtp-sink (publisher/transport.py): smtplib, and the kernel's work of
             writing ~55 KB to a loopback socket, much of it;
  mark       SentRecorder.record of one row on a SQLite ledger of --messages rows
             (publisher/state/ledger.py): the UPDATE and its commit, what each message's
             final "." waits for; and, for comparison, per row in batches of 4;
  send       the whole command: `publisher send` to --messages readers on SQLite over 4
             connections into the same sink (a subprocess: start-up included, as the user pays
             it), its CPU divided by the messages.

The sum of the three steps is the floor of the present design: what a message costs with no
claims, no threads, no bookkeeping. The send's excess over it is what the pipeline around the
steps costs. bench/deliver.py's target for the whole is 0.15 ms a message. Needs
/usr/sbin/smtp-sink (Debian package postfix).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import deliver  # noqa: E402  (bench/deliver.py: the project, smtp-sink)

from tests.net import free_port  # noqa: E402

TARGET_US = 150.0


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_message(n: int, work: Callable[[], None]) -> float:
    """CPU microseconds per message of `work`, which handles n messages."""
    before = cpu()
    work()
    return (cpu() - before) / n * 1e6


def timed(n: int, setup: Callable[[], Callable[[], None]]) -> Callable[[], float]:
    """A step whose preparation (`setup`, returning the work) is not counted."""
    return lambda: per_message(n, setup())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n = args.messages

    from publisher.config import load_config
    from publisher.digest import parse_file
    from publisher.mailer import MessageFactory
    from publisher.newsletter import render_newsletter
    from publisher.state import Store
    from publisher.transport import make_transport_factory

    port = free_port()
    sink = deliver.start_sink(port)
    try:
        with tempfile.TemporaryDirectory(prefix="publisher-floor-") as tmp:
            # The send's project, its database kept as imported (`fresh`) for each round; and
            # one for the marks, whose editions are queued in it one after the other.
            cfg_path = deliver.make_project(Path(tmp) / "send", port, n, 4)
            deliver.import_subscribers(cfg_path)
            state = cfg_path.parent / "state"
            fresh = Path(tmp) / "state-as-imported"
            shutil.copytree(state, fresh)
            marks_cfg = deliver.make_project(Path(tmp) / "marks", port, n, 4)
            deliver.import_subscribers(marks_cfg)
            cfg = load_config(cfg_path)
            factory = MessageFactory(
                render_newsletter(parse_file(deliver.DIGEST), cfg),
                cfg,
                b"floor-bench-secret-floor-bench-secret",
            )
            message = factory.build("reader0@example.com", "Reader 0", 1)
            store = Store.open(load_config(marks_cfg))
            day = dt.date(2024, 5, 15)

            def build() -> None:
                for i in range(n):
                    factory.build(f"reader{i}@example.com", f"Reader {i}", i + 1)

            def transport() -> Callable[[], None]:
                smtp = make_transport_factory(cfg)()
                smtp.send("papers@localhost", "reader@example.com", message)  # connected

                def work() -> None:
                    for i in range(n):
                        following = f"reader{i + 1}@example.com" if i + 1 < n else None
                        smtp.send(
                            "papers@localhost",
                            f"reader{i}@example.com",
                            message,
                            next_recipient=following,
                            ready=lambda: None,
                        )
                    smtp.close()

                return work

            def marks(batch: int) -> Callable[[], Callable[[], None]]:
                def setup() -> Callable[[], None]:
                    # A fresh edition's rows each time: every mark moves a queued row to sent.
                    nonlocal day
                    day += dt.timedelta(days=1)
                    store.queue_pending(day)
                    ids = [e.id for e in store.pending_for(day, batch=n)]
                    recorder = store.sent_recorder(day)
                    reply = "250 2.0.0 Ok: queued as 4BC1D2E3F4"
                    batches = [
                        [(x, reply, 1) for x in ids[i : i + batch]] for i in range(0, n, batch)
                    ]

                    def work() -> None:
                        for rows in batches:
                            recorder.record(rows)
                        recorder.close()

                    return work

                return setup

            def send() -> None:
                shutil.rmtree(state)
                shutil.copytree(fresh, state)
                deliver.daily_cache(cfg_path)  # the day's first send of the edition
                done = subprocess.run(
                    deliver.publisher_cmd(cfg_path), capture_output=True, text=True, cwd=ROOT
                )
                found = deliver.SENT.search(done.stdout)
                if done.returncode != 0 or not found or int(found[1]) != n:
                    sys.exit(f"publisher send failed:\n{done.stdout}\n{done.stderr}")

            steps: dict[str, Callable[[], float]] = {
                "build": lambda: per_message(n, build),
                "transport": timed(n, transport),
                "mark, one row a commit": timed(n, marks(1)),
                "mark, 4 rows a commit (per row)": timed(n, marks(4)),
            }
            figures: dict[str, list[float]] = {name: [] for name in [*steps, "send"]}
            print(f"{n} messages of {len(message)} bytes, {args.rounds} round(s)", flush=True)
            for n_round in range(args.rounds):
                order = list(steps) if n_round % 2 == 0 else list(steps)[::-1]
                for name in order:
                    figures[name].append(steps[name]())
                before = deliver.children_cpu()
                t0 = time.perf_counter()
                send()
                figures["send"].append((deliver.children_cpu() - before) / n * 1e6)
                print(f"  round {n_round + 1}: send {time.perf_counter() - t0:.1f} s", flush=True)
            store.close()
    finally:
        sink.terminate()
        sink.wait()

    median = {name: statistics.median(values) for name, values in figures.items()}
    print("\nCPU per message, microseconds (medians):")
    for name, value in median.items():
        each = ", ".join(f"{v:.0f}" for v in figures[name])
        print(f"  {name + ':':<36} {value:6.1f}   ({each})")
    floor = median["build"] + median["transport"] + median["mark, one row a commit"]
    print(f"\nfloor (build + transport + one-row mark): {floor:6.1f} us")
    print(f"the whole send:                           {median['send']:6.1f} us")
    print(f"the pipeline around the steps:            {median['send'] - floor:6.1f} us")
    print(
        f"target for the whole send: <= {TARGET_US:.0f} us; the floor alone is "
        f"{floor / TARGET_US:.2f} of it"
    )


if __name__ == "__main__":
    main()
