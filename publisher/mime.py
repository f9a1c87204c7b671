"""How every message this project mails is written: the newsletter (publisher/mailer.py, per
reader) and the double opt-in confirmation (publisher/web_mail.py).

One home for what both need, so they cannot drift apart: header values forced onto one line
and encoded per RFC 2047, addresses refused if they could break out of a header, the From,
Reply-To, Date and Message-ID headers (the Message-ID on the From domain), base64 text parts in
76-character lines, and `compose()` for a plain text+HTML message. DKIM signing is
publisher/dkim.py. Headers are written by hand rather than by `email.message.EmailMessage`
(see publisher/mailer.py for why); the tests parse the result back with the email package.

Light on purpose: the web server imports it without the newsletter renderer.
"""

from __future__ import annotations

import binascii
import datetime as dt
import os
import re
from email.utils import format_datetime, formataddr, parseaddr

from .config import Config
from .errors import ConfigError, PublisherError

CRLF = b"\r\n"
B64_LINE = 57  # raw bytes per 76-character base64 line (RFC 2045)
_WORD_BYTES = 42  # UTF-8 bytes per encoded-word: "=?utf-8?b?" + 56 + "?=" fits a 78-char line


def one_line(text: str) -> str:
    """Collapse every whitespace run (CR, LF, tab, U+2028...) to one space: safe in a header."""
    return " ".join(text.split())


_BAD_ADDRESS = re.compile(r"[\s\x00-\x1f\x7f<>,;\"\\]")


class AddressError(PublisherError):
    """A recipient address that cannot be written into a header."""


def sender_domain(cfg: Config) -> str:
    """The domain of `[email] from` (Message-ID, List-Id, the derived mailto), for every mail."""
    addr = parseaddr(cfg.email.from_)[1]
    domain = addr.rpartition("@")[2]
    if "@" not in addr or not domain:
        raise ConfigError(f"{cfg.path}: 'email.from' has no address with a domain: {addr!r}")
    return domain.lower()


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


# A display name of only these needs neither quotes nor encoding (RFC 5322 atoms and spaces):
# most readers' names, written as they are without email.utils (once per message of a send).
_PLAIN_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")


def encode_phrase(name: str) -> str:
    """A display name for an address header: quoted if needed, encoded if not ASCII."""
    name = one_line(name)
    if _PLAIN_PHRASE.fullmatch(name):
        return name
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


def b64_lines(data: bytes) -> bytes:
    """Base64 in 76-character lines, each ending with CRLF."""
    # Encoded in one call, then cut into lines: one b2a_base64 call per line cost twice as much
    # (this runs twice per message of a send).
    encoded = binascii.b2a_base64(data, newline=False)
    if not encoded:
        return b""
    width = B64_LINE // 3 * 4
    return CRLF.join([encoded[i : i + width] for i in range(0, len(encoded), width)]) + CRLF


def canonical(text: str) -> bytes:
    """`text` as a text part's bytes: UTF-8 in canonical form, CRLF line breaks (RFC 2045)."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def part_head(content_type: str) -> bytes:
    """The header block of a UTF-8 text part sent as base64, blank line included."""
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()


def new_boundary() -> str:
    """A multipart boundary that no base64 line or header can contain."""
    return f"=_pub_{os.urandom(12).hex()}"


def from_header(cfg: Config) -> str:
    """`From:` from `[email] from`, the address checked and the name encoded if need be."""
    name, addr = parseaddr(one_line(cfg.email.from_))
    return f"From: {format_address(name, check_address(addr))}"


def reply_to_header(cfg: Config) -> str | None:
    """`Reply-To:` from `[email] reply_to`, or None when it is not set."""
    if not cfg.email.reply_to:
        return None
    name, addr = parseaddr(one_line(cfg.email.reply_to))
    return f"Reply-To: {format_address(name, check_address(addr))}"


def date_value(seconds: float, tz: dt.tzinfo) -> str:
    """A Date header value (RFC 5322) for this moment, whole seconds, in `tz`."""
    return format_datetime(dt.datetime.fromtimestamp(int(seconds), tz))


def message_id(prefix: str, domain: str) -> str:
    """A Message-ID value, `<PREFIX.RANDOM@DOMAIN>`: unique by its 64 random bits."""
    return f"<{prefix}.{os.urandom(8).hex()}@{domain}>"


def compose(headers: list[str], text: str, html: str) -> bytes:
    """A multipart/alternative message (text, then HTML, both base64) under these header
    lines, CRLF line endings; MIME-Version and Content-Type are added here."""
    boundary = new_boundary()
    sep = f"--{boundary}".encode() + CRLF
    head = [
        *headers,
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
    ]
    return b"".join(
        (
            ("\r\n".join(head) + "\r\n\r\n").encode(),
            sep,
            part_head("text/plain") + b64_lines(canonical(text)),
            sep,
            part_head("text/html") + b64_lines(canonical(html)),
            f"--{boundary}--".encode() + CRLF,
        )
    )
