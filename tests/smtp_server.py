"""A real SMTP server on loopback for the delivery tests (aiosmtpd in a thread).

`Recorder` keeps every accepted message as (recipient, bytes) and misbehaves on request:
`pipelining` advertises PIPELINING; `refuse_rcpt` answers 550 to RCPT for those addresses,
`full_mailbox` 452 4.2.2 (mailbox full, temporary) to RCPT for those, forever, counted in
`rcpt_tries`;
`defer_data[addr] = n` answers 451 to the first n DATA commands for that address;
`drop_data[addr] = n` drops the connection instead; `refuse_data[addr] = reply` answers that
(a 5xx) at the end of DATA, and `reject_every = n` answers 554 to every n-th message's end of
DATA. `refuse_service` answers 421 ("service not available") for the whole session: in the
greeting (then hangs up) with "greeting", to EHLO with "ehlo", to MAIL with "mail".
`hold` (a threading.Event) makes every end of DATA wait until it is set, `held` set once one
does: a send slowed down for as long as a test needs, without a sleep.
`to(address)` gives the messages a recipient received, parsed. `smtp_server()` runs one for a
`with` block (the web tests); `start_server` starts one the caller stops (the delivery tests).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from .net import free_port

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


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[str, bytes]] = []
        self.refuse_rcpt: set[str] = set()
        self.full_mailbox: set[str] = set()
        self.rcpt_tries: Counter[str] = Counter()  # RCPTs seen, by address
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
        self.hold: threading.Event | None = None  # set: let the ends of DATA through
        self.held = threading.Event()  # an end of DATA waited on `hold`

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

    def to(self, address: str) -> list[EmailMessage]:
        """The messages `address` received, parsed (email.policy.default)."""
        with self.lock:
            raw = [data for rcpt, data in self.messages if rcpt == address]
        return [BytesParser(policy=policy.default).parsebytes(data) for data in raw]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001, ANN201
        if self.refuse_service == "mail":
            self.refused += 1
            return REFUSE_421
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201
        with self.lock:
            self.rcpt_tries[address] += 1
        if address in self.refuse_rcpt:
            return "550 5.1.1 No such user"
        if address in self.full_mailbox:
            return "452 4.2.2 Mailbox full"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        hold = self.hold
        if hold is not None and not hold.is_set():
            self.held.set()
            await asyncio.get_running_loop().run_in_executor(None, hold.wait)
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
    port: int | None = None,
    **kwargs: object,
) -> Controller:
    """Start aiosmtpd on `port` (default: a free one) on loopback; STARTTLS with `tls` (cert,
    key) and AUTH (required, and only over TLS) with `users`. Other keyword arguments go to
    aiosmtpd's Controller (e.g. `ssl_context`) or SMTP (e.g. `authenticator`)."""
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
    controller = _Controller(recorder, hostname="127.0.0.1", port=port or free_port(), **kwargs)
    controller.start()
    return controller


@contextmanager
def smtp_server(**kwargs: object) -> Iterator[tuple[Recorder, int]]:
    """A `Recorder` behind `start_server(**kwargs)` for the `with` block: (recorder, port)."""
    recorder = Recorder()
    controller = start_server(recorder, **kwargs)  # type: ignore[arg-type]
    try:
        yield recorder, controller.port
    finally:
        controller.stop()
