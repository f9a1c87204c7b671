"""What an inbound message is, and whom it is about, over hand-written samples of the formats
mail systems send (tests/fixtures/bounces, written from RFC 3464, RFC 5965, RFC 3834 and the
formats each system documents): RFC 3464 DSNs (Sendmail, Gmail, Outlook.com, Amazon SES,
Postfix), non-standard bounces read by flufl.bounce (Exim, qmail, old Exchange, Yahoo), ARF
feedback reports (Amazon SES, Yahoo), and auto-replies (vacation, out of office, challenge-
response). Also: the cause-based classifier on its own, and the VERP/mailto tokens.
"""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes
from pathlib import Path

import pytest

from publisher.bounces.parse import analyse
from publisher.mailrules import (
    TOKEN_LENGTH,
    UNSUBSCRIBE,
    VERP,
    BadToken,
    ReturnPath,
    TokenCodec,
    address_pattern,
    classify,
    diagnose,
    refusal_kind,
    smtp_refusal,
    smtp_refusal_kind,
)

SAMPLES = Path(__file__).resolve().parent / "fixtures" / "bounces"

TABLE = SAMPLES.parent / "bounces_expected.tsv"


def _expected() -> dict[str, tuple[str, str, list[tuple[str, str, str, str]]]]:
    """file -> (report kind, report cause, [(address, kind, cause, status)]), from the table."""
    out: dict[str, tuple[str, str, list[tuple[str, str, str, str]]]] = {}
    for line in TABLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _format, report, rcpt, kind, cause, status = line.split("\t")
        entry = out.setdefault(name, (report, cause.strip("-") if rcpt == "-" else "", []))
        if rcpt != "-":
            entry[2].append((rcpt, kind, cause, "" if status == "-" else status))
    return out


EXPECTED = _expected()


def test_every_sample_has_an_expectation() -> None:
    assert {p.name for p in SAMPLES.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_is_read_by_cause(name: str) -> None:
    raw = (SAMPLES / name).read_bytes()
    report = analyse(message_from_bytes(raw), raw)
    kind, cause, failures = EXPECTED[name]
    assert report.kind == kind, report.reason
    assert [(f.email, f.kind, f.cause, f.status) for f in report.failures] == failures
    if not failures:
        assert report.cause == cause
    for f in report.failures:
        if f.kind != "complaint":
            assert f.diagnostic, "the diagnostic is kept for review"


def test_auto_replies_say_why_they_are_ignored() -> None:
    for name in ("vacation_auto_submitted.eml", "exchange_out_of_office.eml"):
        report = analyse(message_from_bytes((SAMPLES / name).read_bytes()))
        assert report.reason.startswith("auto-reply"), report.reason
    report = analyse(message_from_bytes((SAMPLES / "challenge_response.eml").read_bytes()))
    assert "challenge-response" in report.reason


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind", "cause"),
    [
        (
            "5.1.1",
            "550 5.1.1 <a@x>: Recipient address rejected: User unknown",
            "hard",
            "userunknown",
        ),
        ("5.1.2", "550 5.1.2 Host unknown", "hard", "hostunknown"),
        ("5.1.6", "550 5.1.6 recipient has moved", "hard", "hasmoved"),
        ("5.1.10", "550 5.1.10 null MX: domain does not accept mail", "hard", "notaccept"),
        # a disabled mailbox may come back: suspend is soft, as in Sisimai
        ("5.2.1", "550 5.2.1 Mailbox disabled", "soft", "suspend"),
        ("5.4.4", "Host or domain name not found. Name service error", "hard", "hostunknown"),
        ("", "550 Requested action not taken: mailbox unavailable", "hard", "userunknown"),
        (
            "5.7.1",
            "554 5.7.1 Client host [1.2.3.4] blocked using zen.spamhaus.org",
            "blocked",
            "blocked",
        ),
        # servers that put an address code on a block-list refusal: the text wins
        (
            "5.1.1",
            "550 5.1.1 Message rejected: sender IP listed on our block list",
            "blocked",
            "blocked",
        ),
        ("5.7.1", "550 5.7.1 Message refused by policy", "blocked", "policyviolation"),
        (
            "5.7.26",
            "550 5.7.26 Unauthenticated email is not accepted due to DMARC",
            "blocked",
            "securityerror",
        ),
        ("5.3.4", "552 5.3.4 Message size exceeds fixed limit", "blocked", "mesgtoobig"),
        ("5.1.8", "553 5.1.8 Sender address domain does not exist", "blocked", "rejected"),
        (
            "5.7.1",
            "554 5.7.1 Message rejected as spam by Content Filtering",
            "blocked",
            "spamdetected",
        ),
        ("5.7.1", "554 5.7.1 Virus found in message", "blocked", "virusdetected"),
        ("5.7.1", "550 5.7.1 Relaying denied", "blocked", "norelaying"),
        (
            "5.6.0",
            "550 5.6.0 Improper use of 8-bit data in message header",
            "blocked",
            "contenterror",
        ),
        # a refusal about us stays about us when it is temporary
        ("", "421 Too many connections from your IP, rate limited", "blocked", "toomanyconn"),
        ("5.2.2", "552 5.2.2 Mailbox full", "soft", "mailboxfull"),
        ("", "550 Mailbox quota exceeded", "soft", "mailboxfull"),
        ("4.2.2", "452 4.2.2 Over quota", "soft", "mailboxfull"),
        ("4.4.7", "delivery time expired", "soft", "expired"),
        ("5.3.0", "554 5.3.0 mail loop detected", "soft", "systemerror"),
        ("5.0.0", "550 5.0.0 procmail: Program failure (exit code 73)", "soft", "mailererror"),
        (
            "4.1.1",
            "450 4.1.1 <a@x>: Recipient address rejected: User unknown",
            "soft",
            "userunknown",
        ),
        ("", "", "soft", "undefined"),
    ],
)
def test_classifier_by_cause(status: str, diagnostic: str, kind: str, cause: str) -> None:
    assert diagnose(status, diagnostic) == (kind, cause)
    assert classify(status, diagnostic) == kind


# What the issue measured being taken for hard bounces (refusals about us, transient or
# expired deliveries, mailboxes that may come back): none of them is hard, each has its cause.
MISREAD = [
    ("571 No PTR record found", "blocked", "blocked"),
    (
        "550 Connections not accepted from servers without a valid sender domain",
        "blocked",
        "blocked",
    ),
    ("550 Unroutable sender address", "blocked", "rejected"),
    ("550 5.7.1 Domain is invalid. Please use a valid From address", "blocked", "rejected"),
    ("550 You've reached your daily relay quota", "blocked", "toomanyconn"),
    ("554 Comcast requires that all mail servers must have a PTR record", "blocked", "blocked"),
    ("550 Denied by policy", "blocked", "policyviolation"),
    ("550 Protocol violation", "blocked", "policyviolation"),
    ("554 Transaction failed", "soft", "undefined"),
    ("553 5.3.5 system config error", "soft", "systemerror"),
    ("504 Command parameter not implemented", "blocked", "syntaxerror"),
    (
        "550 5.4.4 Name service error for name=x.example type=MX: Host not found, try again",
        "soft",
        "networkerror",
    ),
    ("550 all hosts have been failing for a long time and were last tried", "soft", "expired"),
    ("550 Delivery failed 20 attempts", "soft", "expired"),
    ("550 Mailbox is frozen.", "soft", "suspend"),
    ("550 vdelivermail: account is locked email bounced", "soft", "suspend"),
    ("552 5.2.2 Mailbox full", "soft", "mailboxfull"),
    (
        "550 5.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
        "blocked",
        "toomanyconn",
    ),
]


@pytest.mark.parametrize(("diagnostic", "kind", "cause"), MISREAD)
def test_what_was_taken_for_hard_is_not(diagnostic: str, kind: str, cause: str) -> None:
    assert diagnose("", f"smtp; {diagnostic}", permanent=True) == (kind, cause)
    code, _, text = diagnostic.partition(" ")
    assert smtp_refusal(int(code), text) == (kind, cause)
    assert refusal_kind(int(code), text) == "permanent"  # refused the message, not the reader


def test_an_ses_json_complaint_mail_is_a_complaint_not_a_bounce_of_json() -> None:
    raw = (SAMPLES / "ses_json_complaint.eml").read_bytes()
    report = analyse(message_from_bytes(raw), raw)
    assert report.kind == "complaint"
    assert [(f.email, f.cause) for f in report.failures] == [("kurt@example.com", "feedback")]
    assert report.message_ids == ["<sesjsoncomplaint@papers.example.org>"]
    assert report.provider_ids == ["0100018f-sesjsoncomplaint-000000"]


def test_every_cause_has_a_kind_and_hard_is_only_the_address_gone() -> None:
    from publisher.mailrules import CAUSE_KIND, CAUSES

    assert set(CAUSE_KIND) == set(CAUSES)
    hard = {c for c, k in CAUSE_KIND.items() if k == "hard"}
    assert hard == {"userunknown", "hostunknown", "hasmoved", "notaccept"}
    assert CAUSE_KIND["vacation"] == "ignored"


def test_refusal_at_rcpt_by_cause() -> None:
    assert smtp_refusal_kind(550, "5.1.1 No such user") == "hard"
    assert smtp_refusal_kind(550, "5.7.1 Your IP 198.51.100.7 is blocked") == "blocked"
    assert smtp_refusal_kind(552, "5.2.2 Mailbox full") == "soft"


def test_tokens_round_trip_and_stay_short_and_lowercase() -> None:
    codec = TokenCodec([b"k" * 32], VERP)
    day = dt.date(2024, 5, 15)
    for sub_id in (1, 77, 123_456, 2**32 - 1):
        token = codec.sign(sub_id, day)
        assert len(token) == TOKEN_LENGTH and token == token.lower() and token.isalnum()
        data = codec.verify(token.upper())  # an MTA that upper- or lower-cases is fine
        assert (data.subscriber_id, data.digest_date) == (sub_id, day)


def test_tokens_refuse_forgery_other_purpose_and_age_and_accept_an_older_secret() -> None:
    day = dt.date(2024, 5, 15)
    token = TokenCodec([b"old-secret" * 4], VERP).sign(7, day)
    with pytest.raises(BadToken, match="forged"):
        TokenCodec([b"new-secret" * 4], VERP).verify(token)
    rotated = TokenCodec([b"new-secret" * 4, b"old-secret" * 4], VERP)
    assert rotated.verify(token).subscriber_id == 7
    with pytest.raises(BadToken, match="forged"):
        TokenCodec([b"old-secret" * 4], UNSUBSCRIBE).verify(token)
    flipped = ("a" if token[0] != "a" else "b") + token[1:]
    with pytest.raises(BadToken):
        rotated.verify(flipped)
    with pytest.raises(BadToken, match="malformed"):
        rotated.verify("not-a-token")
    with pytest.raises(BadToken, match="expired"):
        rotated.verify(token, today=day + dt.timedelta(days=31), max_age_days=30)
    assert rotated.verify(token, today=day + dt.timedelta(days=30), max_age_days=30)


def test_return_path_address_matches_its_pattern() -> None:
    template = "bounces+{token}@papers.example.org"
    address = ReturnPath(template, b"s" * 32).address(42, dt.date(2024, 5, 15))
    m = address_pattern(template).fullmatch(address.upper())
    assert m and TokenCodec([b"s" * 32], VERP).verify(m.group(1)).subscriber_id == 42
    assert len(address.partition("@")[0]) <= 64


# One classifier (publisher/mailrules.py): a reply refused at RCPT TO, at the end of DATA, and
# the same reply quoted in a DSN's Diagnostic-Code get the same verdict.
ONE_RULE = [
    ("550 5.1.1 <a@example.net>: Recipient address rejected: User unknown", "bounce", "hard"),
    ("550 Requested action not taken: mailbox unavailable, user unknown", "bounce", "hard"),
    (
        "550 5.1.1 Service refused: 198.51.100.7 is listed at zen.spamhaus.org",
        "permanent",
        "blocked",
    ),
    ("550 5.7.1 Message refused by policy", "permanent", "blocked"),
    ("552 5.2.2 Mailbox full", "permanent", "soft"),
    ("451 4.3.0 Try again later", "transient", "soft"),
]


@pytest.mark.parametrize(("reply", "send_kind", "report_kind"), ONE_RULE)
def test_one_classifier_for_rcpt_data_and_reports(
    reply: str, send_kind: str, report_kind: str
) -> None:
    from publisher.transport import _data_kind, _rcpt_kind

    code, _, text = reply.partition(" ")
    assert _rcpt_kind(int(code), text) == send_kind
    assert _data_kind(int(code), text.encode()) == send_kind
    assert classify("", f"smtp; {reply}", permanent=code.startswith("5")) == report_kind


def test_a_bare_5xx_at_data_refuses_the_message_not_the_reader() -> None:
    from publisher.transport import _data_kind

    # accepted at RCPT TO, refused with no cause named: about the message
    assert _data_kind(554, b"Transaction failed") == "permanent"
    assert _data_kind(554, b"5.7.1 Message content rejected") == "permanent"
