"""The keys and numbers of the signup rate limits (the buckets: publisher/state/limits.py)."""

from __future__ import annotations

import hashlib

from ..state.limits import canonical_mailbox

# The per-client and the per-address limits are token buckets in the database
# (publisher/state/limits.py), shared by every `publisher serve` process on it: N processes
# behind one proxy allow what one would.
CLIENT_PERIOD = 3600.0  # signups_per_client_per_hour
# Whatever `confirm_resend_minutes` says (0 turns the spacing off), one mailbox gets at most
# MAILBOX_BURST confirmation mails in a row, then one per MAILBOX_REFILL seconds: a few an hour
# at most, whatever the spellings and clients used to ask (issue 27).
MAILBOX_BURST = 3
MAILBOX_REFILL = 3600.0


def client_key(client: str) -> str:
    # Keys are at most 100 characters; a client address is short, anything else is hashed.
    if len(client) <= 64 and client.isprintable():
        return "web.client:" + client
    return "web.client#" + hashlib.sha256(client.encode()).hexdigest()[:40]


def address_key(email: str) -> str:
    # One allowance per mailbox, not per spelling: `victim+1@`, `victim+2@` and Gmail's dotted
    # variants all reach one person (issue 27). Addresses may be 320 characters, and the table
    # need not show them: hashed.
    mailbox = canonical_mailbox(email)
    return "web.confirm:" + hashlib.sha256(mailbox.encode()).hexdigest()[:40]


def mailbox_key(email: str) -> str:
    # The per-mailbox cap's bucket (MAILBOX_BURST), beside the spacing one above.
    mailbox = canonical_mailbox(email)
    return "web.mailbox:" + hashlib.sha256(mailbox.encode()).hexdigest()[:40]
