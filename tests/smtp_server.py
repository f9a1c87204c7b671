"""A real SMTP server on loopback for the delivery tests (aiosmtpd in a thread).

`Recorder` keeps every accepted message as (recipient, bytes) and misbehaves on request:
`pipelining` advertises PIPELINING; `refuse_rcpt` answers 550 to RCPT for those addresses;
`defer_data[addr] = n` answers 451 to the first n DATA commands for that address;
`drop_data[addr] = n` drops the connection instead; `refuse_data[addr] = reply` answers that
(a 5xx) at the end of DATA, and `reject_every = n` answers 554 to every n-th message's end of
DATA. `refuse_service` answers 421 ("service not available") for the whole session: in the
greeting (then hangs up) with "greeting", to EHLO with "ehlo", to MAIL with "mail".
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

REFUSE_421 = "421 4.3.2 Service not available, closing transmission channel"


class _SMTP(SMTP):
    """aiosmtpd's server, able to answer 421 in its greeting (Recorder.refuse_service)."""

    async def _handle_client(self) -> None:
        if getattr(self.event_handler, "refuse_service", None) == "greeting":
            self.event_handler.refused += 1
            await self.push(REFUSE_421)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _SMTP(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 / localhost, made with the openssl CLI."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []
        self.refuse_rcpt: set[str] = set()
        self.defer_data: dict[str, int] = {}
        self.drop_data: dict[str, int] = {}
        self.refuse_data: dict[str, str] = {}
        self.reject_every = 0
        self.data_count = 0  # ends of DATA seen (for reject_every)
        self.refuse_service: str | None = None  # "greeting", "ehlo" or "mail": 421 there
        self.refused = 0  # 421s given (refuse_service)
        self.pipelining = False  # advertise PIPELINING (aiosmtpd handles it, but is silent)
        self.sessions = 0  # EHLOs seen: how many connections a client opened
        self.arrived: dict[str, float] = {}  # recipient -> time.monotonic() of its first "250"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001, ANN201
        session.host_name = hostname
        self.sessions += 1
        if self.refuse_service == "ehlo":
            self.refused += 1
            return [REFUSE_421]
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    def received(self) -> Counter[str]:
        with self.lock:
            return Counter(rcpt for rcpt, _ in self.messages)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001, ANN201
        if self.refuse_service == "mail":
            self.refused += 1
            return REFUSE_421
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201
        if address in self.refuse_rcpt:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        rcpt = envelope.rcpt_tos[0]
        with self.lock:
            if self.drop_data.get(rcpt, 0) > 0:
                self.drop_data[rcpt] -= 1
                server.transport.close()
                return "421 dropped"
            if self.defer_data.get(rcpt, 0) > 0:
                self.defer_data[rcpt] -= 1
                return "451 4.3.0 Try again later"
            if rcpt in self.refuse_data:
                return self.refuse_data[rcpt]
            self.data_count += 1
            if self.reject_every and self.data_count % self.reject_every == 0:
                return "554 5.7.1 Message content rejected"
            now = time.monotonic()
            for r in envelope.rcpt_tos:
                self.messages.append((r, envelope.original_content))
                self.arrived.setdefault(r, now)
        return "250 2.0.0 Queued"


def start_server(
    recorder: Recorder,
    *,
    tls: tuple[Path, Path] | None = None,
    users: dict[str, str] | None = None,
) -> Controller:
    """Start aiosmtpd on a free loopback port; STARTTLS with `tls` (cert, key) and AUTH
    (required, and only over TLS) with `users`."""
    kwargs: dict[str, object] = {}
    if tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        kwargs.update(tls_context=ctx, require_starttls=True)
    if users is not None:

        def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
            ok = (
                isinstance(auth_data, LoginPassword)
                and users.get(auth_data.login.decode()) == auth_data.password.decode()
            )
            # handled=False: aiosmtpd then answers 535 itself (handled=True would say nothing).
            return AuthResult(success=ok, handled=False)

        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=True,
        )
    controller = _Controller(recorder, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller
