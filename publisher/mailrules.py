"""Mail rules that the outbound and the inbound side both need, with no state and no I/O.

**One classifier** for every refusal and report: a 5xx to RCPT TO or at the end of DATA
(publisher/transport.py), a 5xx recorded during the send (publisher/delivery/) and each failed
recipient of a DSN or a non-standard bounce (publisher/bounces/parse.py).

The kinds (what the policy in publisher/state/bounces.py does with each):

- ``hard``: a permanent failure about the reader's address (unknown user or domain, disabled or
  moved mailbox): counts toward `[subscribers] bounce_limit`;
- ``blocked``: a refusal about us, not the reader (our IP or domain on a block list, spam or
  policy filter, authentication, 5.7.x, message too big, rate limits): never suppresses the
  reader, but `publisher status` counts it (our reputation or content has a problem);
- ``soft``: a temporary failure (mailbox full, 4.x.x, expired in the queue): suppresses only
  after `[bounces] soft_limit` on distinct days;
- ``complaint``, ``ignored`` and ``unsubscribe`` come from whole messages (publisher/bounces/parse);
- ``unverified``: a report with no valid VERP token while `[email] return_path` is set: anyone
  can mail the bounce address, so it is recorded with what it claimed and acts on nobody.

The order follows what the mature analysers (Sisimai, Mailman, boogie) do: the diagnostic text
first when it clearly names a cause (servers put 5.1.1 on block-list refusals and 5.7.1 on
unknown users more often than one would like), then the enhanced status code (RFC 3463), then
the basic reply code. `refusal_kind` is the same rule for a reply during the send. Kept free
of heavy imports: the SMTP transport imports it.

**VERP and mailto tokens.** A token names a subscriber (its id) and a digest (its date) and
carries a truncated HMAC over both and its purpose, so a bounce to
``bounces+{token}@example.org`` names its reader without guessing, and a mail to
``unsubscribe+{token}@example.org`` unsubscribes exactly that reader. A VERP token is no
unsubscribe token and the other way round (the purpose is in the MAC).

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

from .errors import PublisherError

HARD, SOFT, BLOCKED, COMPLAINT, IGNORED, UNSUBSCRIBE, UNVERIFIED = (
    "hard",
    "soft",
    "blocked",
    "complaint",
    "ignored",
    "unsubscribe",
    "unverified",
)
KINDS = (HARD, SOFT, BLOCKED, COMPLAINT, IGNORED, UNSUBSCRIBE, UNVERIFIED)

# About us or the message: never the reader's fault.
_BLOCKED = re.compile(
    r"block(ed|list|\s+list)|black\s*list|deny\s*list|denylist|spamhaus|spamcop|barracuda|"
    r"\brbl\b|\bdnsbl\b|\bbl\d+\b|listed (in|on|at)|on our block|reputation|"
    r"\bspam\b|junk mail|unsolicited|bulk mail|content (rejected|filter)|"
    r"policy (reasons|violation|rejection)|rejected (for|due to) policy|poor reputation|"
    r"\bdmarc\b|\bspf\b|\bdkim\b|unauthenticated|not authenticated|authentication (required|fail)|"
    r"rate limit|too many (messages|connections|recipients)|throttl|sending limit|"
    r"message (size|is too (big|large)|too (big|large)|exceeds)|size limit|too large|"
    r"virus|malware|phish|relay(ing)? (access )?denied|not permitted to relay|"
    r"ip .{0,40}(not allowed|refused|rejected)|sender (address )?(rejected|blocked|denied)|"
    r"client host .{0,60}rejected|access denied.{0,40}\bip\b",
    re.IGNORECASE,
)
# About the reader's address.
_ADDRESS = re.compile(
    r"(user|mailbox|recipient|address|account)\s*(name\s*)?(is\s*)?"
    r"(unknown|not found|does ?n.?t exist|not exist|unavailable|disabled|inactive|invalid|"
    r"not valid|deactivated|suspended|closed|expired)|"
    r"unknown (user|recipient|mailbox|address|local part)|no such (user|mailbox|recipient|person|"
    r"address|domain)|does not exist|doesn.t exist|invalid (recipient|mailbox|address)|"
    r"recipient address rejected|user doesn.t have|no mailbox|mailbox not found|"
    r"not our customer|no longer (active|available|valid)|has been disabled|"
    r"domain (not found|does not exist)|host (or domain name )?not found|"
    r"name service error|nxdomain|no mx|unrouteable|unroutable|bad destination",
    re.IGNORECASE,
)
# Full mailboxes, queues that gave up: temporary by nature, whatever the code says.
_TEMPORARY = re.compile(
    r"over ?quota|quota exceeded|mailbox (is )?full|mailbox size|insufficient (storage|space)|"
    r"exceeded storage|out of storage|try again later|temporar|delayed|"
    r"timed? ?out|expired in queue|message expired|retry time|greylist|graylist",
    re.IGNORECASE,
)
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC = re.compile(r"\b([245])\d\d\b")


def enhanced_status(text: str) -> str:
    """The first RFC 3463 status code in `text` ("5.1.1"), or ""."""
    m = _ENHANCED.search(text or "")
    return m.group(0) if m else ""


def classify(status: str = "", diagnostic: str = "", *, permanent: bool | None = None) -> str:
    """`hard`, `blocked` or `soft` for one failed recipient.

    `status` is the RFC 3463 code when known (a DSN's Status field); otherwise the first one in
    `diagnostic` is used, then a basic reply code. `permanent` is what the report said when it
    has no code at all (flufl.bounce tells permanent from temporary failures)."""
    text = diagnostic or ""
    status = status or enhanced_status(text)
    cls = status[:1] if status else ""
    if not cls:
        m = _BASIC.search(text)
        cls = m.group(1) if m else ""
    if cls == "2":
        return SOFT  # a delivered/relayed notice misfiled as failure: never counts hard
    if cls == "4":
        return SOFT
    if _BLOCKED.search(text):
        return BLOCKED
    subject, detail = _split(status)
    if subject == 7 or (subject, detail) in ((3, 4), (2, 3), (5, 3)):
        # 5.7.x security/policy; 5.3.4 / 5.2.3 message too big; 5.5.3 too many recipients
        return HARD if _ADDRESS.search(text) and subject != 7 else BLOCKED
    if subject == 2 and detail in (2,):
        return SOFT  # 5.2.2 mailbox full
    if _TEMPORARY.search(text):
        return SOFT
    if subject == 1 and detail in (7, 8):
        return BLOCKED  # 5.1.7 / 5.1.8: the *sender's* address is bad
    if subject in (1,) or (subject, detail) in ((2, 1), (4, 4), (4, 1)):
        return HARD
    if _ADDRESS.search(text):
        return HARD
    if subject == 4:
        return SOFT  # 5.4.x routing trouble other than "no such host": network, loops
    if cls == "5" or permanent:
        return HARD
    if permanent is False:
        return SOFT
    return SOFT


def _split(status: str) -> tuple[int, int]:
    m = _ENHANCED.match(status or "")
    if not m:
        return -1, -1
    return int(m.group(2)), int(m.group(3))


def smtp_refusal_kind(code: int, text: str) -> str:
    """The kind of a 5xx refusal during the send (RCPT TO or end of DATA)."""
    return classify(enhanced_status(text), f"{code} {text}")


def refusal_kind(code: int, text: bytes | str = "", *, after_rcpt: bool = False) -> str:
    """What a reply refusing one message during the send means for it: ``transient`` (4xx:
    retry), ``bounce`` (5xx about the reader's address: a hard bounce) or ``permanent`` (any
    other 5xx: this message is refused, the reader is not counted), by `classify`.

    `after_rcpt`: the reply to DATA or to the end of the message, once the server accepted the
    recipient. Then a 5xx is a bounce only when it names the address as the cause (a 5.1.x but
    5.1.7/5.1.8, which are the sender's; 5.2.1; or words like "user unknown"): a bare "554
    Transaction failed" there is about the message, not the reader."""
    if not 500 <= code <= 599:
        return "transient"
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if smtp_refusal_kind(code, text) != HARD:
        return "permanent"
    if after_rcpt and not _names_the_address(text):
        return "permanent"
    return "bounce"


def _names_the_address(text: str) -> bool:
    subject, detail = _split(enhanced_status(text))
    if (subject == 1 and detail not in (7, 8)) or (subject, detail) == (2, 1):
        return True
    return _ADDRESS.search(text) is not None


# -- VERP and mailto tokens ------------------------------------------------------------------

VERP = "verp"  # the other purpose is UNSUBSCRIBE, the mailto address (same name as the kind)
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

    @classmethod
    def of(cls, template: str, secret: bytes) -> ReturnPath | None:
        """The return path `[email] return_path` names (keyed once: a sender is then one HMAC
        copy and a base32 per message), or None to send from the From address."""
        return cls(template, secret) if template else None

    def address(self, subscriber_id: int, digest_date: dt.date) -> str:
        return self._before + self._codec.sign(subscriber_id, digest_date) + self._after
