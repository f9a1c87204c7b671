"""Faults of the SMTP server, caused for real by an aiosmtpd server on loopback, and what a
`publisher send` subprocess makes of each: one clear line, a documented exit status, and a
ledger that the next run completes with nothing lost and nothing sent twice.

- a server answering 421 for the whole send (greeting, EHLO or MAIL) is an outage: the send
  stops, nothing is failed, the next run sends everything;
- 554 at the end of DATA (content rejected) fails that message for good, settled: the exit
  status is 0 and later runs do not keep failing; `--retry-failed --include-final` retries it;
- 550 5.1.1 (or 5.2.1) at DATA is the reader's hard bounce; 552 5.2.2 (mailbox full) is not;
- SIGTERM (like Ctrl-C) finishes and records the messages in flight and exits 130.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from publisher.config import Config
from publisher.delivery import deliver
from publisher.state import Store
from publisher.state.schema import ledger, subscribers

from .deliveryhelpers import DAY, SAMPLE, build, subscribe, write_config
from .smtp_server import Recorder, start_server


@pytest.fixture(autouse=True)
def _signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISHER_SECRET", "D885NnIUqSeWEac9wDpbef9gsW7WUGA6YX3PUYqPXhw")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder()


def readers(cfg: Config, n: int) -> list[str]:
    emails = [f"r{i}@example.com" for i in range(n)]
    cfg.subscribers.file.write_text(
        "email,name\n" + "".join(f"{e},Reader {i}\n" for i, e in enumerate(emails))
    )
    return emails


def send_cmd(cfg: Config, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "publisher.cli", "send", "--config", str(cfg.path)]
    return [*cmd, "--digest", str(SAMPLE), *extra]


def send(cfg: Config, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(send_cmd(cfg, *extra), capture_output=True, text=True, timeout=timeout)


def ledger_rows(cfg: Config) -> list[dict[str, object]]:
    """The ledger rows of DAY, each with its reader's address as "email"."""
    with Store.open(cfg) as store, store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ledger, subscribers.c.email)
            .join(subscribers, subscribers.c.id == ledger.c.subscriber_id)
            .where(ledger.c.digest_date == DAY)
        ).all()
    return [dict(r._mapping) for r in rows]


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "where,pipelining",
    [("greeting", False), ("ehlo", False), ("mail", False), ("mail", True)],
    ids=["greeting", "ehlo", "mail", "mail-pipelined"],
)
def test_421_for_the_whole_send_is_an_outage_and_the_next_run_completes(
    tmp_path: Path, recorder: Recorder, db_url: str, where: str, pipelining: bool
) -> None:
    n = 60
    recorder.pipelining = pipelining
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=4, max_attempts=3)
        emails = readers(cfg, n)
        recorder.refuse_service = where
        res = send(cfg)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        [line] = errors(res.stderr)  # one line says what happened
        assert "refuses service: 421 4.3.2" in line, line
        assert "after 3 attempts" in line and "nothing was marked failed" in line, line
        assert res.stdout == ""  # no summary: the send did not run to its end
        # Stopped as a whole: a few refused attempts per connection, not max_attempts per reader
        # (which would be 3 x 60 refusals), and no time-based check (the machine may be loaded).
        assert recorder.messages == [] and 3 <= recorder.refused < n, recorder.refused
        rows = ledger_rows(cfg)
        assert len(rows) == n
        assert {r["status"] for r in rows} == {"queued"}  # nothing failed, nothing lost
        assert all(r["claimed_by"] is None for r in rows)  # every claim given back

        recorder.refuse_service = None  # the server is back
        again = send(cfg)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{n} sent, 0 failed" in again.stdout
        counts = recorder.received()
        assert set(counts) == set(emails) and set(counts.values()) == {1}
    finally:
        server.stop()


def test_554_content_rejection_is_final_settled_and_retried_on_request(
    tmp_path: Path, recorder: Recorder, db_url: str
) -> None:
    n = 50
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=2)
        emails = readers(cfg, n)
        recorder.reject_every = 7  # 554 at the end of DATA of every 7th message
        res = send(cfg)
        # Settled: no re-run can change a 5xx, so the exit status is 0, and the summary says
        # how many were rejected and how to retry them.
        assert res.returncode == 0, res.stdout + res.stderr
        assert "43 sent, 7 failed (0 hard bounces)" in res.stdout
        assert "7 rejected by the server for content or policy" in res.stdout
        assert "`publisher send --retry-failed --include-final` retries them" in res.stdout
        received = recorder.received()
        assert len(received) == 43 and set(received.values()) == {1}
        rows = {r["email"]: r for r in ledger_rows(cfg)}
        rejected = {e for e, r in rows.items() if r["status"] == "failed"}
        assert len(rejected) == 7 and not rejected & set(received)
        assert {e for e, r in rows.items() if r["status"] == "sent"} == set(received)
        for e in rejected:
            assert rows[e]["final"] and rows[e]["last_reply"].startswith("554 5.7.1")
            assert rows[e]["attempts"] == 1 and rows[e]["lease_until"] is None
        with Store.open(cfg) as store:
            assert {store.get(e).status for e in rejected} == {"active"}  # not bounces
            assert not any(store.is_suppressed(e) for e in rejected)
            assert store.get_publication(DAY).email_status == "sent"

        # Later runs do not keep failing, and neither a plain re-run nor --retry-failed resends.
        for extra in ((), ("--retry-failed",)):
            again = send(cfg, *extra)
            assert again.returncode == 0, again.stdout + again.stderr
            assert "0 sent, 0 failed" in again.stdout
        assert sum(recorder.received().values()) == 43
        bad = send(cfg, "--include-final")
        assert bad.returncode == 2 and "--include-final goes with --retry-failed" in bad.stderr

        recorder.reject_every = 0  # the content is fixed
        retried = send(cfg, "--retry-failed", "--include-final")
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert "7 sent, 0 failed" in retried.stdout
        counts = recorder.received()
        assert set(counts) == set(emails) and set(counts.values()) == {1}
        assert {r["status"] for r in ledger_rows(cfg)} == {"sent"}
    finally:
        server.stop()


def test_550_5_1_1_at_data_is_a_hard_bounce_but_a_full_mailbox_is_not(
    tmp_path: Path, recorder: Recorder, db_url: str
) -> None:
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url)
        fine = [f"ok{i}@example.com" for i in range(5)]
        recorder.refuse_data.update(
            {
                "gone@example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected",
                "off@example.com": "550 5.2.1 Mailbox disabled, not accepting messages",
                "full@example.com": "552 5.2.2 Mailbox full",
                "policy@example.com": "550 5.7.1 Message refused by policy",
            }
        )
        everyone = [*fine, *recorder.refuse_data]
        with Store.open(cfg) as store:
            subscribe(cfg, store, everyone)
            report = deliver(cfg, store, DAY, build)
            # 5.2.1 "mailbox disabled" is Sisimai's `suspend`: the mailbox may come back, so it
            # is no hard bounce (soft, as a full mailbox), the message alone is refused
            assert (report.sent, report.failed, report.bounced) == (5, 4, 1)
            assert report.rejected == 3
            assert report.ok and report.unsent_active == 0, report.summary()
            for e in ("gone@example.com",):
                assert store.get(e).status == "bounced" and store.is_suppressed(e)
                row = store.ledger_entry(DAY, e)
                assert row["status"] == "failed" and row["final"]
            for e in ("full@example.com", "policy@example.com", "off@example.com"):
                assert store.get(e).status == "active" and not store.is_suppressed(e)
                row = store.ledger_entry(DAY, e)
                assert row["status"] == "failed" and row["final"] and row["attempts"] == 1
            assert store.ledger_entry(DAY, "gone@example.com")["last_reply"].startswith("550")
            again = deliver(cfg, store, DAY, build)
            assert again.attempted == 0 and again.ok
        assert set(recorder.received()) == set(fine)
        assert set(recorder.received().values()) == {1}
    finally:
        server.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_mid_send_finishes_in_flight_messages_and_exits_130(
    tmp_path: Path, recorder: Recorder, db_url: str, signum: signal.Signals
) -> None:
    n, connections = 1500, 4
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=connections)
        emails = readers(cfg, n)
        proc = subprocess.Popen(
            send_cmd(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 60
        while sum(recorder.received().values()) < n // 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the send made no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=60)  # a hang guard: a stop takes well under 1 s
        assert proc.returncode == 130, out + err
        assert "Traceback" not in err
        name = signal.Signals(signum).name
        assert f"{name}: finishing the messages in flight, then stopping" in err
        assert f"stopped by {name}: every accepted message is recorded" in err
        assert "active subscribers still without it" in out  # the summary
        arrived = recorder.received()
        assert len(arrived) < n, "the send finished before the signal"
        assert set(arrived.values()) == {1}
        rows = ledger_rows(cfg)
        # Every accepted message is recorded sent, no more; nothing failed; claims given back.
        assert {r["email"] for r in rows if r["status"] == "sent"} == set(arrived)
        assert {r["status"] for r in rows} == {"sent", "queued"}
        assert all(r["claimed_by"] is None for r in rows if r["status"] != "sent")
        with Store.open(cfg) as store:
            assert store.get_publication(DAY).email_status == "partial"

        again = send(cfg)
        assert again.returncode == 0, again.stdout + again.stderr
        counts = recorder.received()
        assert set(counts) == set(emails)
        assert sum(c - 1 for c in counts.values()) <= connections
    finally:
        server.stop()


def test_stop_during_a_retry_leaves_the_message_queued_not_failed(
    tmp_path: Path, recorder: Recorder, db_url: str
) -> None:
    import threading

    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=1, retry_base_seconds=3600.0)
        recorder.defer_data["slow@example.com"] = 1  # 451 once: a retry in an hour
        stop = threading.Event()
        with Store.open(cfg) as store:
            subscribe(cfg, store, ["slow@example.com"])
            threading.Timer(0.5, stop.set).start()
            t0 = time.monotonic()
            report = deliver(cfg, store, DAY, build, stop=stop)
            assert time.monotonic() - t0 < 600  # it did not sit out the hour-long backoff
            row = store.ledger_entry(DAY, "slow@example.com")
            assert row["status"] == "queued" and row["claimed_by"] is None
            assert report.stopped and not report.ok and report.failed == 0
            assert deliver(cfg, store, DAY, build).ok
        assert recorder.received() == {"slow@example.com": 1}
    finally:
        server.stop()


def test_a_mailbox_full_forever_ends_retry_failed_with_that_reader_failed(
    tmp_path: Path, recorder: Recorder, db_url: str
) -> None:
    # The wedge of issue 23: 452 4.2.2 to RCPT for one reader, forever. A send marks the row
    # failed after max_attempts; --retry-failed then used to claim that same row again and
    # again ("74/1: 0 sent, 74 failed") and never ended.
    n = 12
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=2, max_attempts=3)
        emails = readers(cfg, n)
        full = emails[5]
        recorder.full_mailbox.add(full)
        first = send(cfg)
        assert first.returncode == 1, first.stdout + first.stderr  # a reader still lacks it
        assert f"{n - 1} sent, 1 failed" in first.stdout
        assert recorder.rcpt_tries[full] == 3

        # A hang guard only: without the fix this never returns.
        retried = send(cfg, "--retry-failed", timeout=120)
        assert retried.returncode == 1, retried.stdout + retried.stderr
        assert "Traceback" not in retried.stderr
        assert "0 sent, 1 failed" in retried.stdout
        assert "1 active subscribers still without it" in retried.stdout
        assert recorder.rcpt_tries[full] == 6  # max_attempts in this send, then it stopped
        rows = {r["email"]: r for r in ledger_rows(cfg)}
        assert rows[full]["status"] == "failed" and not rows[full]["final"]
        assert rows[full]["attempts"] == 6 and rows[full]["last_reply"].startswith("452 4.2.2")
        assert rows[full]["lease_until"] is None
        assert {e for e, r in rows.items() if r["status"] == "sent"} == set(emails) - {full}
        counts = recorder.received()
        assert set(counts) == set(emails) - {full} and set(counts.values()) == {1}
    finally:
        server.stop()
