"""The send side of the bounce loop, against a real SMTP server on loopback (aiosmtpd):

- with `[email] return_path` every message's MAIL FROM is its own VERP address, whose token
  names that reader and digest (also when PIPELINING announces the next envelope early);
- a refusal at RCPT TO is classified by cause: 550 5.1.1 is the reader's hard bounce, a
  550 5.7.1 "your IP is blocked" fails the message without counting against the reader, and
  both are recorded as bounce events."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from publisher.config import Config
from publisher.delivery import deliver
from publisher.mailrules import VERP, ReturnPath, TokenCodec, address_pattern
from publisher.state import Store

from .deliveryhelpers import DAY, SAMPLE, build, subscribe, write_config
from .smtp_server import Recorder, start_server

SECRET = "xm5akFCiNe4DrdF0gtt_Y_Miw5i2WhwXnngWFeZZLwA"
TEMPLATE = "bounces+{token}@papers.example.org"


class EnvelopeRecorder(Recorder):
    """Also keeps each accepted message's MAIL FROM, and answers RCPT with `rcpt_replies`."""

    def __init__(self) -> None:
        super().__init__()
        self.senders: dict[str, str] = {}
        self.rcpt_replies: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self.lock:
                for r in envelope.rcpt_tos:
                    self.senders[r] = envelope.mail_from
        return reply


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISHER_SECRET", SECRET)


def with_return_path(cfg: Config) -> Config:
    return dataclasses.replace(cfg, email=dataclasses.replace(cfg.email, return_path=TEMPLATE))


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelining"])
def test_each_message_has_its_own_verp_sender(
    tmp_path: Path, db_url: str, pipelining: bool
) -> None:
    recorder = EnvelopeRecorder()
    recorder.pipelining = pipelining
    server = start_server(recorder)
    try:
        cfg = with_return_path(write_config(tmp_path, server.port, db_url, connections=1))
        emails = [f"reader{i}@example.com" for i in range(7)]
        with Store.open(cfg) as store:
            subscribe(cfg, store, emails)
            verp = ReturnPath.of(TEMPLATE, SECRET.encode())
            report = deliver(cfg, store, DAY, build, return_path=verp)
            assert report.sent == len(emails), report.summary()
            ids = {e: store.get(e).id for e in emails}
    finally:
        server.stop()
    codec = TokenCodec([SECRET.encode()], VERP)
    pattern = address_pattern(TEMPLATE)
    assert set(recorder.senders) == set(emails)
    for email, sender in recorder.senders.items():
        m = pattern.fullmatch(sender)
        assert m, sender
        data = codec.verify(m.group(1))
        assert (data.subscriber_id, data.digest_date) == (ids[email], DAY)
    assert len(set(recorder.senders.values())) == len(emails)


def test_deliver_is_given_the_return_path_the_config_names(tmp_path: Path) -> None:
    """deliver() reads no secret from the environment: with `[email] return_path` set, the
    caller passes the keyed ReturnPath, and forgetting it is an error, not mail without VERP."""
    cfg = with_return_path(write_config(tmp_path, 1, f"sqlite:///{tmp_path / 'state.db'}"))
    with Store.open(cfg) as store, pytest.raises(TypeError, match="return_path"):
        deliver(cfg, store, DAY, build)


def test_without_return_path_the_sender_is_the_from_address(tmp_path: Path, db_url: str) -> None:
    recorder = EnvelopeRecorder()
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url)
        with Store.open(cfg) as store:
            subscribe(cfg, store, ["a@example.com"])
            deliver(cfg, store, DAY, build)
    finally:
        server.stop()
    assert recorder.senders == {"a@example.com": "papers@localhost"}


def test_rcpt_refusals_are_classified_by_cause(tmp_path: Path, db_url: str) -> None:
    recorder = EnvelopeRecorder()
    recorder.rcpt_replies = {
        "gone@example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected",
        "ip@example.com": "550 5.7.1 Service unavailable; client [198.51.100.7] blocked "
        "using zen.spamhaus.org",
    }
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url)
        with Store.open(cfg) as store:
            subscribe(cfg, store, ["ok@example.com", *recorder.rcpt_replies])
            report = deliver(cfg, store, DAY, build)
            assert (report.sent, report.failed, report.bounced) == (1, 2, 1), report.summary()
            assert store.get("gone@example.com").status == "bounced"
            assert store.get("ip@example.com").status == "active"
            assert not store.is_suppressed("ip@example.com")
            kinds = {e.email: (e.kind, e.cause, e.digest_date) for e in store.iter_bounce_events()}
    finally:
        server.stop()
    assert kinds == {
        "gone@example.com": ("hard", "userunknown", DAY),
        "ip@example.com": ("blocked", "blocked", DAY),
    }


def test_each_messages_message_id_names_its_ledger_row_signed(tmp_path: Path, db_url: str) -> None:
    # A bounce or an SES notification that quotes it names the reader (publisher/ses.py), with
    # nothing stored per message: the Message-ID carries the row's id, signed.
    import sqlalchemy as sa

    from publisher.digest import parse_file
    from publisher.mailer import Segments
    from publisher.state.schema import ledger, subscribers
    from publisher.tokens import message_ledger_ids

    recorder = EnvelopeRecorder()
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url)
        emails = ["a@example.com", "b@example.com", "c@example.com"]
        with Store.open(cfg) as store:
            subscribe(cfg, store, emails)
            segments = Segments(parse_file(SAMPLE), cfg, SECRET.encode())
            deliver(cfg, store, DAY, None, segments=segments)
            with store.engine.connect() as conn:
                rows = dict(
                    conn.execute(
                        sa.select(subscribers.c.email, ledger.c.id).join(
                            subscribers, subscribers.c.id == ledger.c.subscriber_id
                        )
                    ).all()
                )
            seen = set()
            for email in emails:
                (msg,) = recorder.to(email)
                mid = msg["Message-ID"]
                seen.add(mid)
                assert message_ledger_ids([SECRET.encode()], [mid]) == [rows[email]]
                found = store.ledger_by_message_id([rows[email]])
                assert found is not None and found.subscriber_id == store.get(email).id
                # under another key it is nobody's
                assert message_ledger_ids([b"another-key" * 3], [mid]) == []
    finally:
        server.stop()
    assert len(seen) == len(emails)


def test_mailto_unsubscribe_carries_each_readers_token_and_a_reply_to_it_unsubscribes(
    tmp_path: Path, db_url: str
) -> None:
    import email
    import email.policy
    from email.utils import parseaddr

    from publisher.bounces.intake import Intake
    from publisher.digest import parse_file
    from publisher.mailer import MessageFactory
    from publisher.newsletter import render_newsletter

    from .deliveryhelpers import SAMPLE

    recorder = EnvelopeRecorder()
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url)
        cfg = dataclasses.replace(
            cfg,
            email=dataclasses.replace(
                cfg.email,
                from_="Daily Papers <papers@papers.example.org>",
                unsubscribe_mailto="unsubscribe+{token}@papers.example.org",
            ),
        )
        digest = parse_file(SAMPLE)
        factory = MessageFactory(render_newsletter(digest, cfg), cfg, SECRET.encode())
        with Store.open(cfg) as store:
            subscribe(cfg, store, ["ada@example.com", "bob@example.com"])
            report = deliver(cfg, store, digest.date, factory.build)
            assert report.sent == 2, report.summary()
            mailtos = {}
            for rcpt, raw in recorder.messages:
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                header = str(msg["List-Unsubscribe"])
                mailtos[rcpt] = header.split("<mailto:")[1].split(">")[0].split("?")[0]
            assert mailtos["ada@example.com"] != mailtos["bob@example.com"]
            assert all("{token}" not in m for m in mailtos.values())
            # Ada's mail client sends the RFC 2369 request to the address in her header.
            request = (
                f"From: Ada <ada@example.com>\nTo: {mailtos['ada@example.com']}\n"
                "Subject: unsubscribe\nMessage-ID: <req@example.com>\n\n"
            ).encode()
            outcome = Intake(cfg, store, [SECRET.encode()]).process(request, "mailto")
            assert outcome.suppressed == 1, outcome.line
            assert store.get("ada@example.com").status == "unsubscribed"
            assert store.get("bob@example.com").status == "active"
    finally:
        server.stop()
    assert parseaddr(mailtos["bob@example.com"])[1].startswith("unsubscribe+")
