"""`publisher run` as a user runs it: a real subprocess, a real SMTP server on loopback, a
temporary inbox. The schedule fires quickly through configuration (send on arrival, a short poll
interval), never by sleeping through real minutes."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import feedparser
import pytest

from publisher.config import Config, load_config
from publisher.state import Store

from .pg import state_toml
from .sitehelpers import digest_text, write_digest
from .smtp_server import Recorder, start_server

TZ = ZoneInfo("Asia/Seoul")
SECRET = "s6UPkEgRXJs0iSHglZWm5dUbYXmXmkqgghcOCJ4P5OI"


def today() -> dt.date:
    return dt.datetime.now(TZ).date()


def project(
    tmp: Path,
    port: int,
    db_url: str,
    subscribers: int = 3,
    connections: int = 2,
    *,
    timeout: float = 5.0,
    schedule: str = "",
) -> Config:
    """A project folder: inbox, subscribers, config.toml on the state database `db_url`."""
    (tmp / "inbox").mkdir()
    (tmp / "subs.csv").write_text(
        "email,name\n" + "".join(f"r{i}@example.com,Reader {i}\n" for i in range(subscribers))
    )
    (tmp / "config.toml").write_text(
        f"""
[site]
base_url = "https://papers.example.org/"
timezone = "Asia/Seoul"
[digests]
inbox = "inbox"
[feed]
output = "public"
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
connections = {connections}
retry_base_seconds = 0.01
max_attempts = 3
timeout = {timeout}
[subscribers]
file = "subs.csv"
[schedule]
poll_seconds = 0.2
send_on_arrival = true
max_age_days = 2
{schedule}
"""
        + state_toml(db_url),
        encoding="utf-8",
    )
    return load_config(tmp / "config.toml")


class Run:
    """A `publisher run` subprocess whose log is collected in a file."""

    def __init__(self, cfg: Config) -> None:
        self.log = cfg.root / f"run-{time.monotonic_ns()}.log"
        self.fh = self.log.open("wb")
        env = {**os.environ, "PUBLISHER_SECRET": SECRET}
        cmd = [sys.executable, "-m", "publisher.cli", "run", "--config", str(cfg.path)]
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, what: str, cond: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"publisher run exited while waiting for {what}:\n{self.text()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.text()}")
            time.sleep(0.05)

    def ticks(self, cfg: Config) -> str | None:
        with Store.open(cfg) as store:
            return store.get_meta("run:last_tick")

    def wait_for_a_tick_after(self, cfg: Config, moment: dt.datetime) -> None:
        """Until a tick that started after `moment` has finished, sends and all: `run:last_tick`
        is written at the end of a tick with the time it started, in whole seconds, so a value
        after `moment` is a tick that started after it."""

        def done() -> bool:
            last = self.ticks(cfg)
            return last is not None and dt.datetime.fromisoformat(last) > moment

        self.wait_for(f"a tick that started after {moment:%H:%M:%S.%f}", done)

    def terminate(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.fh.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.fh.close()


@pytest.fixture
def server() -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    controller = start_server(recorder)
    try:
        yield recorder, controller.port
    finally:
        controller.stop()


def total(recorder: Recorder) -> int:
    return sum(recorder.received().values())


def test_new_digest_is_published_once_and_not_again_after_restart(
    tmp_path: Path, server: tuple[Recorder, int], db_url: str
) -> None:
    recorder, port = server
    cfg = project(tmp_path, port, db_url)
    run = Run(cfg)
    try:
        run.wait_for("the first tick", lambda: run.ticks(cfg) is not None)
        write_digest(cfg.digests.inbox, today(), digest_text(today(), n=3))
        run.wait_for("3 emails", lambda: total(recorder) == 3)
        feed = feedparser.parse(str(cfg.feed.output / "feed.xml"))
        assert feed.bozo == 0 and len(feed.entries) == 1
        assert today().isoformat() in feed.entries[0].title
        assert (cfg.feed.output / f"{today():%Y/%m/%d}" / "index.html").is_file()
        msg = email.message_from_bytes(recorder.messages[0][1], policy=email.policy.default)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert today().isoformat() in msg["Subject"]
    finally:
        assert run.terminate() == 0
    assert sorted(recorder.received()) == [f"r{i}@example.com" for i in range(3)]

    # A restart sees the same digest, published: it sends nothing again.
    restarted = dt.datetime.now(dt.UTC)
    first_tick = Run(cfg)
    try:
        first_tick.wait_for_a_tick_after(cfg, restarted)
    finally:
        assert first_tick.terminate() == 0
    assert total(recorder) == 3

    # An edit after the email went out updates the feed entry only.
    path = write_digest(cfg.digests.inbox, today(), digest_text(today(), n=4))
    os.utime(path, (time.time() + 5, time.time() + 5))
    edit = Run(cfg)
    try:
        edit.wait_for(
            "the feed to show the edit",
            lambda: "changed: feed entry and page updated" in edit.text(),
        )
        edit.wait_for_a_tick_after(cfg, dt.datetime.now(dt.UTC))  # would it send again?
    finally:
        assert edit.terminate() == 0
    assert total(recorder) == 3
    atom = feedparser.parse(str(cfg.feed.output / "atom.xml"))
    assert atom.bozo == 0 and len(atom.entries) == 1
    assert atom.entries[0].updated_parsed > atom.entries[0].published_parsed


def test_malformed_digest_is_reported_and_the_next_good_one_still_goes_out(
    tmp_path: Path, server: tuple[Recorder, int], db_url: str
) -> None:
    recorder, port = server
    cfg = project(tmp_path, port, db_url, subscribers=2)
    bad = cfg.digests.inbox / "notes.md"
    bad.write_text("# not a digest\n\njust notes\n", encoding="utf-8")
    old = today() - dt.timedelta(days=30)
    write_digest(cfg.digests.inbox, old)  # an old digest joins the archive but is never mailed
    run = Run(cfg)
    try:
        run.wait_for("the bad file reported", lambda: f"{bad}:1: not a digest" in run.text())
        yesterday = today() - dt.timedelta(days=1)
        write_digest(cfg.digests.inbox, yesterday)
        run.wait_for("2 emails", lambda: total(recorder) == 2)
        run.wait_for_a_tick_after(cfg, dt.datetime.now(dt.UTC))  # a poll after the sends
    finally:
        assert run.terminate() == 0
    assert run.text().count("not a digest") == 1  # reported once, not on every poll
    assert total(recorder) == 2
    subjects = {
        email.message_from_bytes(raw, policy=email.policy.default)["Subject"]
        for _, raw in recorder.messages
    }
    assert all(yesterday.isoformat() in s for s in subjects)
    status = subprocess.run(
        [sys.executable, "-m", "publisher.cli", "status", "--config", str(cfg.path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 1, status.stderr  # a skipped digest is a warning
    assert f"{bad}:1: not a digest" in status.stdout
    assert f"warning: bad-digest: {bad}:1: not a digest" in status.stdout
    assert f"{yesterday}  in feed  email sent: 2 sent, 0 failed" in status.stdout
    assert f"{old}  in feed  email not sent" in status.stdout
    assert "1 older than [schedule] max_age_days = 2 are not emailed" in status.stdout


def test_kill_9_mid_send_then_restart_completes_with_nothing_lost(
    tmp_path: Path, server: tuple[Recorder, int], db_url: str
) -> None:
    recorder, port = server
    n, connections = 1500, 2
    cfg = project(tmp_path, port, db_url, subscribers=n, connections=connections)
    run = Run(cfg)
    run.wait_for("the first tick", lambda: run.ticks(cfg) is not None)
    write_digest(cfg.digests.inbox, today())
    run.wait_for("a third of the send", lambda: total(recorder) >= n // 3, timeout=60)
    run.kill()
    assert total(recorder) < n, "the send finished before it could be killed"
    again = Run(cfg)
    try:
        again.wait_for("every subscriber", lambda: len(recorder.received()) == n, timeout=90)
        again.wait_for("the send recorded", lambda: "every active subscriber" in again.text())
    finally:
        assert again.terminate() == 0
    counts = recorder.received()
    assert sum(c - 1 for c in counts.values()) <= connections


def test_sigterm_mid_send_exits_0_quickly_with_the_ledger_consistent(
    tmp_path: Path, server: tuple[Recorder, int], db_url: str
) -> None:
    recorder, port = server
    n = 1500
    cfg = project(tmp_path, port, db_url, subscribers=n)
    run = Run(cfg)
    run.wait_for("the first tick", lambda: run.ticks(cfg) is not None)
    write_digest(cfg.digests.inbox, today())
    run.wait_for("the send under way", lambda: total(recorder) >= 100, timeout=60)
    # A hang guard, not a speed target: stopping means finishing the messages in flight and
    # giving back the claims, which is quick, but this machine is shared.
    assert run.terminate(timeout=60) == 0
    arrived = recorder.received()
    assert len(arrived) < n, "the send finished before SIGTERM"
    with Store.open(cfg) as store:
        counts = store.ledger_counts(today())
        assert counts["sent"] == len(arrived)  # every accepted message is recorded, no more
        assert store.get_publication(today()).email_status != "sent"


def test_smtp_outage_leaves_the_send_pending_and_a_later_tick_completes_it(
    tmp_path: Path, db_url: str
) -> None:
    from publisher.scheduler import tick
    from publisher.state import QUEUED

    from .net import free_port

    port = free_port()  # nothing listens here yet: the outage
    cfg = project(tmp_path, port, db_url, subscribers=5)
    write_digest(cfg.digests.inbox, today())
    with Store.open(cfg) as store:
        report = tick(cfg, store, secret=SECRET.encode())
        assert report.sent == []
        assert [d for d, _ in report.pending] == [today()]
        assert report.pending[0][1].startswith("send failed: ")
        assert "nothing was marked failed" in report.pending[0][1]
        counts = store.ledger_counts(today())
        assert counts.get("failed", 0) == 0 and counts[QUEUED] == 5  # nothing lost or failed
        assert store.get_publication(today()).email_status != "sent"

        recorder = Recorder()
        controller = start_server(recorder, port=port)  # the server is back
        try:
            report = tick(cfg, store, secret=SECRET.encode())
        finally:
            controller.stop()
        assert report.sent == [today()]
        assert sorted(recorder.received()) == [f"r{i}@example.com" for i in range(5)]
        assert store.get_publication(today()).email_status == "sent"


def test_a_manual_send_is_not_taken_for_an_edit_by_the_scheduler(
    tmp_path: Path, server: tuple[Recorder, int], db_url: str
) -> None:
    from publisher.scheduler import tick

    recorder, port = server
    cfg = project(tmp_path, port, db_url, subscribers=2)
    path = write_digest(cfg.digests.inbox, today())
    env = {**os.environ, "PUBLISHER_SECRET": SECRET}
    sent = subprocess.run(
        [
            sys.executable,
            "-m",
            "publisher.cli",
            "send",
            "--config",
            str(cfg.path),
            "--digest",
            os.path.relpath(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert sent.returncode == 0, sent.stderr
    with Store.open(cfg) as store:
        report = tick(cfg, store, secret=SECRET.encode())
    assert report.edited == [] and report.new == [] and report.sent == []
    assert total(recorder) == 2


def test_a_mailbox_always_full_is_retried_a_set_number_of_times_spaced_then_final(
    tmp_path: Path, server: tuple[Recorder, int], db_url: str
) -> None:
    # Issue 23: one reader's mailbox answers 452 4.2.2 forever. `run` used to retry the partial
    # send on every tick, for ever; now twice (retry_failed_times), 6 hours apart, then final.
    from publisher.scheduler import tick
    from publisher.status import status_lines

    recorder, port = server
    cfg = project(
        tmp_path,
        port,
        db_url,
        subscribers=4,
        schedule="retry_failed_times = 2\nretry_failed_hours = 6.0",
    )
    full = "r2@example.com"
    recorder.full_mailbox.add(full)
    write_digest(cfg.digests.inbox, today())
    key = SECRET.encode()

    def later(hours: float) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)

    with Store.open(cfg) as store:
        first = tick(cfg, store, secret=key)
        assert first.sent == [] and [d for d, _ in first.pending] == [today()]
        assert recorder.rcpt_tries[full] == 3  # max_attempts
        pub = store.get_publication(today())
        assert pub.email_status == "partial" and pub.email_retries == 0

        # Not again before retry_failed_hours have passed.
        soon = tick(cfg, store, now=later(1), secret=key)
        assert recorder.rcpt_tries[full] == 3
        [(day, why)] = soon.pending
        assert day == today() and why.startswith("partial: retry 1 of 2 at "), why
        assert any(
            f"{today()}  retry 1 of 2 of the failed: " in line
            for line in status_lines(cfg, store, now=later(1))
        )

        for n in (1, 2):  # each retry tries the failed reader max_attempts times, no more
            tick(cfg, store, now=later(7), secret=key)
            assert recorder.rcpt_tries[full] == 3 + 3 * n
            assert store.get_publication(today()).email_retries == n

        done = tick(cfg, store, now=later(7), secret=key)
        assert done.final == [(today(), 1)] and done.pending == []
        pub = store.get_publication(today())
        assert pub.email_status == "final"
        for _ in range(2):  # final: no more sends of this digest, whatever the time
            assert tick(cfg, store, now=later(30), secret=key).final == []
        assert recorder.rcpt_tries[full] == 9
        row = store.ledger_entry(today(), full)
        assert row["status"] == "failed" and row["attempts"] == 9
        lines = status_lines(cfg, store, now=later(30))
        assert f"{today()}  in feed  email final: 3 sent, 1 failed after 2 retries" in "\n".join(
            lines
        )
        assert "pending emails: none" in lines
    assert recorder.received() == {f"r{i}@example.com": 1 for i in (0, 1, 3)}


def test_a_slow_send_does_not_hold_back_a_new_digest_and_skips_are_logged_once(
    tmp_path: Path, server: tuple[Recorder, int], db_url: str
) -> None:
    # Issue 23: the build and the send were one job, so a digest that arrived during a long
    # send waited for its end (for ever, when the send looped). Now they are two jobs. The send
    # is held at its first end of DATA until the new digest is in feed.xml: no timing involved.
    recorder, port = server
    recorder.hold = threading.Event()
    cfg = project(tmp_path, port, db_url, subscribers=3, connections=1, timeout=120.0)
    run = Run(cfg)
    try:
        run.wait_for("the first tick", lambda: run.ticks(cfg) is not None)
        yesterday = today() - dt.timedelta(days=1)
        write_digest(cfg.digests.inbox, yesterday)
        run.wait_for("the send under way, held", recorder.held.is_set)
        write_digest(cfg.digests.inbox, today())

        def in_feed() -> bool:
            feed = feedparser.parse(str(cfg.feed.output / "feed.xml"))
            return any(today().isoformat() in e.title for e in feed.entries)

        run.wait_for("the new digest in feed.xml while the send is held", in_feed, timeout=60)
        run.wait_for("a skipped send tick", lambda: "send tick skipped" in run.text())
        # A few more polls (the tick stamp has whole seconds) while the send is held: still
        # one line for that whole run of skips.
        for _ in range(2):
            before = run.ticks(cfg)
            run.wait_for("another build tick", lambda b=before: run.ticks(cfg) != b)
        recorder.hold.set()
        run.wait_for("both digests to everyone", lambda: total(recorder) == 6, timeout=60)
        run.wait_for("the send's skips counted", lambda: "send tick: " in run.text())
    finally:
        if recorder.hold is not None:
            recorder.hold.set()
        assert run.terminate(timeout=60) == 0
    text = run.text()
    assert "maximum number of running instances" not in text, text
    # Each run of skips of the send job: one line when it starts, one count when it ends.
    said = re.findall(r"send tick (skipped)|send tick: (\d+) ticks skipped", text)
    assert said and [bool(w) for w, _ in said] == [True, False] * (len(said) // 2), text
    assert max(int(n) for _, n in said if n) >= 2, text  # the held send's run, said once
    assert set(recorder.received().values()) == {2}


def test_alembic_says_nothing_on_a_tick_and_a_migration_is_logged_when_one_runs(
    tmp_path: Path, server: tuple[Recorder, int], empty_db_url: str
) -> None:
    # Issue 23: "Context impl ...", "Will assume ... DDL" on every tick, 2,900 lines a day.
    _, port = server
    cfg = project(tmp_path, port, empty_db_url)
    write_digest(cfg.digests.inbox, today() - dt.timedelta(days=30))  # built, never mailed
    run = Run(cfg)  # the first to open the new database: it runs the migrations
    try:
        run.wait_for("the first build", lambda: "new digest" in run.text())
        for _ in range(3):  # several ticks, each opening the database (stamps in seconds)
            before = run.ticks(cfg)
            run.wait_for("another tick", lambda b=before: run.ticks(cfg) != b)
    finally:
        assert run.terminate() == 0
    text = run.text()
    assert text.count("state database: upgrading the schema from None to") == 1, text
    for noise in ("Context impl", "Will assume", "setup plugin"):
        assert noise not in text, text


def test_sighup_rereads_the_config_and_keeps_the_old_one_if_it_is_bad(
    tmp_path: Path, server: tuple[Recorder, int], db_url: str
) -> None:
    # Issue 23: SIGHUP killed `publisher run` (the default action).
    _, port = server
    cfg = project(tmp_path, port, db_url)
    good = cfg.path.read_text(encoding="utf-8")
    run = Run(cfg)
    try:
        run.wait_for("the first tick", lambda: run.ticks(cfg) is not None)
        cfg.path.write_text(good.replace("poll_seconds = 0.2", "poll_seconds = 'often'"))
        run.proc.send_signal(signal.SIGHUP)
        run.wait_for("the bad config refused", lambda: "keeping the configuration" in run.text())
        before = run.ticks(cfg)
        run.wait_for("a tick with the old config", lambda: run.ticks(cfg) != before)
        cfg.path.write_text(good.replace("poll_seconds = 0.2", "poll_seconds = 0.3"))
        run.proc.send_signal(signal.SIGHUP)
        run.wait_for("the new config", lambda: "configuration reloaded" in run.text())
        before = run.ticks(cfg)
        run.wait_for("a tick with the new config", lambda: run.ticks(cfg) != before)
    finally:
        assert run.terminate() == 0
    text = run.text()
    [refused] = [line for line in text.splitlines() if "keeping the configuration" in line]
    assert "ERROR SIGHUP: " in refused and "'schedule.poll_seconds' must be a number" in refused
    assert "Traceback" not in text
    [reloaded] = [line for line in text.splitlines() if "configuration reloaded" in line]
    assert f"reloaded from {cfg.path}: watching" in reloaded and "every 0.3s" in reloaded


def test_a_digest_edited_into_a_bad_file_is_reported_by_the_build_not_by_every_send_tick(
    tmp_path: Path, db_url: str
) -> None:
    from publisher.scheduler import tick

    from .net import free_port

    cfg = project(tmp_path, free_port(), db_url, subscribers=2)  # an outage: nothing is sent
    path = write_digest(cfg.digests.inbox, today())
    with Store.open(cfg) as store:
        first = tick(cfg, store, secret=SECRET.encode())
        assert [d for d, _ in first.pending] == [today()]  # "send failed": the outage
        path.write_text("# not a digest\n\njust notes\n", encoding="utf-8")
        again = tick(cfg, store, secret=SECRET.encode())
    assert again.problems and "not a digest" in again.problems[0]
    assert again.pending == []  # the send step skips it quietly; the build said why


def test_the_log_names_readers_by_id_and_a_masked_address(
    tmp_path: Path, server: tuple[Recorder, int]
) -> None:
    """Issue 27: `publisher run`'s log (journald) never carries a whole address: a delivery
    failure names the reader as `#id (r…@example.com)`."""
    recorder, port = server
    cfg = project(tmp_path, port, f"sqlite:///{tmp_path / 'state.sqlite3'}", subscribers=3)
    recorder.refuse_rcpt.add("r1@example.com")  # 550: a hard bounce, final
    recorder.defer_data["r2@example.com"] = 99  # 451 until max_attempts
    run = Run(cfg)
    try:
        run.wait_for("the first tick", lambda: run.ticks(cfg) is not None)
        write_digest(cfg.digests.inbox, today(), digest_text(today(), n=2))
        run.wait_for("two failures in the log", lambda: run.text().count("failed #") == 2)
    finally:
        assert run.terminate() == 0
    text = run.text()
    with Store.open(cfg) as store:
        ids = {a: store.get(a).id for a in ("r1@example.com", "r2@example.com")}  # type: ignore
    assert f"failed #{ids['r1@example.com']} (r…@example.com) after 1 attempts" in text, text
    assert f"failed #{ids['r2@example.com']} (r…@example.com) after 3 attempts" in text, text
    for i in range(3):
        assert f"r{i}@example.com" not in text, text


def test_mask_addresses_in_free_text() -> None:
    from publisher.privacy import mask_addresses, reader

    assert reader(1234, "grace@example.com") == "#1234 (g…@example.com)"
    reply = "452 4.2.2 <grace.hopper+news@example.com>: mailbox full; 'bob@mx.example.org'"
    assert mask_addresses(reply) == "452 4.2.2 <g…@example.com>: mailbox full; 'b…@mx.example.org'"
