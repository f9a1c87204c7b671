"""The send's failure policy (publisher/delivery/outcome.py), without an SMTP server: what a
failed attempt means for its message, and the backoff before the next one."""

from __future__ import annotations

import pytest

from publisher.delivery import Outcome, outcome
from publisher.delivery.outcome import retry_delay
from publisher.transport import DeliveryError

BUSY = DeliveryError("transient", "451 4.3.0 try again later")
DOWN = DeliveryError("transient", "cannot connect to mx:25: refused", connect=True)
UNKNOWN = DeliveryError("bounce", "550 5.1.1 <gone@example.com>: user unknown")
CONTENT = DeliveryError("permanent", "554 5.7.1 message content rejected")


def test_a_transient_error_with_attempts_left_is_retried() -> None:
    assert outcome(BUSY, 1, 3, stopping=False) is Outcome.RETRY
    assert outcome(BUSY, 2, 3, stopping=False) is Outcome.RETRY


def test_a_transient_error_while_stopping_leaves_the_row_queued() -> None:
    assert outcome(BUSY, 1, 3, stopping=True) is Outcome.STOPPED


def test_the_last_attempt_of_a_transient_error_fails_the_message_not_for_good() -> None:
    assert outcome(BUSY, 3, 3, stopping=False) is Outcome.FAILED
    assert outcome(BUSY, 3, 3, stopping=True) is Outcome.FAILED
    assert outcome(BUSY, 1, 1, stopping=False) is Outcome.FAILED  # max_attempts = 1: no retry


def test_no_connection_is_retried_then_an_outage_never_a_failure() -> None:
    assert outcome(DOWN, 1, 3, stopping=False) is Outcome.RETRY
    assert outcome(DOWN, 3, 3, stopping=False) is Outcome.OUTAGE
    assert outcome(DOWN, 3, 3, stopping=True) is Outcome.OUTAGE


@pytest.mark.parametrize("attempt", [1, 3])
def test_a_5xx_is_final_at_once_a_bounce_only_when_it_names_the_address(attempt: int) -> None:
    assert outcome(UNKNOWN, attempt, 3, stopping=False) is Outcome.BOUNCE
    assert outcome(CONTENT, attempt, 3, stopping=False) is Outcome.FINAL
    assert outcome(CONTENT, attempt, 3, stopping=True) is Outcome.FINAL


def test_the_backoff_doubles_from_the_base() -> None:
    assert [retry_delay(0.5, n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
