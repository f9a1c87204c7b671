"""Newsletter x subscriber -> RFC 5322 bytes, ready for SMTP (CRLF line endings).

`MessageFactory` prepares everything that is the same for every reader once (From, Subject
encoded per RFC 2047, List-Id, the MIME skeleton, the base64 of each body part up to the first
placeholder, the DKIM key); `build()` then only signs an unsubscribe token (naming the
subscriber's id), substitutes the placeholders in the small tail of each part, encodes that
tail, and writes the headers.

The headers are written here rather than by `email.message.EmailMessage`: serialising a 100 KB
message with the email package costs milliseconds per reader, and `policy.SMTP` folds a long
List-Unsubscribe URL into an encoded-word (`=?utf-8?q?...?=`) that mail clients do not decode
there. Every header value is forced onto one line (CR/LF cannot come through from data) and
every folding point is chosen here; the tests parse the result back with the email package.
"""

from __future__ import annotations

import binascii
import datetime as dt
import os
import re
import time
from email.utils import format_datetime, formataddr, parseaddr
from html import escape

from . import signing
from .bounces.verp import UNSUBSCRIBE, TokenCodec
from .config import Config, check_dkim
from .errors import ConfigError, PublisherError
from .newsletter import (
    PLACEHOLDER_EMAIL,
    PLACEHOLDER_UNSUBSCRIBE,
    PLACEHOLDERS,
    Newsletter,
    one_line,
)
from .site import base_url
from .tokens import Signer

CRLF = b"\r\n"
_B64_LINE = 57  # raw bytes per 76-character base64 line (RFC 2045)
_WORD_BYTES = 42  # UTF-8 bytes per encoded-word: "=?utf-8?b?" + 56 + "?=" fits a 78-char line
_PLACEHOLDER_RE = re.compile(("(" + "|".join(PLACEHOLDERS) + ")").encode())
_EMAIL, _UNSUB = (p.encode() for p in (PLACEHOLDER_EMAIL, PLACEHOLDER_UNSUBSCRIBE))
_BAD_ADDRESS = re.compile(r"[\s\x00-\x1f\x7f<>,;\"\\]")


class AddressError(PublisherError):
    """A recipient address that cannot be written into a header."""


def sender_domain(cfg: Config) -> str:
    """The domain of `[email] from` (for Message-ID, List-Id and the derived mailto)."""
    addr = parseaddr(cfg.email.from_)[1]
    if "@" not in addr:
        raise ConfigError(f"{cfg.path}: 'email.from' has no address with a domain: {addr!r}")
    return addr.rpartition("@")[2].lower()


def unsubscribe_url(cfg: Config, token: str) -> str:
    """The one-click unsubscribe URL for a signed token (served by the web server)."""
    return f"{base_url(cfg)}unsubscribe/{token}"


def unsubscribe_mailto(cfg: Config) -> str:
    """`[email] unsubscribe_mailto`, or the From address, as a mailto: URL."""
    target = one_line(cfg.email.unsubscribe_mailto) or parseaddr(cfg.email.from_)[1]
    if target.lower().startswith("mailto:"):
        return target
    return f"mailto:{target}?subject=unsubscribe"


def _list_slug(cfg: Config) -> str:
    return re.sub(r"[^a-z0-9]+", "-", cfg.site.title.lower()).strip("-") or "newsletter"


def list_id(cfg: Config) -> str:
    """`[email] list_id`, or "<title> <slug.domain>" derived from the site title and From."""
    if cfg.email.list_id:
        value = one_line(cfg.email.list_id)
        return value if "<" in value else f"<{value.strip('<>')}>"
    return f"{encode_phrase(one_line(cfg.site.title))} <{_list_slug(cfg)}.{sender_domain(cfg)}>"


_FEEDBACK_ID = re.compile(r"^[\x21-\x7e]{1,200}$")


def feedback_id(cfg: Config, date: dt.date) -> str:
    """The Feedback-ID header value (Gmail's feedback loop), `CampaignID:...:SenderId`.

    `[email] feedback_id`, with `{date}` replaced by the issue's date as YYYYMMDD; by default
    "YYYYMMDD:<slug of the site title>:digest:<From domain>" (the issue is the campaign, the
    From domain the constant sender id). Printable ASCII without spaces, else a ConfigError.
    """
    template = cfg.email.feedback_id or f"{{date}}:{_list_slug(cfg)}:digest:{sender_domain(cfg)}"
    try:
        value = template.format(date=f"{date:%Y%m%d}")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{cfg.path}: 'email.feedback_id' may use only {{date}}: {exc}") from None
    if not _FEEDBACK_ID.match(value):
        raise ConfigError(
            f"{cfg.path}: 'email.feedback_id' must be printable ASCII without spaces "
            f"(fields separated by ':'), not {value!r}"
        )
    return value


def encode_words(text: str) -> str:
    """RFC 2047 base64 encoded-words for `text`, folded with CRLF SP; decodes to exactly `text`.

    Cut on character boundaries; a decoder joins adjacent encoded-words without the folding
    whitespace between them, so nothing is added or lost.
    """
    words, chunk, size = [], [], 0
    for ch in text:
        n = len(ch.encode())
        if size + n > _WORD_BYTES and chunk:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(ch)
        size += n
    if chunk:
        words.append("".join(chunk))
    encoded = (
        "=?utf-8?b?" + binascii.b2a_base64(w.encode(), newline=False).decode() + "?=" for w in words
    )
    return "\r\n ".join(encoded)


def _needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text or not text.isprintable()


def encode_unstructured(text: str, name_len: int) -> str:
    """A one-line unstructured value (Subject), folded at spaces: ASCII words stay readable.

    Only runs of words that need it (non-ASCII, or "=?") become RFC 2047 encoded-words; the
    spaces inside a run are encoded with it (a decoder drops the whitespace between two
    encoded-words), the spaces around it are plain, so the value decodes to exactly `text`.
    """
    text = one_line(text)
    atoms: list[str] = []
    run: list[str] = []
    for word in [*text.split(" "), None]:
        if word is not None and _needs_encoding(word):
            run.append(word)
            continue
        if run:
            atoms += encode_words(" ".join(run)).split("\r\n ")
            run = []
        if word is not None:
            atoms.append(word)
    lines, line = [], ""
    width = 78 - name_len - 2
    for word in atoms:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line, width = word, 77
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


def encode_phrase(name: str) -> str:
    """A display name for an address header: quoted if needed, encoded if not ASCII."""
    name = one_line(name)
    if _needs_encoding(name):
        return encode_words(name)
    return formataddr((name, "x@x"))[: -len(" <x@x>")] if name else ""


def format_address(name: str, addr: str) -> str:
    phrase = encode_phrase(name)
    return f"{phrase} <{addr}>" if phrase else addr


def check_address(email: str) -> str:
    """The address itself, refused if it could break out of a header (spaces, CR/LF, <>...)."""
    addr = email.strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or _BAD_ADDRESS.search(addr):
        raise AddressError(f"not a usable email address: {email!r}")
    return addr


def _b64(data: bytes) -> bytes:
    """Base64 in 76-character lines, each ending with CRLF."""
    return b"".join(
        binascii.b2a_base64(data[i : i + _B64_LINE], newline=False) + CRLF
        for i in range(0, len(data), _B64_LINE)
    )


class _Part:
    """One text/* part: base64 computed once up to the line holding the first placeholder."""

    __slots__ = ("head", "tail")

    def __init__(self, content_type: str, content: str) -> None:
        # RFC 2045: text is in canonical form (CRLF line breaks) before base64.
        body = content.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        found = [i for p in PLACEHOLDERS if (i := body.find(p.encode())) >= 0]
        first = min(found, default=len(body))
        cut = first - first % _B64_LINE  # base64 lines of the prefix are final
        self.head = (
            f'Content-Type: {content_type}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode() + _b64(body[:cut])
        # bytes, not str: the cut may fall inside a multi-byte character
        self.tail = _PLACEHOLDER_RE.split(body[cut:])

    def render(self, values: dict[bytes, bytes]) -> bytes:
        pieces = [values[p] if i % 2 else p for i, p in enumerate(self.tail)]
        return self.head + _b64(b"".join(pieces))


class MessageFactory:
    """Builds one newsletter's message for each subscriber; all shared work happens once here."""

    def __init__(self, newsletter: Newsletter, cfg: Config, secret: bytes) -> None:
        self.newsletter = newsletter
        self.cfg = cfg
        self._unsubscribe_signer = Signer(secret, "unsubscribe")
        self.domain = sender_domain(cfg)
        from_name, from_addr = parseaddr(one_line(cfg.email.from_))
        self._unsub_base = unsubscribe_url(cfg, "")
        self._mailto = unsubscribe_mailto(cfg)
        # `unsubscribe+{token}@...`: each reader's own signed token (publisher/bounces/verp.py),
        # so a mail to it unsubscribes exactly that reader (`publisher bounces import`).
        self._mailto_tokens = (
            TokenCodec([secret], UNSUBSCRIBE) if "{token}" in self._mailto else None
        )
        self._tz = cfg.tz
        self._date_second = -1
        self._date = ""
        self._id_prefix = f"{newsletter.date:%Y%m%d}.{os.getpid()}"
        self._boundary = f"=_pub_{os.urandom(12).hex()}"
        subject = encode_unstructured(newsletter.subject, len("Subject"))
        fixed = [
            f"From: {format_address(from_name, check_address(from_addr))}",
            f"Subject: {subject}",
            "MIME-Version: 1.0",
        ]
        if cfg.email.reply_to:
            rname, raddr = parseaddr(one_line(cfg.email.reply_to))
            fixed.append(f"Reply-To: {format_address(rname, check_address(raddr))}")
        fixed += [
            f"List-Id: {list_id(cfg)}",
            f"Feedback-ID: {feedback_id(cfg, newsletter.date)}",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            f'Content-Type: multipart/alternative; boundary="{self._boundary}"',
        ]
        self._fixed = ("\r\n".join(fixed) + "\r\n").encode()
        self._text = _Part("text/plain", newsletter.text)
        self._html = _Part("text/html", newsletter.html)
        b = self._boundary.encode()
        self._sep = b"--" + b + CRLF
        self._end = b"--" + b + b"--" + CRLF
        self._dkim = self._dkim_settings(cfg)

    @staticmethod
    def _dkim_settings(cfg: Config) -> tuple[bytes, bytes, bytes] | None:
        """(selector, domain, key) when signing; the key is read and tried here, once."""
        check_dkim(cfg)  # also for a Config not from load_config: all three keys or none
        d = cfg.email.dkim
        if not d.enabled:
            return None
        return d.selector.encode(), d.domain.encode(), signing.load_key(cfg)

    @property
    def dkim(self) -> tuple[str, str] | None:
        """(selector, domain) the messages are signed with, or None when unsigned."""
        return (self._dkim[0].decode(), self._dkim[1].decode()) if self._dkim else None

    @property
    def dkim_key(self) -> bytes | None:
        return self._dkim[2] if self._dkim else None

    def _date_header(self) -> str:
        # formatting a date costs more than everything else in a header; once a second is enough
        now = time.time()
        if int(now) != self._date_second:
            self._date_second = int(now)
            self._date = format_datetime(dt.datetime.fromtimestamp(int(now), self._tz))
        return self._date

    def unsubscribe_url(self, subscriber_id: int) -> str:
        """The reader's link: an opaque token naming the subscriber's id (publisher/tokens.py)."""
        return self._unsub_base + self._unsubscribe_signer.sign_id(subscriber_id)

    def build(self, email: str, name: str = "", subscriber_id: int | None = None) -> bytes:
        """The complete message for one reader, CRLF line endings, DKIM-signed if configured.
        `subscriber_id` (the ledger row's) is what the unsubscribe link and a `{token}` mailto
        address name; a preview, which has none, uses id 0, which no subscriber has."""
        subscriber_id = subscriber_id or 0
        addr = check_address(email)
        url = self.unsubscribe_url(subscriber_id)
        name = one_line(name)
        mailto = self._mailto
        if self._mailto_tokens is not None:
            token = self._mailto_tokens.sign(subscriber_id, self.newsletter.date)
            mailto = mailto.replace("{token}", token)
        headers = (
            f"To: {format_address(name, addr)}\r\n"
            f"Date: {self._date_header()}\r\n"
            f"Message-ID: <{self._id_prefix}.{os.urandom(8).hex()}@{self.domain}>\r\n"
            f"List-Unsubscribe: <{url}>,\r\n <{mailto}>\r\n"
        ).encode()
        text = self._text.render({_EMAIL: addr.encode(), _UNSUB: url.encode()})
        html = self._html.render({_EMAIL: escape(addr).encode(), _UNSUB: escape(url).encode()})
        message = b"".join(
            (headers, self._fixed, CRLF, self._sep, text, self._sep, html, self._end)
        )
        if self._dkim is not None:
            message = self._sign(message)
        return message

    def _sign(self, message: bytes) -> bytes:
        selector, domain, key = self._dkim  # type: ignore[misc]
        return signing.sign(message, selector, domain, key) + message
