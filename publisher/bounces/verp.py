"""Short signed tokens for the VERP return path and the List-Unsubscribe mailto address.

A token names a subscriber (its id) and a digest (its date) and carries a truncated HMAC over
both and its purpose, so a bounce to ``bounces+{token}@example.org`` names its reader without
guessing, and a mail to ``unsubscribe+{token}@example.org`` unsubscribes exactly that reader. A
VERP token is no unsubscribe token and the other way round (the purpose is in the MAC).

The token is lower-case base32 (a-z, 2-7): some MTAs lower-case local parts, and base32 does not
care. 11 bytes (id 4, day 2, MAC 5) make 18 characters. A 40-bit MAC is plenty here: a forger
gets one guess per mail he sends, and a forged bounce can at most count one bounce.

`TokenCodec` keys the HMAC once (like `tokens.Signer`) and copies it per token, so the send path
pays about a microsecond a message. Verification takes a list of candidate secrets (the current
one first, then retired ones), so rotating the secret keeps older tokens working.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import PublisherError

VERP, UNSUBSCRIBE = "verp", "unsubscribe"
PURPOSES = (VERP, UNSUBSCRIBE)
_EPOCH = dt.date(2000, 1, 1)
_PAYLOAD = struct.Struct(">IH")
_MAC_BYTES = 5
TOKEN_LENGTH = 18  # base32 of 11 bytes, unpadded
_TOKEN_RE = re.compile(rf"^[a-z2-7]{{{TOKEN_LENGTH}}}$")


class BadToken(PublisherError):
    """A token that is malformed, forged (wrong MAC) or expired."""


@dataclass(frozen=True, slots=True)
class TokenData:
    subscriber_id: int
    digest_date: dt.date


class TokenCodec:
    """Signs and verifies tokens for one purpose; `secrets[0]` signs, any of them verifies."""

    __slots__ = ("_keyed", "purpose")

    def __init__(self, secrets: Sequence[bytes], purpose: str) -> None:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        if not secrets:
            raise ValueError("at least one secret is needed")
        self.purpose = purpose
        prefix = f"publisher-{purpose}\x00".encode()
        self._keyed = [hmac.new(s, prefix, hashlib.sha256) for s in secrets]

    def sign(self, subscriber_id: int, digest_date: dt.date) -> str:
        day = (digest_date - _EPOCH).days
        payload = _PAYLOAD.pack(subscriber_id & 0xFFFFFFFF, min(max(day, 0), 0xFFFF))
        mac = self._keyed[0].copy()
        mac.update(payload)
        raw = payload + mac.digest()[:_MAC_BYTES]
        return base64.b32encode(raw).decode("ascii").rstrip("=").lower()

    def verify(
        self, token: str, *, today: dt.date | None = None, max_age_days: int = 0
    ) -> TokenData:
        """The subscriber and digest a valid token names; BadToken if it is malformed, its MAC
        matches none of the secrets, or (with `max_age_days` > 0) its digest is older."""
        token = token.strip().lower()
        if not _TOKEN_RE.match(token):
            raise BadToken(f"malformed {self.purpose} token {token[:40]!r}")
        try:
            raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            raise BadToken(f"malformed {self.purpose} token {token!r}") from None
        payload, given = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(payload)
            if hmac.compare_digest(mac.digest()[:_MAC_BYTES], given):
                break
        else:
            raise BadToken(f"forged {self.purpose} token {token!r} (signature does not match)")
        sub_id, day = _PAYLOAD.unpack(payload)
        date = _EPOCH + dt.timedelta(days=day)
        if max_age_days > 0:
            today = today or dt.datetime.now(dt.UTC).date()
            if (today - date).days > max_age_days:
                raise BadToken(
                    f"expired {self.purpose} token {token!r} (digest {date}, older than "
                    f"{max_age_days} days)"
                )
        return TokenData(sub_id, date)


def split_template(template: str) -> tuple[str, str]:
    """`"bounces+{token}@example.org"` -> ("bounces+", "@example.org"); ValueError without a
    single {token} in the local part."""
    if template.count("{token}") != 1:
        raise ValueError("must contain {token} exactly once")
    before, after = template.split("{token}")
    if "@" in before or not after.startswith("@") or after.count("@") != 1:
        raise ValueError("{token} must end the local part, e.g. bounces+{token}@example.org")
    return before, after


def address_pattern(template: str) -> re.Pattern[str]:
    """A regex matching the addresses made from `template`; group 1 is the token."""
    before, after = split_template(template)
    return re.compile(
        re.escape(before) + rf"([a-z2-7]{{{TOKEN_LENGTH}}})" + re.escape(after), re.IGNORECASE
    )


class ReturnPath:
    """The VERP envelope sender for each message: `template` with a fresh token."""

    __slots__ = ("_after", "_before", "_codec")

    def __init__(self, template: str, secret: bytes) -> None:
        self._before, self._after = split_template(template)
        self._codec = TokenCodec([secret], VERP)

    def address(self, subscriber_id: int, digest_date: dt.date) -> str:
        return self._before + self._codec.sign(subscriber_id, digest_date) + self._after
