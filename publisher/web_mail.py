"""The confirmation email of the double opt-in, and how it leaves this process.

The message is written by the same code as the newsletter's (publisher/mime.py: From, Reply-To,
Date, the Message-ID on the From domain, encoded Subject, base64 parts) and DKIM-signed like it
(publisher/dkim.py) when `[email.dkim]` is set. Everything that sends lives behind
`send_confirmation(cfg, email, url)`, over the same transport as the newsletter
(publisher/transport.py): one SMTP connection per message (signups are rare), honouring
`[smtp]`, or the Maildir outbox when `smtp.host` is empty.
"""

from __future__ import annotations

import os
import time

from .config import Config
from .dkim import dkim_settings, signed
from .errors import PublisherError
from .i18n import strings
from .mime import (
    check_address,
    compose,
    date_value,
    encode_unstructured,
    format_address,
    from_header,
    message_id,
    reply_to_header,
    sender_domain,
)
from .templating import jinja_env
from .transport import DeliveryError, SmtpSetupError, envelope_sender, make_transport_factory
from .urls import base_url

FONT_STACK = (
    '-apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Apple SD Gothic Neo", '
    '"Noto Sans KR", "Malgun Gothic", "맑은 고딕", sans-serif'
)


class MailError(PublisherError):
    """The confirmation email could not be handed to the SMTP server or the outbox."""


def check_sender(cfg: Config) -> None:
    """Raise the ConfigError (or AddressError) a confirmation would meet: a From without a
    domain, an unusable From/Reply-To, a bad DKIM key. `publisher serve` checks at start."""
    sender_domain(cfg)  # first, as in MessageFactory: its error names the file and the key
    from_header(cfg)
    reply_to_header(cfg)
    dkim_settings(cfg)


def build_confirmation(cfg: Config, email: str, url: str) -> bytes:
    """The confirmation message for `email` carrying the link `url` (text + HTML), CRLF line
    endings, DKIM-signed if configured."""
    t = strings(cfg.site.language)
    subject = t["confirm_subject"].format(title=cfg.site.title)
    env = jinja_env(cfg)
    ctx = {
        "site": cfg.site,
        "url": url,
        "subject": subject,
        "base_url": base_url(cfg),
        "font": FONT_STACK,
    }
    text = env.get_template("web/confirm_email.txt").render(**ctx)
    html = env.get_template("web/confirm_email.html").render(**ctx)
    now = time.time()
    headers = [
        f"To: {format_address('', check_address(email))}",
        f"Date: {date_value(now, cfg.tz)}",
        f"Message-ID: {message_id(f'confirm.{now:.0f}.{os.getpid()}', sender_domain(cfg))}",
        from_header(cfg),
        f"Subject: {encode_unstructured(subject, len('Subject'))}",
    ]
    if reply_to := reply_to_header(cfg):
        headers.append(reply_to)
    # RFC 3834: a machine wrote this; vacation responders must not answer it.
    headers.append("Auto-Submitted: auto-generated")
    return signed(compose(headers, text, html), dkim_settings(cfg))


def deliver(cfg: Config, recipient: str, message: bytes, envelope_from: str | None = None) -> None:
    """Hand one message to the shared transport: the SMTP server, or the Maildir outbox.
    `envelope_from` is the MAIL FROM (a VERP return path), else the From address."""
    transport = None
    try:
        transport = make_transport_factory(cfg)()
        transport.send(envelope_from or envelope_sender(cfg), recipient, message)
    except SmtpSetupError as exc:  # already names the server and the key to change
        raise MailError(str(exc)) from None
    except DeliveryError as exc:
        where = f"SMTP {cfg.smtp.host}:{cfg.smtp.port}" if cfg.smtp.host else str(cfg.smtp.outbox)
        raise MailError(f"{where}: {exc}") from None
    finally:
        if transport is not None:
            transport.close()


def send_confirmation(
    cfg: Config, email: str, url: str, *, envelope_from: str | None = None
) -> None:
    """Mail the double opt-in link `url` to `email` from `envelope_from` (the reader's VERP
    return path when `[email] return_path` is set, so a bounce from a mistyped address reaches
    the bounce mailbox); MailError if it cannot be sent."""
    deliver(cfg, check_address(email), build_confirmation(cfg, email, url), envelope_from)
