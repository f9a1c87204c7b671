"""DKIM for every mail sent: the key checked once up front, oversigning, an offline self-check.

`load_key()` reads `[email.dkim] key_file` and signs a tiny message with it, so an unreadable
file or a key dkimpy cannot use is one ConfigError naming the file before any reader's message
is built. `sign()` lists every covered header name once more than it occurs (oversigning), so a
second From, Subject or List-Unsubscribe added in transit breaks the signature. `verify_offline()`
checks a signature against the public half of the private key (no DNS), for the dry run.

dkimpy is imported inside the functions: it is slow to import and only signing needs it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from .config import Config, check_dkim
from .errors import ConfigError
from .state.files import warn_if_exposed

CRLF = b"\r\n"
# DKIM covers these (when present); dkimpy's default list leaves out List-Unsubscribe-Post,
# and RFC 8058 asks that both List-Unsubscribe headers be signed.
SIGNED_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"Reply-To",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"Feedback-ID",
    b"Auto-Submitted",
)
# Listed in h= once more than they occur (RFC 6376 8.15): the extra entry signs "no further
# header of this name", so one added in transit (above or below ours) fails verification.
# Reply-To is listed even when absent, so none can be added.
OVERSIGNED = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"Reply-To",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
    b"Feedback-ID",
)
_PROBE = (
    b"From: probe@example.invalid\r\nTo: probe@example.invalid\r\nSubject: key check\r\n"
    b"\r\nkey check\r\n"
)


def header_names(message: bytes) -> list[bytes]:
    """The lower-cased names of a message's header fields, in order, repeats included."""
    head = message.split(CRLF + CRLF, 1)[0]
    return [
        line.split(b":", 1)[0].strip().lower()
        for line in head.split(CRLF)
        if line and line[:1] not in (b" ", b"\t")
    ]


def include_headers(names: Sequence[bytes]) -> list[bytes]:
    """h= for a message with these header names: each covered one, oversigned ones +1."""
    counts: dict[bytes, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    out: list[bytes] = []
    for h in SIGNED_HEADERS:
        n = counts.get(h.lower(), 0)
        out += [h] * (n + 1 if h in OVERSIGNED else n)
    return out


def sign(message: bytes, selector: bytes, domain: bytes, key: bytes) -> bytes:
    """The DKIM-Signature header line(s) for `message` (relaxed/relaxed, rsa-sha256)."""
    import dkim

    return dkim.sign(
        message,
        selector,
        domain,
        key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include_headers(header_names(message)),
        linesep=CRLF,
    )


def load_key(cfg: Config) -> bytes:
    """`[email.dkim] key_file`'s bytes, proven usable by signing a tiny message with it."""
    import dkim

    d = cfg.email.dkim
    where = f"{cfg.path}: 'email.dkim.key_file' {d.key_file}"
    try:
        key = d.key_file.read_bytes()  # type: ignore[union-attr]
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    try:
        sign(_PROBE, d.selector.encode(), d.domain.encode(), key)
    except (dkim.DKIMException, ValueError, IndexError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(
            f"{where} is not a usable private key (PEM, RSA, PKCS#1 or PKCS#8): {reason}"
        ) from None
    # The key signs as the domain: a usable key others can read is a WARNING (once a process).
    warn_if_exposed(d.key_file, "DKIM key")  # type: ignore[arg-type]
    return key


DkimSettings = tuple[bytes, bytes, bytes]  # (selector, domain, private key)


def dkim_settings(cfg: Config) -> DkimSettings | None:
    """(selector, domain, key) when `[email.dkim]` is set, else None; the key is read and tried
    (`load_key`). Every mail this project sends is signed with these (`signed`)."""
    check_dkim(cfg)  # also for a Config not from load_config: all three keys or none
    d = cfg.email.dkim
    if not d.enabled:
        return None
    return d.selector.encode(), d.domain.encode(), load_key(cfg)


def signed(message: bytes, settings: DkimSettings | None) -> bytes:
    """`message` with its DKIM-Signature header in front, or unchanged when not signing."""
    if settings is None:
        return message
    selector, domain, key = settings
    return sign(message, selector, domain, key) + message


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + body


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_RSA_ALGORITHM = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")


def public_key(key: bytes) -> str:
    """The base64 SubjectPublicKeyInfo of a PEM RSA private key: the DNS record's p= value."""
    from dkim.crypto import parse_pem_private_key

    pk = parse_pem_private_key(key)
    rsa = _der(0x30, _der_int(pk["modulus"]) + _der_int(pk["publicExponent"]))
    spki = _der(0x30, _RSA_ALGORITHM + _der(0x03, b"\x00" + rsa))
    return base64.b64encode(spki).decode()


def dns_record(key: bytes) -> bytes:
    """The TXT record to publish at SELECTOR._domainkey.DOMAIN for this private key."""
    return f"v=DKIM1; k=rsa; p={public_key(key)}".encode()


def verify_offline(message: bytes, key: bytes) -> tuple[bool, str]:
    """Verify `message`'s DKIM signature against `key`'s public half instead of DNS.

    Returns (ok, what was checked or why it failed). Proves the signature and key match; not
    that the record is published.
    """
    import dkim

    record = dns_record(key)
    asked: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record

    verifier = dkim.DKIM(message)
    try:
        ok = verifier.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        return False, " ".join(str(exc).split())
    name = asked[0].decode().rstrip(".") if asked else "?"
    if ok:
        return True, f"verified offline against the key's public half (as if {name} TXT)"
    return False, "signature does not verify against the key's public half"
