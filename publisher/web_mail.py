"""The confirmation email of the double opt-in, and how it leaves this process.

Everything that sends lives behind `send_confirmation(cfg, email, url)`, so the web side can move
to the shared transport (SMTP pool + Maildir) without touching web.py. Until then: one SMTP
connection per message (signups are rare), honouring `[smtp]`, or the Maildir outbox when
`smtp.host` is empty, like the newsletter.
"""

from __future__ import annotations

import datetime as dt
import mailbox
import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from .config import Config, smtp_password
from .errors import PublisherError
from .i18n import strings
from .site import base_url
from .templating import jinja_env

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


def _tls_context(cfg: Config) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not cfg.smtp.verify_tls:
        # Only for a test relay with a self-signed certificate; documented as such.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def deliver(cfg: Config, msg: EmailMessage) -> None:
    """Hand one message to the configured SMTP server, or to the Maildir outbox."""
    if not cfg.smtp.host:
        # Maildir(create=True) makes only a missing folder; an empty existing one (e.g. made by
        # hand) still needs its tmp/new/cur.
        for sub in ("tmp", "new", "cur"):
            (cfg.smtp.outbox / sub).mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(cfg.smtp.outbox, create=False).add(msg)
        return
    smtp = cfg.smtp
    where = f"{smtp.host}:{smtp.port}"
    try:
        client: smtplib.SMTP
        if smtp.security == "ssl":
            client = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout, context=_tls_context(cfg)
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=_tls_context(cfg))
            if smtp.username:
                password = smtp_password(cfg)
                if password is None:
                    raise MailError(
                        f"{cfg.path}: 'smtp.username' is set but ${smtp.password_env} is not"
                    )
                client.login(smtp.username, password)
            client.send_message(msg)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP {where} refused the login: {exc.smtp_code}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"SMTP {where}: {exc}") from None


def send_confirmation(cfg: Config, email: str, url: str) -> None:
    """Mail the double opt-in link `url` to `email`; MailError if it cannot be sent."""
    deliver(cfg, build_confirmation(cfg, email, url))
