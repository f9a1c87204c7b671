"""Delivery against a real SMTP server on loopback (aiosmtpd): TLS, AUTH, retries, bounces,
the ledger, and resuming after kill -9."""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from publisher.cli import cli
from publisher.delivery import deliver
from publisher.state import Store
from publisher.transport import DeliveryError, SmtpSettings, SmtpSetupError, SmtpTransport

from .deliveryhelpers import DAY, SAMPLE, build, subscribe, write_config
from .net import self_signed_cert
from .smtp_server import Recorder, start_server


@pytest.fixture(autouse=True)
def _signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real send signs unsubscribe links; subprocesses inherit this environment.
    monkeypatch.setenv("PUBLISHER_SECRET", "cl-f12h7C1OgApZIuYcnLWJm7FUGhr0iR65awG7cH9k")


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield Recorder()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


def assert_arrivals_match_ledger(recorder: Recorder, store: Store, names: dict[str, str]) -> None:
    for rcpt, raw in recorder.messages:
        assert raw == build(rcpt, names[rcpt]), f"bytes differ for {rcpt}"
        assert store.ledger_entry(DAY, rcpt)["status"] == "sent"
    sent = {e for e in names if (store.ledger_entry(DAY, e) or {}).get("status") == "sent"}
    assert sent == set(recorder.received())


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelining"])
def test_starttls_auth_retries_bounces_and_ledger(
    tmp_path: Path,
    recorder: Recorder,
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    pipelining: bool,
    db_url: str,
) -> None:
    recorder.pipelining = pipelining
    server = start_server(recorder, tls=cert, users={"mailer": "s3cret"})
    try:
        monkeypatch.setenv("PUBLISHER_SMTP_PASSWORD", "s3cret")
        cfg = write_config(
            tmp_path,
            server.port,
            db_url,
            security="starttls",
            username="mailer",
            verify_tls=False,
            messages_per_connection=3,
        )
        emails = [f"user{i}@example.com" for i in range(12)]
        emails += ["later@example.com", "dropped@example.com", "gone@example.com"]
        emails += ["never@example.com"]
        recorder.defer_data["later@example.com"] = 2  # two 451s, then accepted
        recorder.drop_data["dropped@example.com"] = 1  # connection dropped once
        recorder.refuse_rcpt.add("gone@example.com")  # 550 on RCPT: a hard bounce
        recorder.defer_data["never@example.com"] = 99  # 451 forever: failed, retryable
        with Store.open(cfg) as store:
            subscribe(cfg, store, emails)
            names = {e: f"Name {i}" for i, e in enumerate(emails)}
            report = deliver(cfg, store, DAY, build)
            assert report.sent == 14 and report.failed == 2 and report.bounced == 1
            assert report.retries >= 2 + 1 + 2
            assert not report.ok and report.unsent_active == 1  # never@; gone@ is now bounced
            assert_arrivals_match_ledger(recorder, store, names)
            assert recorder.received()["later@example.com"] == 1
            assert store.ledger_entry(DAY, "later@example.com")["attempts"] == 3
            gone = store.ledger_entry(DAY, "gone@example.com")
            assert gone["status"] == "failed" and gone["final"] and "550" in gone["last_reply"]
            assert store.get("gone@example.com").status == "bounced"
            assert store.is_suppressed("gone@example.com")
            never = store.ledger_entry(DAY, "never@example.com")
            assert never["status"] == "failed" and not never["final"]
            assert never["attempts"] == 3 and never["last_reply"].startswith("451")
            # A re-run sends nothing; --retry-failed retries the 451 one, not the bounce.
            assert deliver(cfg, store, DAY, build).attempted == 0
            recorder.defer_data["never@example.com"] = 0
            again = deliver(cfg, store, DAY, build, retry_failed=True)
            assert again.sent == 1 and again.attempted == 1 and again.ok
            counts = recorder.received()
            assert sum(counts.values()) == 15 and set(counts.values()) == {1}
            assert "gone@example.com" not in counts
            # What arrived parses back as the message that was built.
            rcpt, raw = recorder.messages[0]
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            assert parsed.get_content().startswith("Hello Name")
    finally:
        server.stop()


def test_wrong_password_is_a_clear_error(
    tmp_path: Path,
    recorder: Recorder,
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
) -> None:
    server = start_server(recorder, tls=cert, users={"mailer": "s3cret"})
    try:
        monkeypatch.setenv("PUBLISHER_SMTP_PASSWORD", "wrong")
        cfg = write_config(
            tmp_path, server.port, db_url, security="starttls", username="mailer", verify_tls=False
        )
        with Store.open(cfg) as store:
            subscribe(cfg, store, ["a@example.com"])
            with pytest.raises(SmtpSetupError, match="refused the login for 'mailer'"):
                deliver(cfg, store, DAY, build)
            assert store.ledger_entry(DAY, "a@example.com")["status"] == "queued"
    finally:
        server.stop()


def test_certificates_are_verified_by_default(
    tmp_path: Path,
    recorder: Recorder,
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
) -> None:
    server = start_server(recorder, tls=cert)
    try:
        cfg = write_config(tmp_path, server.port, db_url, security="starttls")
        assert cfg.smtp.verify_tls
        with Store.open(cfg) as store:
            subscribe(cfg, store, ["a@example.com"])
            with pytest.raises(SmtpSetupError, match="certificate not trusted.*verify_tls"):
                deliver(cfg, store, DAY, build)
            assert recorder.messages == []
            # Verification is on, not broken: trusting the certificate makes it pass.
            monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
            assert deliver(cfg, store, DAY, build).ok
            assert list(recorder.received()) == ["a@example.com"]
    finally:
        server.stop()


def test_unsubscribed_address_in_csv_is_not_mailed(
    tmp_path: Path, recorder: Recorder, db_url: str
) -> None:
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url)
        with Store.open(cfg) as store:
            subscribe(cfg, store, ["a@example.com", "b@example.com"])
            store.unsubscribe("b@example.com")
            subscribe(cfg, store, ["a@example.com", "B@Example.com", "c@example.com"])
            report = deliver(cfg, store, DAY, build)
        assert report.ok and report.sent == 2
        assert set(recorder.received()) == {"a@example.com", "c@example.com"}
    finally:
        server.stop()


def test_a_reader_who_subscribes_during_a_send_gets_it_from_that_send(
    tmp_path: Path, recorder: Recorder, db_url: str
) -> None:
    """An import or a confirmed signup that commits while a send runs (here: from another
    connection, as the first message is built) is mailed by that same send, which then
    reports every active subscriber served, not "1 still without it"."""
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=1)
        late: list[str] = []

        def build_and_welcome_a_newcomer(addr: str, name: str, subscriber_id: int = 0) -> bytes:
            if not late:
                late.append("late@example.com")
                with Store.open(cfg) as other:
                    other.add_subscriber("late@example.com", name="Late", status="active")
            return build(addr, name, subscriber_id)

        with Store.open(cfg) as store:
            subscribe(cfg, store, ["a@example.com", "b@example.com"])
            report = deliver(cfg, store, DAY, build_and_welcome_a_newcomer)
            assert store.ledger_entry(DAY, "late@example.com")["status"] == "sent"
        assert report.ok and report.unsent_active == 0 and report.sent == 3, report
        counts = recorder.received()
        assert counts == {"a@example.com": 1, "b@example.com": 1, "late@example.com": 1}
    finally:
        server.stop()


def test_a_reader_who_unsubscribes_after_the_claim_is_left_out(
    tmp_path: Path, recorder: Recorder, db_url: str
) -> None:
    """The unsubscribe is committed (from another connection) after the sender claimed the
    row and while it builds that very message; more than `Claims.STALE` later the message's
    final "." would go out. The check before it sees the unsubscribe: nothing is sent, the
    report counts the reader as left out, and the others are mailed."""
    from publisher.delivery import Claims

    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=1)

        def build_while_b_unsubscribes(addr: str, name: str, subscriber_id: int = 0) -> bytes:
            if addr == "b@example.com":
                with Store.open(cfg) as other:
                    other.unsubscribe(addr)
                # Past the staleness bound, so the promise says this message must not go out
                # (a lower bound on waiting, not a timing assertion).
                time.sleep(Claims.STALE + 0.1)
            return build(addr, name, subscriber_id)

        with Store.open(cfg) as store:
            subscribe(cfg, store, ["a@example.com", "b@example.com", "c@example.com"])
            report = deliver(cfg, store, DAY, build_while_b_unsubscribes)
            assert store.ledger_entry(DAY, "b@example.com")["status"] != "sent"
        assert report.sent == 2 and report.skipped == 1 and report.ok, report
        assert set(recorder.received()) == {"a@example.com", "c@example.com"}
    finally:
        server.stop()


def test_maildir_outbox_when_no_host(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, None, db_url)
    with Store.open(cfg) as store:
        subscribe(cfg, store, ["a@example.com", "b@example.com"])
        report = deliver(cfg, store, DAY, build)
    assert report.ok and report.sent == 2
    box = mailbox.Maildir(cfg.smtp.outbox, create=False)
    got = sorted(
        email.message_from_bytes(m.as_bytes(), policy=email.policy.default)["To"] for m in box
    )
    assert got == ["Name 0 <a@example.com>", "Name 1 <b@example.com>"]
    assert len(os.listdir(cfg.smtp.outbox / "new")) == 2


def test_send_command_exit_status(tmp_path: Path, recorder: Recorder, db_url: str) -> None:
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url)
        cfg.subscribers.file.write_text("email,name\nok@example.com,Ok\nbad@example.com,Bad\n")
        recorder.refuse_rcpt.add("bad@example.com")
        runner = CliRunner()
        args = ["send", "--config", str(cfg.path), "--digest", str(SAMPLE)]
        res = runner.invoke(cli, args)
        assert res.exit_code == 0, res.output  # bad@ bounced: no longer an active subscriber
        assert "1 sent, 1 failed (1 hard bounces)" in res.output
        assert set(recorder.received()) == {"ok@example.com"}
        raw = recorder.messages[0][1]
        assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"]
    finally:
        server.stop()


def test_kill_minus_9_midway_then_resume_sends_each_once(
    tmp_path: Path, recorder: Recorder, db_url: str
) -> None:
    n, connections = 3000, 4
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=connections)
        cfg.subscribers.file.write_text(
            "email,name\n" + "".join(f"s{i}@example.com,S {i}\n" for i in range(n))
        )
        cmd = [sys.executable, "-m", "publisher.cli", "send", "--config", str(cfg.path)]
        cmd += ["--digest", str(SAMPLE)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while sum(recorder.received().values()) < n // 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the send made no progress"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = sum(recorder.received().values())
        assert first < n, "the send finished before it could be killed"
        done = subprocess.run(cmd, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        counts = recorder.received()
        assert set(counts) == {f"s{i}@example.com" for i in range(n)}
        duplicates = sum(c - 1 for c in counts.values())
        assert duplicates <= connections
    finally:
        server.stop()


def test_rate_limit_spaces_messages_across_workers() -> None:
    from publisher.delivery import RateLimiter

    class Recording:
        """A stop event that records the waits instead of sleeping."""

        def __init__(self) -> None:
            self.waits: list[float] = []

        def wait(self, seconds: float) -> bool:
            self.waits.append(seconds)
            return False

    limiter = RateLimiter(10.0)  # one message every 0.1 s
    stop = Recording()
    for _ in range(5):
        limiter.wait(stop)  # type: ignore[arg-type]
    # Back-to-back calls: the first goes now, each next one a further 0.1 s later.
    assert len(stop.waits) == 4
    assert [round(b - a, 2) for a, b in zip(stop.waits, stop.waits[1:], strict=False)] == [0.1] * 3
    unlimited = Recording()
    RateLimiter(0).wait(unlimited)  # type: ignore[arg-type]
    assert unlimited.waits == []


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelining"])
def test_lines_starting_with_a_dot_arrive_intact(
    tmp_path: Path, recorder: Recorder, pipelining: bool
) -> None:
    # The pipelined path dot-stuffs by itself (with a fast path for messages that need none).
    recorder.pipelining = pipelining
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port)
        message = (
            b"From: a@example.com\r\nTo: b@example.com\r\nSubject: dots\r\n\r\n"
            b".leading dot\r\n..two dots\r\nmiddle . dot\r\n.\r\nend\r\n"
        )
        transport = SmtpTransport(SmtpSettings.from_config(cfg))
        try:
            assert transport.send("a@example.com", "b@example.com", message).startswith("250")
            plain = message.split(b"\r\n\r\n")[0] + b"\r\n\r\nno line starts with a dot.\r\n"
            transport.send("a@example.com", "c@example.com", plain)
        finally:
            transport.close()
        assert [raw for _, raw in recorder.messages] == [message, plain]
    finally:
        server.stop()


def plain_message(rcpt: str) -> bytes:
    return f"From: a@example.com\r\nTo: {rcpt}\r\nSubject: hi\r\n\r\nhello {rcpt}\r\n".encode()


def pipelining_transport(tmp_path: Path, recorder: Recorder) -> tuple[object, SmtpTransport]:
    recorder.pipelining = True
    server = start_server(recorder)
    cfg = write_config(tmp_path, server.port, messages_per_connection=10)
    return server, SmtpTransport(SmtpSettings.from_config(cfg))


def test_pipelined_next_envelope_refused_keeps_the_connection(
    tmp_path: Path, recorder: Recorder
) -> None:
    # b@'s MAIL/RCPT/DATA go out with a@'s final "."; its 550 must land on b@, not on a@.
    server, transport = pipelining_transport(tmp_path, recorder)
    recorder.refuse_rcpt.add("b@example.com")
    try:
        first = transport.send(
            "s@example.com",
            "a@example.com",
            plain_message("a@example.com"),
            next_recipient="b@example.com",
        )
        assert first.startswith("250")
        with pytest.raises(DeliveryError) as refused:
            transport.send(
                "s@example.com",
                "b@example.com",
                plain_message("b@example.com"),
                next_recipient="c@example.com",
            )
        assert refused.value.kind == "bounce" and refused.value.reply.startswith("550")
        assert transport.send(
            "s@example.com", "c@example.com", plain_message("c@example.com")
        ).startswith("250")
        transport.close()
        assert recorder.received() == {"a@example.com": 1, "c@example.com": 1}
        assert [raw for _, raw in recorder.messages] == [
            plain_message("a@example.com"),
            plain_message("c@example.com"),
        ]
        assert recorder.sessions == 1  # RSET after the refusal, not a new connection
    finally:
        server.stop()


def test_pipelined_451_on_first_while_second_is_announced(
    tmp_path: Path, recorder: Recorder
) -> None:
    server, transport = pipelining_transport(tmp_path, recorder)
    recorder.defer_data["a@example.com"] = 1
    recorder.defer_data["c@example.com"] = 1
    try:
        # a@'s 451 is a@'s, though b@'s envelope was already sent behind it.
        with pytest.raises(DeliveryError) as deferred:
            transport.send(
                "s@example.com",
                "a@example.com",
                plain_message("a@example.com"),
                next_recipient="b@example.com",
            )
        assert deferred.value.kind == "transient" and deferred.value.reply.startswith("451")
        # Moving on to the announced b@ uses the same connection.
        transport.send(
            "s@example.com",
            "b@example.com",
            plain_message("b@example.com"),
            next_recipient="c@example.com",
        )
        assert recorder.sessions == 1
        with pytest.raises(DeliveryError):
            transport.send(
                "s@example.com",
                "c@example.com",
                plain_message("c@example.com"),
                next_recipient="d@example.com",
            )
        # Retrying c@ while d@'s DATA is open: only a new connection aborts d@ safely.
        transport.send("s@example.com", "c@example.com", plain_message("c@example.com"))
        transport.send("s@example.com", "a@example.com", plain_message("a@example.com"))
        transport.close()
        assert recorder.sessions == 2
        assert recorder.received() == {"a@example.com": 1, "b@example.com": 1, "c@example.com": 1}
        assert all(raw == plain_message(rcpt) for rcpt, raw in recorder.messages)
    finally:
        server.stop()


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelining"])
def test_no_message_is_accepted_before_ready_returns(
    tmp_path: Path, recorder: Recorder, pipelining: bool
) -> None:
    # `ready` is where delivery waits for the previous message's ledger commit; if that fails,
    # the server must not have accepted this message (else a crash could duplicate two).
    recorder.pipelining = pipelining
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port)
        transport = SmtpTransport(SmtpSettings.from_config(cfg))
        seen: list[int] = []

        def ledger_down() -> None:
            seen.append(len(recorder.messages))
            raise RuntimeError("ledger down")

        with pytest.raises(RuntimeError, match="ledger down"):
            transport.send(
                "s@example.com",
                "a@example.com",
                plain_message("a@example.com"),
                next_recipient="b@example.com",
                ready=ledger_down,
            )
        assert seen == [0]
        # The half-sent message was abandoned with its connection; the transport still works.
        transport.send(
            "s@example.com",
            "b@example.com",
            plain_message("b@example.com"),
            ready=lambda: seen.append(len(recorder.messages)),
        )
        transport.close()
        assert seen == [0, 0]
        assert recorder.received() == {"b@example.com": 1}
    finally:
        server.stop()
