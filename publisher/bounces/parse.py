"""What one inbound message is: a DSN, a complaint, an auto-reply, an unsubscribe request...

`analyse(msg)` returns a `Report`: the message's kind and, for bounces and complaints, one
`Failure` per recipient it names. Standard reports are read with the `email` package: RFC 3464
delivery status notifications (multipart/report; report-type=delivery-status) and RFC 5965
feedback reports (report-type=feedback-report). Everything else that may be a bounce (old MTAs,
Exchange, qmail, Yahoo...) goes to flufl.bounce, the detectors of GNU Mailman, which name the
failed addresses; what they miss (OpenSMTPD, Domino, Office 365 text NDRs, the Japanese
carriers...) is read from the report's text before the returned message (`_fallback`). Amazon
SES JSON notifications sent as mail go to publisher/ses.py's mapping. Every failure gets its
kind and cause from the one classifier (publisher/mailrules.py `diagnose`).

Auto-replies (vacation, out of office, challenge-response) are `ignored`, whatever they say.

Anyone can mail the bounce address, so the cost is linear in the message's size and bounded
where it is not: at most `MAX_RECIPIENTS` recipients are read (the scan stops there), a
diagnostic is classified on its first `DIAGNOSTIC_CHARS`, and flufl.bounce (whose detectors
try some fifty patterns on every line, one pattern set after the other) reads only the first
`HEURISTIC_LINES` lines (and `HEURISTIC_BYTES`) of a message, where every bounce format puts its
list of failed addresses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses, parseaddr

from ..mailrules import BLOCKED, COMPLAINT, HARD, IGNORED, SOFT, diagnose, enhanced_status

# A bounce names at most this many recipients that we act on (a mailing-list loop may name
# thousands; ours is one recipient per message).
MAX_RECIPIENTS = 20
# A diagnostic is kept and classified on this much of its text.
DIAGNOSTIC_CHARS = 1000
# flufl.bounce reads at most this much of a message (see the module docstring).
HEURISTIC_BYTES = 128 * 1024
HEURISTIC_LINES = 2000
# An address header is read on this much of its value (ours are short).
HEADER_CHARS = 64 * 1024


@dataclass(slots=True)
class Failure:
    email: str
    kind: str
    status: str = ""
    diagnostic: str = ""
    # Sisimai's reason (publisher/mailrules.py CAUSES); `kind` follows from it.
    cause: str = ""


@dataclass(slots=True)
class Report:
    kind: str  # "bounce", "complaint", "ignored" (auto-reply, delivery notice, not a bounce)
    reason: str = ""
    failures: list[Failure] = field(default_factory=list)
    # Headers of the original message when the report carries them (VERP tokens live there).
    original: Message | None = None
    # The cause of a report about no one recipient: "vacation", "delivered", "feedback".
    cause: str = ""
    # Message-IDs of the message this report is about (its returned headers, or an SES
    # notification's `mail`): the ledger maps ours to the reader it was sent to.
    message_ids: list[str] = field(default_factory=list)
    # An SES notification's `mail.messageId` (SES's own id, in its 250 reply to our DATA).
    provider_ids: list[str] = field(default_factory=list)


_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|vacation|"
    r"abwesenheit|absence|away from|on leave|autoreply|r[ée]ponse automatique|"
    r"please confirm (your|that)|verify your (e-?mail|message)|challenge|"
    r"부재중|自動返信|自动回复)",
    re.IGNORECASE,
)
_CHALLENGE_HEADERS = ("x-boxtrapper", "x-spamarrest", "x-cr-hashedpuzzle", "x-ask-info")


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return str(value) if value is not None else ""


def is_auto_reply(msg: Message) -> str:
    """Why this message is an auto-reply ("" if it is not one). RFC 3834 and common practice."""
    auto = _header(msg, "Auto-Submitted").strip().lower()
    if auto.startswith("auto-replied"):
        return f"Auto-Submitted: {auto}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if msg.get(name) is not None:
            return name
    if _header(msg, "Precedence").strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    if _header(msg, "X-Auto-Response-Suppress") and _AUTO_SUBJECT.match(_header(msg, "Subject")):
        return "out-of-office reply"
    for name in _CHALLENGE_HEADERS:
        if msg.get(name) is not None:
            return f"challenge-response ({name})"
    if _AUTO_SUBJECT.match(_header(msg, "Subject")):
        return f"auto-reply subject {_header(msg, 'Subject')[:60]!r}"
    return ""


_MTA_LOCALS = ("mailer-daemon", "mailer_daemon", "mailerdaemon", "mail-daemon", "postmaster")


def from_mta(msg: Message) -> bool:
    """Whether a message comes from a mail system rather than a person (bounce-like)."""
    if msg.get("X-Failed-Recipients") is not None:
        return True
    name, addr = parseaddr(_header(msg, "From"))
    local = addr.partition("@")[0].lower()
    return local in _MTA_LOCALS or "mail delivery" in name.lower()


def _address(value: str) -> str:
    """The address of a DSN field value like `rfc822; ada@example.com`."""
    value = value[:1000]  # an address is at most 320 characters; the rest is noise
    _, _, addr = value.partition(";") if ";" in value else ("", "", value)
    return parseaddr(addr.strip())[1].strip().strip("<>").lower()


def _report_parts(msg: Message, report_type: str) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == "multipart/report" and (
            (part.get_param("report-type") or "").lower() == report_type
        ):
            return part
    return None


def _original(report: Message) -> Message | None:
    """The returned message or its headers (message/rfc822, text/rfc822-headers)."""
    for part in report.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                return payload[0]
        if ctype in ("text/rfc822-headers", "message/global-headers"):
            from email import message_from_string

            text = part.get_payload(decode=True) or b""
            return message_from_string(text.decode("utf-8", "replace"))
    return None


def _dsn(report: Message) -> Report:
    failures: list[Failure] = []
    notices: list[str] = []
    for part in report.walk():
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):
            continue
        for block in blocks[1:]:  # the first block is per message, the rest per recipient
            if len(failures) >= MAX_RECIPIENTS:
                break
            action = _header(block, "Action").strip().lower()
            recipient = _address(_header(block, "Original-Recipient")) or _address(
                _header(block, "Final-Recipient")
            )
            status = enhanced_status(_header(block, "Status"))
            diagnostic = _clip(_header(block, "Diagnostic-Code"))
            if action in ("delivered", "relayed", "expanded"):
                if len(notices) < MAX_RECIPIENTS:
                    notices.append(f"{action} {recipient}")
                continue
            if not recipient:
                continue
            kind, cause = diagnose(status, diagnostic, permanent=action != "delayed")
            if action == "delayed" and kind == HARD:
                kind = SOFT
            if kind == IGNORED:
                if len(notices) < MAX_RECIPIENTS:
                    notices.append(f"{cause} {recipient}")
                continue
            failures.append(Failure(recipient, kind, status, diagnostic[:500], cause))
    if not failures:
        return Report(
            IGNORED,
            "delivery notice: " + (", ".join(notices) or "no failed recipient"),
            cause="delivered",
        )
    return Report("bounce", "RFC 3464 DSN", failures, _original(report))


def _clip(value: str) -> str:
    """A header's text on one line, its first DIAGNOSTIC_CHARS only (a 10 MB Diagnostic-Code
    costs no more than a short one)."""
    return " ".join(value[: DIAGNOSTIC_CHARS * 2].split())[:DIAGNOSTIC_CHARS]


def _arf(report: Message) -> Report:
    recipients: list[str] = []
    feedback_type = ""
    for part in report.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        fields = payload[0] if isinstance(payload, list) and payload else part
        if not isinstance(payload, list):
            from email import message_from_string

            raw = part.get_payload(decode=True) or b""
            fields = message_from_string(raw.decode("utf-8", "replace"))
        feedback_type = _header(fields, "Feedback-Type").strip().lower()[:40]
        for value in fields.get_all("Original-Rcpt-To", []):
            if len(recipients) >= MAX_RECIPIENTS:
                break
            addr = _address(str(value)[:HEADER_CHARS])
            if addr and addr not in recipients:
                recipients.append(addr)
    original = _original(report)
    if not recipients and original is not None:
        to = [str(v)[:HEADER_CHARS] for v in original.get_all("To", [])[:MAX_RECIPIENTS]]
        recipients = list(dict.fromkeys(a.lower() for _, a in getaddresses(to) if a))
    reason = f"ARF feedback report ({feedback_type or 'abuse'})"
    if feedback_type and feedback_type not in ("abuse", "fraud", "virus", "other", "not-spam"):
        return Report(IGNORED, reason, [], original, cause="feedback")
    if feedback_type == "not-spam":
        return Report(IGNORED, reason, [], original, cause="feedback")
    failures = [Failure(r, COMPLAINT, "", reason, "feedback") for r in recipients[:MAX_RECIPIENTS]]
    return Report(COMPLAINT, reason, failures, original, cause="feedback")


def _body_text(msg: Message, limit: int = 200_000) -> str:
    chunks: list[str] = []
    size = 0
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        raw = part.get_payload(decode=True) or b""
        text = raw.decode(part.get_content_charset() or "utf-8", "replace")
        chunks.append(text)
        size += len(text)
        if size > limit:
            break
    return "\n".join(chunks)[:limit]


_CODE = re.compile(r"\b[45]\d\d[ -]\S|\b[45]\.\d{1,3}\.\d{1,3}\b")


def _diagnostic_near(text: str, lowered: str, address: str) -> str:
    """The SMTP reply a non-standard bounce quotes for `address`: the line with the first reply
    code after the address (else anywhere), and up to two lines that continue it. `lowered` is
    `text.lower()`, computed once per message, not once per address."""
    at = lowered.find(address)
    windows = [text[at : at + 1500]] if at >= 0 else []
    windows.append(text[:4000])
    for window in windows:
        m = _CODE.search(window)
        if m:
            start = window.rfind("\n", 0, m.start()) + 1
            lines = window[start:].split("\n")[:3]
            kept = [lines[0]]
            for line in lines[1:]:
                if not line.strip() or line.lstrip().startswith(("-", "<")):
                    break
                kept.append(line)
            return " ".join(" ".join(kept).split())[:500]
    # No code: the line naming the address, and the next one, often say why.
    if at >= 0:
        start = text.rfind("\n", 0, at) + 1
        return " ".join(text[start : start + 300].split())[:500]
    return ""


def _heuristic(msg: Message, raw: bytes | None) -> Report:
    from flufl.bounce import all_failures

    if raw is not None:
        # The detectors on the head of the message only (see the module docstring).
        head = _head(raw)
        if len(head) < len(raw):
            msg = message_from_bytes(head)
    try:
        temporary, permanent = all_failures(msg)
    except Exception as exc:  # noqa: BLE001 - a detector choking on odd input is "no bounce"
        return Report(IGNORED, f"no bounce found (detector error: {type(exc).__name__})")
    if not temporary and not permanent:
        return Report(IGNORED, "no bounce found")
    text = _body_text(msg)
    lowered = text.lower()
    failures: list[Failure] = []
    original = _original(msg)
    # The mail system's own addresses, ours and Message-IDs that look like addresses are no
    # failed recipient (detectors pick them up from the quoted message).
    seen: set[str] = _own_addresses(msg, original)
    for found, perm in [(a, True) for a in permanent] + [(a, False) for a in temporary]:
        if len(failures) >= MAX_RECIPIENTS:
            break
        addr = found.decode("utf-8", "replace") if isinstance(found, bytes) else str(found)
        addr = addr.strip().strip("<>").lower()
        if "@" not in addr or addr in seen:
            continue
        seen.add(addr)
        diagnostic = _diagnostic_near(text, lowered, addr)
        kind, cause = diagnose("", diagnostic, permanent=perm)
        if kind in (HARD, IGNORED) and not perm:
            kind = SOFT
        failures.append(Failure(addr, kind, enhanced_status(diagnostic), diagnostic, cause))
    if not failures:
        return Report(IGNORED, "no bounce found")
    return Report("bounce", "non-standard bounce (flufl.bounce)", failures, original)


def _own_addresses(msg: Message, original: Message | None) -> set[str]:
    """Addresses in a report that name no recipient: its sender and addressee, the returned
    message's sender, and Message-IDs (which look like addresses)."""
    values = [_header(msg, n)[:1000] for n in ("From", "To", "Sender", "Message-ID")]
    if original is not None:
        names = ("From", "Sender", "Reply-To", "Return-Path", "Message-ID")
        values += [_header(original, n)[:1000] for n in names]
    own = {a.lower() for _, a in getaddresses(values) if a}
    for m in re.finditer(r"(?im)^[ \t]*message-id:[ \t]*<([^>\s]{1,300})>", _body_text(msg, 65536)):
        own.add(m.group(1).lower())
    return own


# -- formats flufl.bounce does not read --------------------------------------------------------
#
# OpenSMTPD, old Sendmail, Lotus Notes/Domino, Verizon, Yahoo, Google Workspace, Office 365,
# au/ezweb/KDDI, Trend Micro, MailMarshal, mFilter, Amazon WorkMail, iCloud...: each writes its
# own human-readable text, and flufl.bounce's detectors know few of them. What they share (the
# MTA formats Sisimai reads, lib/Sisimai/Lhost/*.pm): a message from a mail system or with a
# bounce's subject, a text part naming the failed address next to a reply code or a reason, and
# the returned message after it. So: the text before the returned message, the addresses in it
# that are not the mail system's own, and the reason next to each.

_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (status|failure|failed|has failed|notification|problem)|"
    r"returned mail|failure notice|mail delivery (failed|failure|system)|delivery failure|"
    r"non-?delivery|not (be )?delivered|nondeliverable|mail system error|permanent error|"
    r"message (not delivered|delivery failed|undeliverable|bounced|blocked)|bounce|"
    r"mail could not|couldn.t be delivered|returned to sender|rejected|"
    r"不達|送信できません|エラー|mail failure|could not send",
    re.IGNORECASE,
)
# Where the copy of the returned message starts in a text part (what follows is not read).
_ORIGINAL_MARK = re.compile(
    r"^[ \t]*(-{2,}|={2,}|_{2,})?[ \t]*(this is a copy of|below this line is a copy|"
    r"original message|the original message|returned message|unsent message below|"
    r"message header follows|headers of the original|original message headers|"
    r"forwarded message|your message reads)",
    re.IGNORECASE | re.MULTILINE,
)
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_FAILURE_WORDS = re.compile(
    r"\b[45]\d\d\b|\b[45]\.\d{1,3}\.\d{1,3}\b|unknown|fail|undeliver|reject|refus|"
    r"not (found|exist|listed|delivered|accept)|does not|doesn.t|invalid|error|quota|full|"
    r"blocked|denied|disabled|suspend|moved|expired|reason|could not|cannot|unable|"
    r"no such|unavailable",
    re.IGNORECASE,
)
_DELAY_WORDS = re.compile(
    r"delayed|will (continue|retry|keep) (to )?(try|trying|attempt)|still trying|"
    r"not yet been delivered|will be retried|no action is required",
    re.IGNORECASE,
)


def _readable_text(msg: Message, limit: int = 64 * 1024) -> str:
    """The human-readable part of a report: its text parts, not inside a returned message,
    cut where a copy of the returned message starts."""
    chunks: list[str] = []
    size = 0

    def walk(part: Message) -> None:
        nonlocal size
        if size > limit:
            return
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global", "text/rfc822-headers"):
            return
        if part.is_multipart():
            for sub in part.get_payload() or []:
                if isinstance(sub, Message):
                    walk(sub)
            return
        if part.get_content_maintype() != "text":
            return
        raw = part.get_payload(decode=True) or b""
        text = raw[: limit * 2].decode(part.get_content_charset() or "utf-8", "replace")
        if ctype == "text/html":
            text = re.sub(r"<[^>]{0,2000}>", " ", text)
        m = _ORIGINAL_MARK.search(text)
        if m:
            text = text[: m.start()]
        chunks.append(text)
        size += len(text)

    walk(msg)
    return "\n".join(chunks)[:limit]


def _fallback(msg: Message, raw: bytes | None) -> Report | None:
    """A bounce in a format flufl.bounce does not read (see above), or None."""
    if not (from_mta(msg) or _BOUNCE_SUBJECT.search(_header(msg, "Subject")[:500])):
        return None
    text = _readable_text(msg)
    original = _original(msg)
    own = _own_addresses(msg, original)
    lines = text.split("\n")
    found: list[tuple[str, int]] = []  # (address, line number)
    seen: set[str] = set()
    for n, line in enumerate(lines):
        if "@" not in line:
            continue
        if re.match(r"[ \t]*(from|sender|reply-to|return-path|message-id)[ \t]*:", line, re.I):
            continue
        for m in _EMAIL.finditer(line):
            addr = m.group(0).strip(".").lower()
            local = addr.partition("@")[0]
            if addr in seen or addr in own or local in _MTA_LOCALS:
                continue
            seen.add(addr)
            found.append((addr, n))
            if len(found) >= MAX_RECIPIENTS * 5:
                break
    near = [
        (a, n)
        for a, n in found
        if any(_FAILURE_WORDS.search(x) for x in lines[max(n - 2, 0) : n + 4])
    ]
    chosen = near or (found if len(found) == 1 else [])
    if not chosen and original is not None:
        to = getaddresses([_header(original, "To")[:HEADER_CHARS]])
        if len(to) == 1 and to[0][1]:
            at = text.lower().find(to[0][1].lower())
            chosen = [(to[0][1].lower(), text.count("\n", 0, at) if at >= 0 else 0)]
    if not chosen:
        return None
    permanent = not _DELAY_WORDS.search(text)
    lowered = text.lower()
    failures: list[Failure] = []
    for addr, n in chosen[:MAX_RECIPIENTS]:
        diagnostic = _diagnostic_near(text, lowered, addr)
        from ..mailrules import text_cause

        if not text_cause(diagnostic):
            # The reason is often on its own lines around the address (Domino's "Failure
            # Reason:", OpenSMTPD's indented reply, the carriers' Japanese notes).
            window = " ".join(" ".join(lines[max(n - 3, 0) : n + 6]).split())
            if text_cause(window):
                diagnostic = window[:500]
            elif not diagnostic:
                diagnostic = " ".join(text.split())[:500]
        kind, cause = diagnose("", diagnostic, permanent=permanent)
        if kind in (HARD, IGNORED) and not permanent:
            kind = SOFT
        failures.append(Failure(addr, kind, enhanced_status(diagnostic), diagnostic, cause))
    return Report("bounce", "non-standard bounce (text)", failures, original)


# -- Amazon SES notifications sent as mail ("email" notifications) -----------------------------


def _ses_mail(msg: Message) -> Report | None:
    """An SES bounce, complaint or delivery notification sent as a JSON mail, read by the same
    mapping as the SNS webhook (publisher/ses.py), or None."""
    for part in msg.walk():
        if part.get_content_maintype() not in ("text", "application") or part.is_multipart():
            continue
        body = (part.get_payload(decode=True) or b"")[: 256 * 1024].lstrip()
        head = body[:4096]
        if not body.startswith(b"{") or (
            b"notificationType" not in head and b"eventType" not in head
        ):
            continue
        from ..ses import report_from_notification

        try:
            obj = json.loads(body)
        except ValueError:
            return Report(IGNORED, "SES notification mail with malformed JSON")
        return report_from_notification(obj) if isinstance(obj, dict) else None
    return None


def _head(raw: bytes) -> bytes:
    """The first HEURISTIC_LINES lines of `raw`, at most HEURISTIC_BYTES."""
    head = raw[:HEURISTIC_BYTES]
    end = -1
    for _ in range(HEURISTIC_LINES):
        end = head.find(b"\n", end + 1)
        if end < 0:
            return head
    return head[: end + 1]


def analyse(msg: Message, raw: bytes | None = None) -> Report:
    """What `msg` is; see the module docstring. `raw`, the bytes `msg` was parsed from, lets
    a big non-standard bounce be read on its head only."""
    report = _analyse(msg, raw)
    if report.original is not None and not report.message_ids:
        mid = _header(report.original, "Message-ID").strip()[:300]
        if mid:
            report.message_ids.append(mid)
    return report


def _analyse(msg: Message, raw: bytes | None) -> Report:
    arf = _report_parts(msg, "feedback-report")
    if arf is not None:
        return _arf(arf)
    dsn = _report_parts(msg, "delivery-status")
    if dsn is not None:
        return _dsn(dsn)
    why = is_auto_reply(msg)
    if why and not from_mta(msg):
        # Mail systems mark their bounces auto-replied too (Exim does): only a message from a
        # person's mailbox is taken for a vacation or challenge reply.
        return Report(IGNORED, f"auto-reply: {why}", cause="vacation")
    ses = _ses_mail(msg)
    if ses is not None:
        return ses
    report = _heuristic(msg, raw)
    if report.kind == IGNORED and report.reason.startswith("no bounce found"):
        return _fallback(msg, raw) or report
    return report


__all__ = ["BLOCKED", "COMPLAINT", "HARD", "IGNORED", "SOFT", "Failure", "Report", "analyse"]
