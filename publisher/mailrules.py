"""Mail rules that the outbound and the inbound side both need, with no state and no I/O.

**One classifier** for every refusal and report: a 5xx to RCPT TO or at the end of DATA
(publisher/transport.py), a 5xx recorded during the send (publisher/delivery/) and each failed
recipient of a DSN or a non-standard bounce (publisher/bounces/parse.py).

Each gets a **cause** in Sisimai's reason taxonomy (`CAUSES`; Sisimai is the field's reference
bounce analyser, its reasons are documented in lib/Sisimai/Reason/*.pm), and the **kind**
follows from the cause (`CAUSE_KIND`; what the policy in publisher/state/bounces.py does):

- ``hard`` only when the address is gone (`userunknown`, `hostunknown`, `hasmoved`, and
  `notaccept`, a null MX): counts toward `[subscribers] bounce_limit`. A suspended or full
  mailbox may come back: soft, as Sisimai counts them;
- ``blocked`` for causes about us or our message (block lists, PTR, policy, spam, virus,
  content, size, DMARC/SPF/DKIM, relaying, our sender address, rate limits, our SMTP syntax),
  even when temporary: never suppresses the reader, `publisher status` counts it;
- ``soft`` for what may pass (mailbox full, suspended, expired in the queue, DNS or network
  trouble, their system, an unclear 5xx, any 4.x.x): suppresses only after `[bounces]
  soft_limit` on distinct days;
- ``complaint`` (`feedback`) and ``ignored`` (`vacation`, `delivered`) come from whole messages
  (publisher/bounces/parse.py); ``unsubscribe`` from the mailto address; ``unverified``: a
  report with no valid VERP token while `[email] return_path` is set: anyone can mail the
  bounce address, so it is recorded with what it claimed and acts on nobody.

The order follows what the mature analysers (Sisimai, Mailman, boogie) do: the diagnostic text
first when it names a cause (servers put 5.1.1 on block-list refusals and 5.7.1 on unknown
users more often than one would like), the causes about us before those about the address, a
queue that gave up or a DNS outage ("Name service error ... try again") before an unknown host;
then the enhanced status code (RFC 3463), then the basic reply code. `refusal_kind` is the same
rule for a reply during the send. Kept free of heavy imports: the SMTP transport imports it.

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
import functools
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

# -- causes ----------------------------------------------------------------------------------
#
# Every refusal or report gets a `cause` in Sisimai's reason taxonomy, and its kind follows from
# the cause (CAUSE_KIND). Like Sisimai, only the causes that say the address itself is gone are
# hard; a suspended or full mailbox may come back (soft), and a refusal about us or our message
# never counts against the reader (blocked), even when the server said 4xx.

ADDRESS_CAUSES = ("userunknown", "hostunknown", "hasmoved", "mailboxfull", "suspend")
SENDING_CAUSES = (
    "blocked",
    "policyviolation",
    "spamdetected",
    "virusdetected",
    "contenterror",
    "mesgtoobig",
    "securityerror",
    "norelaying",
    "rejected",
    "toomanyconn",
)
DELIVERY_CAUSES = (
    "expired",
    "networkerror",
    "systemerror",
    "mailererror",
    "syntaxerror",
    "notaccept",
    "filtered",
    "onhold",
    "undefined",
)
REPORT_CAUSES = ("feedback", "vacation", "delivered")
CAUSES = ADDRESS_CAUSES + SENDING_CAUSES + DELIVERY_CAUSES + REPORT_CAUSES

CAUSE_KIND = {
    "userunknown": HARD,
    "hostunknown": HARD,
    "hasmoved": HARD,
    # a domain that says it takes no mail at all (null MX, RFC 7505): as gone as an unknown host
    "notaccept": HARD,
    "mailboxfull": SOFT,
    "suspend": SOFT,
    **dict.fromkeys(SENDING_CAUSES, BLOCKED),
    # our own SMTP dialogue was refused: about us
    "syntaxerror": BLOCKED,
    **dict.fromkeys(
        ("expired", "networkerror", "systemerror", "mailererror", "filtered", "onhold"), SOFT
    ),
    "undefined": SOFT,
    "feedback": COMPLAINT,
    "vacation": IGNORED,
    "delivered": IGNORED,
}

# What the diagnostic text says, tried in this order, first match wins: refusals about us
# before the address causes (servers put 5.1.1 on block-list refusals), the queue giving up
# and the network before an unknown host ("Name service error ... try again" is a DNS outage).
_R = re.IGNORECASE
_CAUSE_TEXT: tuple[tuple[str, tuple[str, int]], ...] = (
    (
        "expired",
        (
            r"all hosts have been failing|retry time not reached|retry timeout exceeded|"
            r"delivery time expired|message expired|expired in queue|(queue|queued) too long|"
            r"in the queue too long|been in (the )?queue for|could not be delivered for more than|"
            r"delivery failed( after)? \d+ attempts|failed to deliver .{0,80} after \d+ tries|"
            r"giving up on|not reachable within the allowed queue|message timed out|"
            r"maximum time (in queue|for delivery)|lifetime exceeded|has been frozen",
            _R,
        ),
    ),
    (
        "networkerror",
        (
            r"name service error.{0,160}try again|host not found, try again|"
            r"temporary (dns|lookup|name resolution) failure|"
            r"temporary failure in name resolution|dns (lookup )?(failure|timeout)|"
            r"connection (refused|reset|timed out)|no route to host|network is unreachable|"
            r"lost connection|conversation with .{0,80} timed out",
            _R,
        ),
    ),
    (
        "toomanyconn",
        (
            r"receiving (e-?mail|mail) (at a rate|too quickly)|too many (connections|"
            r"concurrent|messages|recipients|sessions)|rate ?limit|throttl|sending limit|"
            r"relay quota|daily (sending |relay )?(quota|limit)|connection (limit|rate)",
            _R,
        ),
    ),
    (
        "mailboxfull",
        (
            r"over ?quota|quota (exceeded|full)|exceeded .{0,20}quota|mailbox (is )?full|"
            r"mailbox size|insufficient (storage|space|disk)|exceeded storage|out of storage|"
            r"storage (allocation|limit|full)|full mailbox|mailbox has exceeded|"
            r"not enough (space|storage)|disk full|user has too many messages",
            _R,
        ),
    ),
    (
        "norelaying",
        (
            r"relay(ing)? (access )?(denied|not (permitted|allowed))|not permitted to relay|"
            r"unable to relay|we do not relay|relay not permitted|no relaying",
            _R,
        ),
    ),
    (
        "virusdetected",
        (r"\bvirus|malware|infected|\bphish", _R),
    ),
    (
        "mesgtoobig",
        (
            r"message (size|is too (big|large)|too (big|large)|exceeds)|size limit|"
            r"too large|exceeds (the )?(maximum|max).{0,20}size|mail size",
            _R,
        ),
    ),
    (
        "spamdetected",
        (
            r"\bspam\b|junk mail|unsolicited|bulk mail|content looks like|"
            r"message (is|was) (identified|classified|considered) as|scored too high|"
            r"high probability of being",
            _R,
        ),
    ),
    (
        "securityerror",
        (
            r"\bdmarc\b|\bspf\b|\bdkim\b|unauthenticated|not authenticated|"
            r"authentication (required|fail)|must use (tls|starttls)|requires? (tls|starttls)|"
            r"tls (is )?required|encryption required|certificate",
            _R,
        ),
    ),
    (
        "blocked",
        (
            r"block(ed|list|\s+list)|black\s*list|deny\s*list|denylist|spamhaus|spamcop|"
            r"barracuda|\brbl\b|\bdnsbl\b|(?<!not )listed (in|on|at)|on our block|reputation|"
            r"\bptr\b|reverse (dns|lookup)|rdns|client host .{0,60}rejected|"
            r"ip .{0,40}(not allowed|refused|rejected)|access denied.{0,40}\bip\b|"
            r"connections? (not accepted|refused) from|your (ip|host|server) (address )?is",
            _R,
        ),
    ),
    (
        "rejected",
        (
            r"sender (address |domain )?(rejected|blocked|denied|refused|is invalid|"
            r"verify failed|not allowed)|unroutable sender|unrouteable sender|"
            r"sender (domain|address) (does not exist|not found|must)|valid (sender|from)\b|"
            r"without a valid sender|sender verification|mail from .{0,80} (rejected|refused)|"
            r"domain of sender|bad sender|sender (address )?domain|"
            r"sender .{0,40}not (exist|resolve)",
            _R,
        ),
    ),
    (
        "policyviolation",
        (
            r"denied by policy|protocol violation|policy (reasons|violation|rejection)|"
            r"rejected (for|due to) (local )?policy|not accepted for policy|"
            r"refused by policy|header error|messages with multiple addresses|"
            r"closed mailing list|administrative prohibition|prohibited by administrator",
            _R,
        ),
    ),
    (
        "contenterror",
        (
            r"content (rejected|filter|not accepted)|message content|improper use of 8-bit|"
            r"illegal (character|header)|header (line )?too long|invalid (mime|header)|"
            r"attachment (rejected|not allowed|type)|rejected .{0,20}attachment",
            _R,
        ),
    ),
    (
        "syntaxerror",
        (
            r"syntax error|command (parameter )?not (implemented|recognized)|"
            r"command unrecognized|bad sequence of commands|parameter not implemented",
            _R,
        ),
    ),
    (
        "hasmoved",
        (
            r"has moved|address has changed|user not local|moved to|"
            r"no longer (at|with|uses?) this|changed (his|her|their) (e-?mail )?address",
            _R,
        ),
    ),
    (
        "suspend",
        (
            r"suspend|\bdisabled|deactivated|\binactive|\blocked\b|is locked|frozen|"
            r"discontinued|account (has been )?(closed|expired)|mailbox (closed|expired)|"
            r"not active",
            _R,
        ),
    ),
    (
        "notaccept",
        (
            r"does not accept (e-?mail|mail)|accepts? no mail|null mx|not accepting (any )?mail|"
            r"domain .{0,40}does not receive mail",
            _R,
        ),
    ),
    (
        "hostunknown",
        (
            r"host (or domain name )?(not found|unknown)|unknown host|"
            r"domain (not found|does not exist|name not found|unknown|is invalid)|"
            r"no such domain|nxdomain|\bno mx\b|no (valid )?mx|unrouteable|unroutable|"
            r"name service error|couldn.t find any host|could not find .{0,20}host|"
            r"unknown domain|invalid domain|domain .{0,60} no(t| longer)? exist",
            _R,
        ),
    ),
    (
        "userunknown",
        (
            r"(user|mailbox|recipient|address|account|e-?mail account)\s*(name\s*)?(is\s*)?"
            r"(unknown|not found|does ?n.?t exist|not exist|unavailable|invalid|not valid)|"
            r"unknown (user|recipient|mailbox|address|local part|alias)|"
            r"no such (user|mailbox|recipient|person|address)|does not exist|doesn.t exist|"
            r"invalid (recipient|mailbox|address)|recipient address rejected|"
            r"user doesn.t have|no mailbox|mailbox not found|not our customer|"
            r"no longer (active|available|valid)|recipientnotfound|not a valid (mailbox|user)|"
            r"user not found|undeliverable address|address rejected|no account|"
            r"is not a known user|unknown or illegal alias|not listed in|"
            r"bad destination|destination mailbox|mailbox unavailable|invalid-mailbox|"
            r"no such address|unknown local|account (unknown|not exist)",
            _R,
        ),
    ),
    (
        "systemerror",
        (
            r"system (config(uration)? )?error|local (error|configuration)|mail loop|"
            r"too many hops|loop(s)? (back|detected)|routing loop|internal (server )?error|"
            r"server (error|failure)|system (not )?available|out of memory|resources? "
            r"(unavailable|limit)|service unavailable|remote server (error|failure)",
            _R,
        ),
    ),
    (
        "mailererror",
        (
            r"procmail|mailer error|command (died|failed)|exit (code|status)|\bx-unix\b|"
            r"pipe to .{0,60} (failed|returned)|maildrop|delivery to .{0,40}program",
            _R,
        ),
    ),
    (
        "filtered",
        (
            r"filter(ed)? |rejected by (the )?recipient|only accepting mail from|"
            r"user refuses|recipient refuses|refused by (the )?recipient|"
            r"does not wish to receive",
            _R,
        ),
    ),
)

# The RFC 3463 status code's own meaning, when the text names no cause.
_CAUSE_STATUS = {
    (1, 0): "userunknown",
    (1, 1): "userunknown",
    (1, 2): "hostunknown",
    (1, 3): "userunknown",
    (1, 4): "userunknown",
    (1, 5): "delivered",
    (1, 6): "hasmoved",
    (1, 7): "rejected",
    (1, 8): "rejected",
    (1, 9): "systemerror",
    (1, 10): "notaccept",
    (2, 0): "filtered",
    (2, 1): "suspend",
    (2, 2): "mailboxfull",
    (2, 3): "mesgtoobig",
    (2, 4): "systemerror",
    (3, 0): "systemerror",
    (3, 1): "mailboxfull",
    (3, 2): "systemerror",
    (3, 3): "systemerror",
    (3, 4): "mesgtoobig",
    (3, 5): "systemerror",
    (4, 0): "networkerror",
    (4, 1): "networkerror",
    (4, 2): "networkerror",
    (4, 3): "networkerror",
    (4, 4): "hostunknown",
    (4, 5): "toomanyconn",
    (4, 6): "systemerror",
    (4, 7): "expired",
    (7, 0): "securityerror",
    (7, 1): "securityerror",
    (7, 23): "securityerror",
    (7, 25): "blocked",
    (7, 26): "securityerror",
}
_CAUSE_SUBJECT = {
    1: "userunknown",
    2: "mailboxfull",
    3: "systemerror",
    4: "networkerror",
    5: "syntaxerror",
    6: "contenterror",
    7: "securityerror",
}
# A basic reply code alone (RFC 5321 4.2.3).
_CAUSE_REPLY = {
    "421": "toomanyconn",
    "450": "onhold",
    "451": "systemerror",
    "452": "mailboxfull",
    "500": "syntaxerror",
    "501": "syntaxerror",
    "502": "syntaxerror",
    "503": "syntaxerror",
    "504": "syntaxerror",
    "550": "undefined",  # alone, it names no cause (the words usually do)
    "551": "hasmoved",
    "552": "mailboxfull",
    "553": "undefined",
    "554": "undefined",
}
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_BASIC = re.compile(r"\b([245]\d\d)\b")


def enhanced_status(text: str) -> str:
    """The first RFC 3463 status code in `text` ("5.1.1"), or ""."""
    m = _ENHANCED.search(text or "")
    return m.group(0) if m else ""


@functools.cache
def _cause_patterns() -> tuple[tuple[str, re.Pattern[str]], ...]:
    """_CAUSE_TEXT compiled, on first use: the SMTP transport imports this module in every
    `publisher send`, which needs none of them until a server refuses something (compiling
    them all took 10 ms of each command's start-up)."""
    return tuple((cause, re.compile(*source)) for cause, source in _CAUSE_TEXT)


def text_cause(text: str) -> str:
    """The cause the words of `text` name, or "" (the first of _CAUSE_TEXT that matches)."""
    for cause, pattern in _cause_patterns():
        if pattern.search(text):
            return cause
    return ""


def diagnose(
    status: str = "", diagnostic: str = "", *, permanent: bool | None = None
) -> tuple[str, str]:
    """(kind, cause) of one failed recipient or refusal: `hard`, `blocked` or `soft`, and its
    cause in Sisimai's taxonomy (CAUSES).

    `status` is the RFC 3463 code when known (a DSN's Status field); otherwise the first one in
    `diagnostic` is used, then a basic reply code. `permanent` is what the report said when it
    has no code at all. The words of the diagnostic first (servers put 5.1.1 on block-list
    refusals and 5.7.1 on unknown users), then the status code, then the basic reply code.
    A temporary failure (4.x.x, or a report that says so) is never hard."""
    text = diagnostic or ""
    status = status or enhanced_status(text)
    cls = status[:1] if status else ""
    basic = _BASIC.search(text)
    if not cls and basic:
        cls = basic.group(1)[0]
    if cls == "2":
        return IGNORED, "delivered"
    cause = text_cause(text)
    if not cause:
        subject, detail = _split(status)
        cause = _CAUSE_STATUS.get((subject, detail)) or _CAUSE_SUBJECT.get(subject, "")
        if not cause and basic:
            cause = _CAUSE_REPLY.get(basic.group(1), "")
        if not cause:
            cause = "onhold" if cls == "4" or permanent is False else "undefined"
    kind = CAUSE_KIND[cause]
    if kind == HARD and (cls == "4" or (not cls and permanent is False)):
        kind = SOFT
    return kind, cause


def classify(status: str = "", diagnostic: str = "", *, permanent: bool | None = None) -> str:
    """`hard`, `blocked` or `soft` for one failed recipient (the kind of `diagnose`)."""
    kind = diagnose(status, diagnostic, permanent=permanent)[0]
    return SOFT if kind == IGNORED else kind


def _split(status: str) -> tuple[int, int]:
    m = _ENHANCED.match(status or "")
    if not m:
        return -1, -1
    return int(m.group(2)), int(m.group(3))


def smtp_refusal(code: int, text: str) -> tuple[str, str]:
    """(kind, cause) of a 4xx/5xx refusal during the send (RCPT TO or end of DATA)."""
    return diagnose(enhanced_status(text), f"{code} {text}")


def smtp_refusal_kind(code: int, text: str) -> str:
    """The kind of a 5xx refusal during the send (RCPT TO or end of DATA)."""
    kind = smtp_refusal(code, text)[0]
    return SOFT if kind == IGNORED else kind


def refusal_kind(code: int, text: bytes | str = "", *, after_rcpt: bool = False) -> str:
    """What a reply refusing one message during the send means for it: ``transient`` (4xx:
    retry), ``bounce`` (5xx about the reader's address: a hard bounce) or ``permanent`` (any
    other 5xx: this message is refused, the reader is not counted), by `diagnose`.

    `after_rcpt`: the reply to DATA or to the end of the message, once the server accepted the
    recipient. Then a 5xx is a bounce only when its words or its status code name the address
    as the cause: a bare "554 Transaction failed" or "550 Rejected" there is about the message,
    not the reader."""
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
    if text_cause(text) in ("userunknown", "hostunknown", "hasmoved", "notaccept"):
        return True
    return _CAUSE_STATUS.get(_split(enhanced_status(text))) in ("userunknown", "hostunknown")


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
