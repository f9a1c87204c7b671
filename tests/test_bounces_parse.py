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
    smtp_refusal_kind,
)

SAMPLES = Path(__file__).resolve().parent / "fixtures" / "bounces"

# file -> (report kind, [(address, failure kind, status)])
EXPECTED = {
    "exim_unknown_user.eml": ("bounce", [("ada@example.net", "hard", "5.1.1")]),
    "exim_blocked.eml": ("bounce", [("ben@example.net", "blocked", "5.7.1")]),
    "sendmail_dsn_unknown.eml": ("bounce", [("bob@example.net", "hard", "5.1.1")]),
    "qmail_no_mailbox.eml": ("bounce", [("carol@example.net", "hard", "5.1.1")]),
    "exchange_ndr.eml": ("bounce", [("dave@example.net", "hard", "5.1.1")]),
    "gmail_no_such_user.eml": ("bounce", [("erin@gmail.com", "hard", "5.1.1")]),
    "gmail_dmarc_blocked.eml": ("bounce", [("frank@gmail.com", "blocked", "5.7.26")]),
    "gmail_over_quota.eml": ("bounce", [("gina@gmail.com", "soft", "5.2.2")]),
    "yahoo_no_account.eml": ("bounce", [("hank@yahoo.com", "hard", "")]),
    "outlook_blocklist.eml": ("bounce", [("iris@outlook.com", "blocked", "5.7.1")]),
    "ses_bounce.eml": ("bounce", [("jack@example.net", "hard", "5.1.1")]),
    "postfix_delayed.eml": ("bounce", [("pia@example.net", "soft", "4.4.1")]),
    "ses_complaint_arf.eml": ("complaint", [("kate@example.net", "complaint", "")]),
    "arf_yahoo_cfl.eml": ("complaint", [("liam@yahoo.com", "complaint", "")]),
    "vacation_auto_submitted.eml": ("ignored", []),
    "exchange_out_of_office.eml": ("ignored", []),
    "challenge_response.eml": ("ignored", []),
    "dsn_delivered.eml": ("ignored", []),
    "human_mail.eml": ("ignored", []),
}


def test_every_sample_has_an_expectation() -> None:
    assert {p.name for p in SAMPLES.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_is_read_by_cause(name: str) -> None:
    report = analyse(message_from_bytes((SAMPLES / name).read_bytes()))
    kind, failures = EXPECTED[name]
    assert report.kind == kind, report.reason
    assert [(f.email, f.kind, f.status) for f in report.failures] == failures
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
    ("status", "diagnostic", "kind"),
    [
        ("5.1.1", "550 5.1.1 <a@x>: Recipient address rejected: User unknown", "hard"),
        ("5.1.2", "550 5.1.2 Host unknown", "hard"),
        ("5.2.1", "550 5.2.1 Mailbox disabled", "hard"),
        ("5.4.4", "Host or domain name not found. Name service error", "hard"),
        ("", "550 Requested action not taken: mailbox unavailable", "hard"),
        ("5.7.1", "554 5.7.1 Client host [1.2.3.4] blocked using zen.spamhaus.org", "blocked"),
        # servers that put an address code on a block-list refusal: the text wins
        ("5.1.1", "550 5.1.1 Message rejected: sender IP listed on our block list", "blocked"),
        ("5.7.1", "550 5.7.1 Message refused by policy", "blocked"),
        ("5.7.26", "550 5.7.26 Unauthenticated email is not accepted due to DMARC", "blocked"),
        ("5.3.4", "552 5.3.4 Message size exceeds fixed limit", "blocked"),
        ("5.1.8", "553 5.1.8 Sender address domain does not exist", "blocked"),
        ("", "421 Too many connections from your IP, rate limited", "soft"),
        ("5.2.2", "552 5.2.2 Mailbox full", "soft"),
        ("", "550 Mailbox quota exceeded", "soft"),
        ("4.2.2", "452 4.2.2 Over quota", "soft"),
        ("4.4.7", "delivery time expired", "soft"),
        ("", "", "soft"),
    ],
)
def test_classifier_by_cause(status: str, diagnostic: str, kind: str) -> None:
    assert classify(status, diagnostic) == kind


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
