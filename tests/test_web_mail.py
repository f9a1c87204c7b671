"""The double opt-in confirmation mail is written and signed like the newsletter.

A real signup over HTTP (uvicorn on loopback) sends it through the real SMTP transport to an
aiosmtpd server that keeps the bytes as received; the DKIM signature is checked against the
fixture's public key file (no DNS), the way a receiving server would.
"""

from __future__ import annotations

import dataclasses
import email
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email import policy
from pathlib import Path

import dkim
import httpx
import pytest

from publisher.config import Config, DkimConfig
from publisher.dkim import verify_offline
from publisher.state import Store
from publisher.web import create_app

from .conftest import FIXTURES
from .smtp_server import Recorder, start_server
from .webhelpers import SECRET, live_server, web_config

KEY = FIXTURES / "dkim" / "test.key"
PUB = FIXTURES / "dkim" / "test.pub"
SENDER = "Daily Papers <papers@example.org>"


def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
    """The TXT record a receiver would find, made from the fixture's public key file."""
    public = "".join(line for line in PUB.read_text().splitlines() if "-----" not in line)
    return f"v=DKIM1; k=rsa; p={public}".encode()


def with_sender(cfg: Config, signed: bool) -> Config:
    d = DkimConfig(selector="s1", domain="example.org", key_file=KEY) if signed else DkimConfig()
    return dataclasses.replace(cfg, email=dataclasses.replace(cfg.email, from_=SENDER, dkim=d))


def signup_mail(tmp_path: Path, signed: bool) -> bytes:
    """Sign up over real HTTP; the confirmation's bytes exactly as the SMTP server received
    them."""
    recorder = Recorder()
    controller = start_server(recorder)
    stores: list[Store] = []

    def make_app(base: str):  # noqa: ANN202
        cfg = with_sender(web_config(tmp_path, base, controller.port), signed)
        stores.append(Store.open(cfg))
        return create_app(cfg, secret=SECRET, store=stores[0])

    try:
        with live_server(make_app) as base, httpx.Client(timeout=30) as http:
            r = http.post(base + "subscribe", data={"email": "ada@example.com", "name": "Ada"})
            assert r.status_code == 200, r.text
    finally:
        controller.stop()
        for store in stores:
            store.close()
    [(rcpt, raw)] = recorder.messages
    assert rcpt == "ada@example.com"
    return raw


@pytest.fixture
def signed_mail(tmp_path: Path) -> Iterator[bytes]:
    yield signup_mail(tmp_path, signed=True)


def _h_tag(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    signature = re.search(r"^DKIM-Signature:(.*?)(?=^\S)", head + "\r\nX", re.S | re.M).group(1)
    h = re.search(r"\bh=([^;]+)", re.sub(r"\s", "", signature))[1]
    return [name.lower() for name in h.split(":")]


def test_confirmation_is_dkim_signed_when_configured(signed_mail: bytes) -> None:
    raw = signed_mail
    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=dnsfunc)
    ok, why = verify_offline(raw, KEY.read_bytes())
    assert ok, why
    assert re.search(rb"\bd=example\.org;", raw.split(b"\r\n\r\n", 1)[0])
    names = _h_tag(raw)
    # oversigned like the newsletter's: one more than the message has, so none can be added
    for header in ("from", "to", "subject", "date", "message-id", "reply-to"):
        assert names.count(header) == (2 if header != "reply-to" else 1), names
    assert "auto-submitted" in names
    # the link is covered: a changed body or subject no longer verifies
    assert not dkim.verify(raw.replace(b"Subject: ", b"Subject: Re: ", 1), dnsfunc=dnsfunc)
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert "/confirm/" in msg.get_body(("plain",)).get_content()


def test_confirmation_carries_the_newsletters_sender_headers(signed_mail: bytes) -> None:
    msg = email.message_from_bytes(signed_mail, policy=policy.default)
    assert msg["From"] == SENDER
    assert msg["To"] == "ada@example.com"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@example.org>")  # the From domain, as the newsletter's
    assert msg["Date"].datetime is not None


def test_confirmation_is_unsigned_without_dkim(tmp_path: Path) -> None:
    raw = signup_mail(tmp_path, signed=False)
    assert b"DKIM-Signature:" not in raw.split(b"\r\n\r\n", 1)[0]
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["From"] == SENDER


def test_serve_refuses_a_from_without_a_domain_in_one_line(tmp_path: Path) -> None:
    """The newsletter and the confirmation share one reading of `[email] from`: an address
    without a domain stops `publisher serve` at start, before any signup meets it."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'[email]\nfrom = "Daily Papers <nobody>"\n[feed]\noutput = "{tmp_path / "public"}"\n'
        f'[state]\ndatabase = "{tmp_path / "state.sqlite3"}"\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PUBLISHER_SECRET": SECRET.decode()}
    r = subprocess.run(
        [sys.executable, "-m", "publisher.cli", "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line == f"error: {config}: 'email.from' has no address with a domain: 'nobody'"


class _EnvelopeRecorder(Recorder):
    """Also keeps each accepted message's MAIL FROM."""

    def __init__(self) -> None:
        super().__init__()
        self.senders: dict[str, str] = {}

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            with self.lock:
                for r in envelope.rcpt_tos:
                    self.senders[r] = envelope.mail_from
        return reply


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def test_a_confirmation_that_cannot_be_sent_is_logged_and_leaves_no_pending_row(
    tmp_path: Path,
) -> None:
    # Issue 23: STARTTLS required against a server that offers none answered 503 with only
    # the access line in the log, and left the pending row behind.
    recorder = Recorder()
    controller = start_server(recorder)  # no STARTTLS offered
    stores: list[Store] = []
    lines = _Lines()

    def make_app(base: str):  # noqa: ANN202
        cfg = web_config(tmp_path, base, controller.port)
        cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, security="starttls"))
        stores.append(Store.open(cfg))
        return create_app(cfg, secret=SECRET, store=stores[0])

    try:
        with live_server(make_app) as base, httpx.Client(timeout=30) as http:
            # After uvicorn has set up its loggers (which drops handlers added before).
            logging.getLogger("uvicorn.error").addHandler(lines)
            r = http.post(base + "subscribe", data={"email": "ada@example.com", "name": "Ada"})
            assert r.status_code == 503, r.text
            assert stores[0].get("ada@example.com") is None  # no pending row left behind
            # An existing subscriber's row stays as it was.
            stores[0].add_subscriber("bob@example.com", status="active", source="cli")
            r = http.post(base + "subscribe", data={"email": "bob@example.com"})
            assert r.status_code == 503, r.text
            assert stores[0].get("bob@example.com").status == "active"
    finally:
        logging.getLogger("uvicorn.error").removeHandler(lines)
        controller.stop()
        for store in stores:
            store.close()
    assert recorder.messages == []
    said = [line for line in lines.lines if "confirmation mail" in line]
    assert len(said) == 2, lines.lines
    first, second = said
    assert first.startswith("ERROR confirmation mail for subscriber ")
    assert "pending row removed" in first and "STARTTLS" in first, first
    assert "row kept" in second, second
    assert not any("ada@example.com" in line or "bob@example.com" in line for line in lines.lines)


def test_the_confirmation_goes_out_from_the_verp_return_path(tmp_path: Path) -> None:
    from publisher.mailrules import VERP, TokenCodec, address_pattern

    template = "bounces+{token}@papers.example.org"
    recorder = _EnvelopeRecorder()
    controller = start_server(recorder)
    stores: list[Store] = []

    def make_app(base: str):  # noqa: ANN202
        cfg = web_config(tmp_path, base, controller.port)
        cfg = dataclasses.replace(cfg, email=dataclasses.replace(cfg.email, return_path=template))
        stores.append(Store.open(cfg))
        return create_app(cfg, secret=SECRET, store=stores[0])

    try:
        with live_server(make_app) as base, httpx.Client(timeout=30) as http:
            r = http.post(base + "subscribe", data={"email": "ada@example.com", "name": "Ada"})
            assert r.status_code == 200, r.text
            sub_id = stores[0].get("ada@example.com").id
    finally:
        controller.stop()
        for store in stores:
            store.close()
    m = address_pattern(template).fullmatch(recorder.senders["ada@example.com"])
    assert m, recorder.senders
    token = TokenCodec([SECRET], VERP).verify(m.group(1))
    assert token.subscriber_id == sub_id
