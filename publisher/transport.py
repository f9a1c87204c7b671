"""Transports: hand one message (bytes) to an SMTP server, or drop it in a Maildir outbox.

Every failure to deliver one message is a `DeliveryError` with a `kind`:

- ``transient``: a 4xx reply, a timeout, a dropped or refused connection: retry later;
- ``permanent``: a 5xx reply that is not about the reader's address (e.g. 554 content rejected
  at the end of DATA, 552 5.2.2 mailbox full): this message is failed for good;
- ``bounce``: a 5xx reply to RCPT TO about the reader's address (publisher/mailrules.py, the
  classifier bounce reports go through too: not a block list, policy or full mailbox), or one
  at DATA that names the address as the cause (5.1.x but 5.1.7/5.1.8, which are the sender's;
  5.2.1 disabled; "user unknown"...): a hard bounce.

`connect=True` marks a failure of the server, not of the message: no connection, or a 421
("service not available") in the greeting or to EHLO or MAIL. Retried like any transient
failure; if it lasts, the send stops as an outage (`SmtpUnreachable`) and nothing is failed.

What no retry can fix for any message (a certificate that does not verify, a refused login, a
server without STARTTLS, a 5xx greeting or EHLO) is an `SmtpSetupError` (a PublisherError): the
send stops.
"""

from __future__ import annotations

import mailbox
import os
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Literal, Protocol

from .config import Config, smtp_password
from .errors import PublisherError
from .mailrules import refusal_kind

Kind = Literal["transient", "permanent", "bounce"]


class DeliveryError(Exception):
    """One message was not delivered; `kind` says whether retrying can help."""

    def __init__(self, kind: Kind, reply: str, *, connect: bool = False) -> None:
        super().__init__(reply)
        self.kind: Kind = kind
        self.reply = reply
        self.connect = connect  # no connection could be made: the server, not the message


class SmtpSetupError(PublisherError):
    """The SMTP server cannot be used at all (TLS, login, configuration)."""


class SmtpUnreachable(SmtpSetupError):
    """No connection to the SMTP server after every attempt: an outage. Nothing is marked
    failed; the messages stay queued for the next run."""


Ready = Callable[[], None]


class Transport(Protocol):
    def send(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        *,
        next_recipient: str | None = None,
        ready: Ready | None = None,
        next_sender: str | None = None,
    ) -> str:
        """Deliver one message; return the server's reply; raise DeliveryError.

        `ready()` is called right before the message can be accepted (before the final "."):
        the caller blocks there until its previous acceptance is in the ledger, so a crash
        leaves at most one accepted-but-unrecorded message per transport. `next_recipient`
        is the recipient of the caller's next message, `next_sender` its envelope sender when
        that differs (VERP; default: the same sender): an SMTP connection with PIPELINING
        announces that envelope together with this message's end."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    username: str
    password: str | None
    timeout: float
    verify_tls: bool
    messages_per_connection: int

    @classmethod
    def from_config(cls, cfg: Config) -> SmtpSettings:
        password = smtp_password(cfg)
        if cfg.smtp.username and not password:
            raise SmtpSetupError(
                f"{cfg.path}: smtp.username is set but the environment variable "
                f"{cfg.smtp.password_env} (smtp.password_env) holding the password is not"
            )
        return cls(
            host=cfg.smtp.host,
            port=cfg.smtp.port,
            security=cfg.smtp.security,
            username=cfg.smtp.username,
            password=password,
            timeout=cfg.smtp.timeout,
            verify_tls=cfg.smtp.verify_tls,
            messages_per_connection=max(cfg.smtp.messages_per_connection, 1),
        )

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        if not self.verify_tls:
            # Explicitly asked for (smtp.verify_tls = false): a test server's self-signed cert.
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".replace("\n", " ").strip()


def _kind(code: int) -> Kind:
    return "permanent" if 500 <= code <= 599 else "transient"


def _rcpt_kind(code: int, text: bytes | str = "") -> Kind:
    """A refused RCPT TO: a bounce only when the refusal is about the reader's address (the
    one classifier, publisher/mailrules.py); a 550 5.7.1 "your IP is blocked" or a full mailbox
    refuses this message only and never counts against the reader."""
    return refusal_kind(code, text)  # type: ignore[return-value]


def _data_kind(code: int, text: bytes | str) -> Kind:
    """A reply to DATA or to the end of the message: the same classifier, a bounce only when
    it names the recipient's address as the cause (5.1.x but 5.1.7/5.1.8, 5.2.1, "user
    unknown"...); any other 5xx (5.2.2 mailbox full, content or policy, no cause at all)
    refuses this message only."""
    return refusal_kind(code, text, after_rcpt=True)  # type: ignore[return-value]


def _service_refused(where: str, code: int, text: bytes | str) -> DeliveryError:
    """A 421 at the greeting, EHLO or MAIL: the server is not taking mail now (an outage)."""
    return DeliveryError(
        "transient", f"SMTP server {where} refuses service: {_reply(code, text)}", connect=True
    )


def _needs_dot_stuffing(message: bytes) -> bool:
    """Whether a line starts with ".". Newsletter lines are base64 or headers, with a handful of
    dots in all: hopping from dot to dot with find(b".") (memchr) takes ~2 us on a 50 KB
    message where `b"\n." in message` takes ~45 us; after many dots the one scan is cheaper."""
    if message.startswith(b"."):
        return True
    find = message.find
    at = find(b".", 1)
    for _ in range(64):
        if at == -1:
            return False
        if message[at - 1] == 0x0A:
            return True
        at = find(b".", at + 1)
    return at != -1 and b"\n." in message[at - 1 :]


def _dot_stuff(message: bytes) -> bytes:
    """RFC 5321 dot-stuffing, as smtplib.data() does it; the regex costs ~250 us on a 50 KB
    message (more than everything else publisher does per message), so skip it when no line
    starts with a dot."""
    if _needs_dot_stuffing(message):
        return smtplib._quote_periods(message)
    return message


def _envelope(sender: str, recipient: str) -> bytes:
    options = "" if (sender + recipient).isascii() else " SMTPUTF8"
    return f"MAIL FROM:<{sender}>{options}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode()


class SmtpTransport:
    """One SMTP connection, opened lazily and reused for `messages_per_connection` messages:
    RSET after a refused message, dropped after a lost connection or a timeout so the next
    message starts on a fresh one. Not thread-safe: one per worker.

    With PIPELINING (RFC 2920) a message costs one round trip: its end (".") goes out in the
    same write as the next message's MAIL, RCPT and DATA, whose replies follow its own."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._conn: smtplib.SMTP | None = None
        self._used = 0
        self._pipelining = False
        # (sender, recipient) whose MAIL/RCPT/DATA are sent and whose replies are not yet read:
        # the server may be in DATA mode, where only a body or dropping the connection is safe.
        self._announced: tuple[str, str] | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        where = f"{s.host}:{s.port}"
        try:
            if s.security == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host, s.port, timeout=s.timeout, context=s.tls_context()
                )
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            # A pipelined message's end follows its body in a second small write; Nagle would
            # hold that back until the body is acknowledged (a delayed ACK: up to 40 ms).
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._ehlo(conn, where)
            if s.security == "starttls":
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise SmtpSetupError(
                        f"SMTP server {where} does not offer STARTTLS "
                        '(smtp.security = "starttls"); use "ssl" or, on a trusted network '
                        'only, "none"'
                    )
                conn.starttls(context=s.tls_context())
                self._ehlo(conn, where)
            if s.username:
                conn.login(s.username, s.password or "")
        except ssl.SSLCertVerificationError as exc:
            raise SmtpSetupError(
                f"SMTP server {where}: TLS certificate not trusted ({exc.verify_message}); "
                "fix the server's certificate, or set smtp.verify_tls = false for a test server"
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise SmtpSetupError(
                f"SMTP server {where} refused the login for {s.username!r}: "
                f"{_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise SmtpSetupError(f"SMTP server {where}: {exc}") from None
        except smtplib.SMTPConnectError as exc:
            # The greeting was not 220: a 4xx (421) is an outage, a 5xx (554) a server that
            # takes no mail from us at all. Neither is about any message.
            if 400 <= exc.smtp_code <= 499:
                raise _service_refused(where, exc.smtp_code, exc.smtp_error) from None
            raise SmtpSetupError(
                f"SMTP server {where} refuses connections: {_reply(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            reply = _reply(exc.smtp_code, exc.smtp_error)
            raise DeliveryError(_kind(exc.smtp_code), reply) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                "transient", f"cannot connect to {where}: {exc}", connect=True
            ) from None
        return conn

    @staticmethod
    def _ehlo(conn: smtplib.SMTP, where: str) -> None:
        """EHLO (HELO if EHLO is not known): a 4xx is an outage, a 5xx to both a setup error."""
        code, text = conn.ehlo()
        if code == 250:
            return
        if 400 <= code <= 499:
            conn.close()
            raise _service_refused(where, code, text)
        code, text = conn.helo()
        if code != 250:
            conn.close()
            if 400 <= code <= 499:
                raise _service_refused(where, code, text)
            raise SmtpSetupError(f"SMTP server {where} refused EHLO/HELO: {_reply(code, text)}")

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def send(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        *,
        next_recipient: str | None = None,
        ready: Ready | None = None,
        next_sender: str | None = None,
    ) -> str:
        if self._announced is not None and self._announced != (sender, recipient):
            # Another envelope is on the wire (a retry, or a caller that changed its mind):
            # a DATA in progress can only be aborted by dropping the connection.
            self._drop()
        if self._conn is None or self._used >= self.settings.messages_per_connection:
            self.close()
            self._conn = self._connect()
            self._used = 0
            self._pipelining = self._conn.has_extn("pipelining")
        conn = self._conn
        options = "" if (sender + recipient).isascii() else " SMTPUTF8"
        try:
            if self._pipelining:
                return self._send_pipelined(
                    conn, sender, recipient, message, next_recipient, ready, next_sender
                )
            code, text = conn.mail(sender, [options.strip()] if options else [])
            if code == 421:
                raise _service_refused(self._where(), code, text)
            if code != 250:
                raise DeliveryError(_kind(code), _reply(code, text))
            code, text = conn.rcpt(recipient)
            if code not in (250, 251):
                raise DeliveryError(_rcpt_kind(code, text), _reply(code, text))
            if ready is not None:
                ready()
            code, text = conn.data(message)
            self._used += 1
            if code != 250:
                # data() raises only for the 354; the final reply comes back as a value.
                raise DeliveryError(_data_kind(code, text), _reply(code, text))
            return _reply(code, text)
        except DeliveryError as exc:
            if exc.connect:
                self._drop()  # a 421 closes the channel
            else:
                self._reset()
            raise
        except smtplib.SMTPDataError as exc:
            # DATA refused (no 354): the connection is still usable.
            self._reset()
            reply = _reply(exc.smtp_code, exc.smtp_error)
            raise DeliveryError(_data_kind(exc.smtp_code, exc.smtp_error), reply) from None
        except smtplib.SMTPResponseException as exc:
            # Another refused command: the connection is still usable.
            self._reset()
            reply = _reply(exc.smtp_code, exc.smtp_error)
            raise DeliveryError(_kind(exc.smtp_code), reply) from None
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            self._drop()
            why = str(exc) or type(exc).__name__
            raise DeliveryError("transient", f"connection lost: {why}") from None
        except BaseException:
            # e.g. `ready()` failed (the ledger): mid-message, so only dropping is safe.
            self._drop()
            raise

    def _send_pipelined(
        self,
        conn: smtplib.SMTP,
        sender: str,
        recipient: str,
        message: bytes,
        next_recipient: str | None,
        ready: Ready | None,
        next_sender: str | None = None,
    ) -> str:
        """MAIL, RCPT and DATA in one write (unless the previous message announced them),
        then the body; the "." that ends it carries the next message's envelope."""
        if self._announced is None:
            conn.send(_envelope(sender, recipient))
        self._announced = None
        mail = conn.getreply()
        if mail[0] == 421:
            # The server is closing the channel; the RCPT and DATA replies may never come.
            self._drop()
            raise _service_refused(self._where(), *mail)
        rcpt, data = conn.getreply(), conn.getreply()
        failure: DeliveryError | None = None
        if mail[0] != 250:
            failure = DeliveryError(_kind(mail[0]), _reply(*mail))
        elif rcpt[0] not in (250, 251):
            failure = DeliveryError(_rcpt_kind(*rcpt), _reply(*rcpt))
        if data[0] != 354:
            raise failure or DeliveryError(_data_kind(*data), _reply(*data))
        if failure is not None:
            # A server that accepted DATA without a recipient: end the empty message.
            conn.send(b".\r\n")
            conn.getreply()
            raise failure
        body = _dot_stuff(message)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        # Announce the next message only if this connection will carry it.
        announce = next_recipient is not None and (
            self._used + 1 < self.settings.messages_per_connection
        )
        next_sender = next_sender or sender
        end = b".\r\n" + (_envelope(next_sender, next_recipient) if announce else b"")
        if ready is None:
            conn.send(body + end)
        else:
            conn.send(body)  # the server cannot accept the message before its "."
            ready()
            conn.send(end)
        if announce:
            self._announced = (next_sender, next_recipient)  # type: ignore[assignment]
        code, text = conn.getreply()
        self._used += 1
        if code != 250:
            # The transaction is over; an announced envelope stays valid for the next send.
            raise DeliveryError(_data_kind(code, text), _reply(code, text))
        return _reply(code, text)

    def _reset(self) -> None:
        """RSET after a refused message so the connection can carry the next; drop it if that
        fails too. Not when the next envelope is already announced: the refused transaction
        is over, and an RSET now could land inside the next message's DATA."""
        if self._conn is None or self._announced is not None:
            return
        try:
            self._conn.rset()
            self._used += 1
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        """Close the socket without QUIT (which a server in DATA mode would take as body)."""
        conn, self._conn, self._announced = self._conn, None, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        if self._announced is not None:
            self._drop()
            return
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()


class _PrivateMaildir(mailbox.Maildir):
    """A Maildir whose message files are 0600, whatever the umask (the standard library makes
    its folders 0700 but its files 0666 less the umask): they carry an address each."""

    def _create_tmp(self):  # noqa: ANN202
        fh = super()._create_tmp()
        os.fchmod(fh.fileno(), 0o600)
        return fh


class MaildirTransport:
    """Write each message as one file in a Maildir (`new/`), which any mail client reads.

    Thread-safe (a lock around the add: mailbox's unique names are not thread-proof)."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self._box = _PrivateMaildir(str(outbox), create=True)
        self._lock = threading.Lock()

    def send(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        *,
        next_recipient: str | None = None,
        ready: Ready | None = None,
        next_sender: str | None = None,
    ) -> str:
        # Maildir files use the local line ending, not SMTP's CRLF.
        data = message.replace(b"\r\n", b"\n")
        if ready is not None:
            ready()
        try:
            with self._lock:
                key = self._box.add(data)
        except OSError as exc:
            # A full disk or a read-only folder is the outbox's, not this message's: stop the
            # send with one line; what was stored is in the ledger, the next run goes on.
            raise SmtpSetupError(
                f"{self.outbox}: cannot write to the Maildir outbox ({exc.strerror or exc}); "
                "free space or fix its permissions, then run the same command again"
            ) from None
        return f"stored {key}"

    def close(self) -> None:
        pass


def envelope_sender(cfg: Config) -> str:
    """The MAIL FROM address: the address part of email.from."""
    return parseaddr(cfg.email.from_)[1] or cfg.email.from_


def make_transport_factory(cfg: Config) -> Callable[[], Transport]:
    """A function returning a Transport per worker: SMTP when smtp.host is set, else one shared
    Maildir outbox."""
    if not cfg.smtp.host:
        box = MaildirTransport(cfg.smtp.outbox)
        return lambda: box
    settings = SmtpSettings.from_config(cfg)
    return lambda: SmtpTransport(settings)
