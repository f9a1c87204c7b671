"""What a failed attempt means for its message: the send's failure policy, as a pure function.

`outcome(error, attempt, max_attempts, stopping)` reads one `DeliveryError` (its `kind` and
whether no connection could be made) and says what happens next; the worker
(publisher/delivery/worker.py) does it. No I/O here, so the policy is tested without a server
(tests/test_delivery_outcome.py).
"""

from __future__ import annotations

import enum

from ..transport import DeliveryError


class Outcome(enum.Enum):
    RETRY = "retry"  # transient (4xx, timeout, dropped connection), attempts left: back off, again
    STOPPED = "stopped"  # would retry, but the send is stopping: the row stays queued, not failed
    OUTAGE = "outage"  # no connection after every attempt: stop the send, nothing marked failed
    FAILED = "failed"  # transient, out of attempts: failed (`send --retry-failed` retries it)
    FINAL = "final"  # a 5xx not about the address (content, policy): rejected for good
    BOUNCE = "bounce"  # a 5xx naming the address (RCPT, or DATA's 5.1.x): a hard bounce, final


def outcome(error: DeliveryError, attempt: int, max_attempts: int, stopping: bool) -> Outcome:
    """What follows attempt number `attempt` (1-based) failing with `error`, when at most
    `max_attempts` are made and `stopping` says the send was told to stop."""
    if error.kind == "transient" and attempt < max_attempts:
        return Outcome.STOPPED if stopping else Outcome.RETRY
    if error.connect:
        # The server is down, not this message: failing every reader in turn would be wrong.
        return Outcome.OUTAGE
    if error.kind == "bounce":
        return Outcome.BOUNCE
    if error.kind == "permanent":
        return Outcome.FINAL
    return Outcome.FAILED


def retry_delay(base_seconds: float, attempt: int) -> float:
    """The wait before the attempt after `attempt`: exponential backoff, `base` x 2^(n-1)."""
    return base_seconds * 2 ** (attempt - 1)
