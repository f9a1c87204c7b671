"""Deliver one digest's newsletter to every mailable subscriber, once each.

The pipe: the ledger is filled (`queue_pending`, one INSERT ... SELECT, idempotent), then
`[smtp] connections` worker threads take ledger rows one at a time from this sender's claims
(`Claims`: batches of rows claimed in the database with a lease, so any number of senders, in
any number of processes or machines, split one digest between them and never take the same
row); each worker owns one transport (one reused SMTP connection, PIPELINING when offered) and
builds each message on the fly with `build(email, name, subscriber_id) -> bytes`. Memory stays
flat: no list of subscribers or messages is built. Readers who join while the send runs (an
import, a confirmed signup, committed after the first `queue_pending`) are queued once the
workers run dry and mailed in one more pass, so a send ends with every active subscriber
served, whatever else ran beside it.

Unsubscribes during a send: the claimed rows are checked against the subscribers' status at
most `Claims.STALE` seconds before each message's final "." (a background check every
`Claims.REFRESH` s, redone on the spot if it is late), and a row whose reader unsubscribed,
bounced or was suppressed meanwhile is not sent (its connection is dropped if the message was
already on the wire). The same check notices a claim taken over by another sender.

Exactly-once, as far as SMTP allows: when the server accepts a message, its `sent` row is
queued for the ledger while the worker goes on with the next message; the worker sends that
next message's final "." (the point where the server may accept it) only once the previous one
is committed, committing itself whatever rows are waiting (group commit) unless another
worker's commit already covers it. A kill -9 at any moment
therefore loses nothing, and a re-run sends only what is not yet `sent`; the only duplicates
are the messages accepted but not yet recorded at the crash, at most one per connection.

Failures: transient ones (4xx, timeouts, dropped connections) are retried on a fresh connection
with exponential backoff (`retry_base_seconds` x 2^n) up to `max_attempts`, then marked failed
(retried by `send --retry-failed`, and by `publisher run` a few times, publisher/scheduler.py;
a send never claims again a row it failed itself, so a mailbox that is always full cannot keep
it going). A server that cannot be reached, or answers 421 at the
greeting, EHLO or MAIL, that long is an outage: the send stops (`SmtpUnreachable`) and nothing is
marked failed. 5xx replies fail the message for good (`final`, retried only by `--retry-failed
--include-final`): a 5xx to RCPT, or at DATA naming a bad address (transport._data_kind), is a
hard bounce, and `[subscribers] bounce_limit` of them suppress the address; any other 5xx (e.g.
content rejected) is a rejection of that message. A final failure is settled: it does not count
as "still without it" (`unsent_active`).

Stopping (`stop`, set on SIGTERM/SIGINT): each worker finishes the message it is sending, a
message waiting for a retry stays queued (not failed), and the claims are given back.

The files: `pipe.py` (`deliver`, the report), `claims.py` (`Claims`), `ledger.py` (the ledger
writer's group commit), `worker.py` (`Worker`: one connection, its retries and records) and
`outcome.py` (the failure policy above as a pure function of a `DeliveryError`).
"""

from .claims import CLAIM_BATCH, ClaimRevoked, Claims
from .ledger import LedgerWriter
from .outcome import Outcome, outcome
from .pipe import Builder, DeliveryReport, SegmentedBuilder, deliver
from .worker import RateLimiter, Worker

__all__ = [
    "CLAIM_BATCH",
    "Builder",
    "ClaimRevoked",
    "Claims",
    "DeliveryReport",
    "LedgerWriter",
    "Outcome",
    "RateLimiter",
    "SegmentedBuilder",
    "Worker",
    "deliver",
    "outcome",
]
