"""HMAC-signed tokens for unsubscribe, preferences and confirmation links.

A token names its purpose and a subscriber and carries an HMAC-SHA256 (truncated to 128 bits)
over both, so it cannot be forged, altered, or reused for another purpose.

Two forms verify:

- the current one, `sign_id`/`Signer.sign_id`: base64url of a version byte, the subscriber's id
  (`subscribers.id`, minimal big-endian bytes; a confirmation token also carries its issue time)
  and the MAC. Nothing in it says who the reader is: an access log or a proxy along the way
  sees a number at most, never an address.
- the old one that earlier releases mailed, `sign`: `base64url(address).base64url(mac)`. It
  carries the address in clear, so it is no longer issued; links already mailed keep working.

The secret comes from the environment variable that `[web] secret_env` names, never from
config.toml; tokens signed with one of the previous secrets in `<secret_env>_PREVIOUS` still
verify (rotation, `secrets_from_env`). A secret must be hard to guess: zxcvbn must estimate at
least 2**128 guesses for it (`check_secret`); `publisher secret` prints one (`make_secret`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import math
import os
import re
import secrets as _secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import caches
from .config import Config
from .errors import PublisherError

# "message": a sent message's Message-ID names its ledger row (publisher/mailer.py), so a bounce
# or complaint that quotes it names the reader without the ledger storing any Message-ID.
PURPOSES = frozenset({"unsubscribe", "confirm", "manage", "message"})
# Used only by `send --dry-run` and tests when no secret is set: previews carry links that the
# real server will refuse, which is what a preview should do.
PREVIEW_SECRET = b"publisher-preview-secret-not-for-production"
# The rule for a signing secret (README "Web side"). One mailed token lets anyone test guesses
# offline, so a secret must resist a guessing attack, not merely look long: zxcvbn (Dropbox's
# estimator: repeats, sequences, keyboard runs, dates, dictionary words, l33t) must estimate at
# least 2**128 guesses. Its model counts a random character as 10 guesses, so it errs on the
# safe side: 32 random bytes as base64 (`publisher secret`, `openssl rand -base64 32`) score
# 10**42 or more, `abcdefgh` * 4 scores 10**2 and `mynewsletter-secret-key-2024-prod` 10**24.
# 16 random bytes as hex (32 characters) score about 10**28 and are refused: use 32 bytes.
MIN_SECRET_GUESSES_LOG10 = 128 * math.log10(2)  # 38.5
# zxcvbn's cost grows with the length (and it refuses more than 72 characters): a secret whose
# first 72 characters are strong is strong.
_ZXCVBN_MAX_CHARS = 72
SECRET_BYTES = 32
MAKE_SECRET = "publisher secret"

_VERSION = b"\x01"
_MAC_BYTES = 16  # 128 bits
_ISSUED_BYTES = 5  # seconds since the epoch, good until the year 36812
_MAX_ID_BYTES = 8
# The old form of a 320-character address (the longest email-validator takes) is 450 characters.
MAX_TOKEN_CHARS = 600


class TokenError(PublisherError):
    """A token is malformed, tampered with, or for another purpose."""


@dataclass(frozen=True, slots=True)
class Subject:
    """What a valid token names: a subscriber id (current form) or an address (old form), and
    for a confirmation the time it was issued."""

    subscriber_id: int | None = None
    email: str | None = None
    issued: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")


# ---------------------------------------------------------------------------------------------
# The current form: a signed subscriber id


def _id_prefix(purpose: str) -> bytes:
    # \x01 after the purpose where the old form has \x00: the two forms' MACs never collide.
    return f"{purpose}\x01".encode() + _VERSION


def _payload(subscriber_id: int, issued: int | None) -> bytes:
    if subscriber_id < 0 or subscriber_id >= 1 << (8 * _MAX_ID_BYTES):
        raise ValueError(f"subscriber id out of range: {subscriber_id}")
    raw = subscriber_id.to_bytes(max(1, (subscriber_id.bit_length() + 7) // 8), "big")
    if issued is not None:
        raw = int(issued).to_bytes(_ISSUED_BYTES, "big") + raw
    return raw


def sign_id(secret: bytes, purpose: str, subscriber_id: int, issued: float | None = None) -> str:
    """A URL-safe token for `purpose` naming subscriber `subscriber_id`; confirmation tokens
    (`issued` given) also carry their issue time."""
    _check_purpose(purpose)
    if (purpose == "confirm") != (issued is not None):
        raise ValueError("a confirmation token, and only it, carries its issue time")
    payload = _payload(subscriber_id, None if issued is None else int(issued))
    mac = hmac.new(secret, _id_prefix(purpose) + payload, hashlib.sha256).digest()
    return _b64(_VERSION + payload + mac[:_MAC_BYTES])


def _read_id(secrets: Iterable[bytes], token: str, purpose: str) -> Subject:
    try:
        raw = _unb64(token)
    except (ValueError, binascii.Error):
        raise TokenError("malformed token") from None
    if _b64(raw) != token:  # one spelling per token: no padding, no stray characters
        raise TokenError("malformed token")
    extra = _ISSUED_BYTES if purpose == "confirm" else 0
    payload, given = raw[1:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if raw[:1] != _VERSION or not extra < len(payload) <= extra + _MAX_ID_BYTES:
        raise TokenError("malformed token")
    msg = _id_prefix(purpose) + payload
    for secret in secrets:
        mac = hmac.new(secret, msg, hashlib.sha256).digest()[:_MAC_BYTES]
        if hmac.compare_digest(given, mac):
            issued = int.from_bytes(payload[:extra], "big") if extra else None
            return Subject(subscriber_id=int.from_bytes(payload[extra:], "big"), issued=issued)
    raise TokenError("invalid token")


class Signer:
    """Tokens for one purpose and many subscribers: the HMAC keyed with the secret and fed the
    purpose is set up once and copied per token (a fresh hmac.new per reader was a tenth of the
    per-message work of a send). `sign_id` gives `sign_id()`'s tokens, `sign` the old form's."""

    __slots__ = ("_id_prefix", "_prefix")

    def __init__(self, secret: bytes, purpose: str) -> None:
        _check_purpose(purpose)
        self._prefix = hmac.new(secret, f"{purpose}\x00".encode(), hashlib.sha256)
        self._id_prefix = hmac.new(secret, _id_prefix(purpose), hashlib.sha256)

    def sign_id(self, subscriber_id: int) -> str:
        # _payload inlined: this runs once per message of a send
        payload = subscriber_id.to_bytes((subscriber_id.bit_length() + 7) // 8 or 1, "big")
        if len(payload) > _MAX_ID_BYTES:
            raise ValueError(f"subscriber id out of range: {subscriber_id}")
        mac = self._id_prefix.copy()
        mac.update(payload)
        raw = _VERSION + payload + mac.digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def sign(self, subject: str) -> str:
        """The old form (the address in clear): kept for tests of links already mailed."""
        raw = subject.encode()
        mac = self._prefix.copy()
        mac.update(raw)
        return f"{_b64(raw)}.{_b64(mac.digest()[:_MAC_BYTES])}"


# ---------------------------------------------------------------------------------------------
# The old form: base64url(address).base64url(mac)


def _mac(secret: bytes, purpose: str, subject: str) -> bytes:
    msg = f"{purpose}\x00{subject}".encode()
    return hmac.new(secret, msg, hashlib.sha256).digest()[:_MAC_BYTES]


def sign(secret: bytes, purpose: str, subject: str) -> str:
    """The old form, naming `subject` (an address) in clear. No longer issued: it exists so that
    tests can make the links earlier releases mailed."""
    _check_purpose(purpose)
    return f"{_b64(subject.encode())}.{_b64(_mac(secret, purpose, subject))}"


def verify(secret: bytes | Iterable[bytes], token: str, purpose: str) -> str:
    """The subject (address) of a valid old-form token for `purpose`; TokenError otherwise."""
    secrets = [secret] if isinstance(secret, bytes) else list(secret)
    try:
        body, mac = token.split(".")
        subject = _unb64(body).decode()
        given = _unb64(mac)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed token") from None
    for key in secrets:
        if hmac.compare_digest(given, _mac(key, purpose, subject)):
            return subject
    raise TokenError("invalid token")


# ---------------------------------------------------------------------------------------------
# Either form


def read(secrets: Iterable[bytes], token: str, purpose: str) -> Subject:
    """What a valid token of either form for `purpose` names, under any of `secrets` (the
    current one first); TokenError otherwise. An old confirmation token's subject is
    `address|issued`, split here."""
    _check_purpose(purpose)
    secrets = list(secrets)
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed token")
    if "." not in token:
        return _read_id(secrets, token, purpose)
    subject = verify(secrets, token, purpose)
    if purpose != "confirm":
        return Subject(email=subject)
    email, sep, issued = subject.rpartition("|")
    if not sep or not issued.isdigit():
        raise TokenError("malformed confirmation token")
    return Subject(email=email, issued=int(issued))


# ---------------------------------------------------------------------------------------------
# Secrets


def make_secret() -> str:
    """A fresh signing secret: SECRET_BYTES random bytes as URL-safe base64 (43 characters)."""
    return _secrets.token_urlsafe(SECRET_BYTES)


def secret_strength(value: str) -> float:
    """log10 of the guesses zxcvbn estimates an attacker needs for `value`."""
    from zxcvbn import zxcvbn

    if not value:  # zxcvbn fails on an empty string
        return 0.0
    return float(zxcvbn(value[:_ZXCVBN_MAX_CHARS])["guesses_log10"])


def check_secret(value: str, where: str, variable: str) -> bytes:
    """`value` as bytes if it is a strong enough secret; PublisherError (one line, saying how to
    make a good one, never the value) otherwise. `where` prefixes the message (the config
    file)."""
    # A secret found strong before is not estimated again (publisher/caches.py: 30 ms a command).
    if caches.known_strong(value, MIN_SECRET_GUESSES_LOG10):
        return value.encode()
    strength = secret_strength(value)
    if strength < MIN_SECRET_GUESSES_LOG10:
        bits = int(strength / math.log10(2))
        raise PublisherError(
            f"{where}: ${variable} is too weak (guessable in about 2^{bits} tries, at least "
            f"2^128 needed); make one with `export {variable}=$({MAKE_SECRET})`"
        )
    caches.remember_strong(value, MIN_SECRET_GUESSES_LOG10)
    return value.encode()


def previous_variable(cfg: Config) -> str:
    """The environment variable with the previous secrets: `<secret_env>_PREVIOUS`."""
    return f"{cfg.web.secret_env}_PREVIOUS"


def secret_from_env(cfg: Config, *, required: bool = True) -> bytes:
    """The signing secret from the environment, refused if weak; PREVIEW_SECRET when not
    required and unset."""
    value = os.environ.get(cfg.web.secret_env, "") if cfg.web.secret_env else ""
    if value:
        return check_secret(value, str(cfg.path), cfg.web.secret_env)
    if required:
        raise PublisherError(
            f"{cfg.path}: 'web.secret_env' names ${cfg.web.secret_env}, which is not set; "
            "set it to a long random string, e.g. "
            f"`export {cfg.web.secret_env}=$({MAKE_SECRET})`"
        )
    return PREVIEW_SECRET


def secrets_from_env(cfg: Config) -> list[bytes]:
    """The secrets a token may be signed with: the current one (`secret_from_env`), then each in
    `<secret_env>_PREVIOUS` (separated by commas or whitespace), each held to the same rules."""
    current = secret_from_env(cfg)
    variable = previous_variable(cfg)
    previous = [
        check_secret(value, str(cfg.path), variable)
        for value in re.split(r"[\s,]+", os.environ.get(variable, ""))
        if value
    ]
    return [current, *(p for p in previous if p != current)]


def ledger_message_ids(signer: Signer, day: dt.date, domain: str) -> Callable[[int], str]:
    """The Message-IDs of one edition's messages, by ledger row (`signer`: purpose "message"):
    `<YYYYMMDD.TOKEN@domain>`, the token the row's id signed; unique as the row is (a retry
    of the row is the same message and keeps it), read back by `message_ledger_ids`. The
    day and domain are formatted once, here: the function returned runs once per message."""
    head, tail, sign = f"<{day:%Y%m%d}.", f"@{domain}>", signer.sign_id
    return lambda ledger_id: f"{head}{sign(ledger_id)}{tail}"


def ledger_message_id(signer: Signer, ledger_id: int, day: dt.date, domain: str) -> str:
    """The Message-ID of the message sent for one ledger row (see `ledger_message_ids`)."""
    return ledger_message_ids(signer, day, domain)(ledger_id)


# A Message-ID `ledger_message_id` made.
_OUR_MESSAGE_ID = re.compile(r"<?\d{8}\.([A-Za-z0-9_-]{4,80})@[^>\s]+>?")


def message_ledger_ids(secrets: Iterable[bytes], message_ids: Iterable[str]) -> list[int]:
    """The ledger rows named by those Message-IDs that are ours, signed with one of `secrets`
    (forged, foreign or mangled ones are skipped); at most 20 looked at."""
    found: list[int] = []
    for value in list(message_ids)[:20]:
        m = _OUR_MESSAGE_ID.fullmatch(value.strip())
        if m is None:
            continue
        try:
            subject = read(secrets, m.group(1), "message")
        except TokenError:
            continue
        if subject.subscriber_id is not None:
            found.append(subject.subscriber_id)  # the row's id, signed as an id
    return found
