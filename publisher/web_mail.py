"""The confirmation email of the double opt-in, and how it leaves this process.

Everything that sends lives behind `send_confirmation(cfg, email, url)`, over the same transport
as the newsletter (publisher/transport.py): one SMTP connection per message (signups are rare),
honouring `[smtp]`, or the Maildir outbox when `smtp.host` is empty.
"""

from __future__ import annotations

import datetime as dt
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, make_msgid

from .config import Config
from .errors import PublisherError
from .i18n import strings
from .templating import jinja_env
from .transport import DeliveryError, SmtpSetupError, envelope_sender, make_transport_factory
from .urls import base_url

FONT_STACK = (
    '-apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Apple SD Gothic Neo", '
    '"Noto Sans KR", "Malgun Gothic", "맑은 고딕", sans-serif'
)


class MailError(PublisherError):
    """The confirmation email could not be handed to the SMTP server or the outbox."""


def _from_domain(cfg: Config) -> str:
    addrs = getaddresses([cfg.email.from_])
    address = addrs[0][1] if addrs else ""
    return address.rpartition("@")[2] or "localhost"


def build_confirmation(cfg: Config, email: str, url: str) -> EmailMessage:
    """The confirmation message for `email` carrying the link `url` (text + HTML)."""
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
    msg = EmailMessage()
    msg["From"] = cfg.email.from_
    msg["To"] = Address(addr_spec=email)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=_from_domain(cfg))
    if cfg.email.reply_to:
        msg["Reply-To"] = cfg.email.reply_to
    # RFC 3834: a machine wrote this; vacation responders must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def deliver(cfg: Config, msg: EmailMessage) -> None:
    """Hand one message to the shared transport: the SMTP server, or the Maildir outbox."""
    recipient = getaddresses([str(msg["To"])])[0][1]
    transport = None
    try:
        transport = make_transport_factory(cfg)()
        transport.send(envelope_sender(cfg), recipient, msg.as_bytes(policy=SMTP))
    except SmtpSetupError as exc:  # already names the server and the key to change
        raise MailError(str(exc)) from None
    except DeliveryError as exc:
        where = f"SMTP {cfg.smtp.host}:{cfg.smtp.port}" if cfg.smtp.host else str(cfg.smtp.outbox)
        raise MailError(f"{where}: {exc}") from None
    finally:
        if transport is not None:
            transport.close()


def send_confirmation(cfg: Config, email: str, url: str) -> None:
    """Mail the double opt-in link `url` to `email`; MailError if it cannot be sent."""
    deliver(cfg, build_confirmation(cfg, email, url))
