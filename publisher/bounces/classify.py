"""Classify one delivery failure by its cause, not only by its code.

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
the basic reply code. Kept free of heavy imports: the SMTP transport uses it for RCPT refusals.
"""

from __future__ import annotations

import re

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
