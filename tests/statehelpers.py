"""State set-ups and look-ups that only tests need (the product has no use for them)."""

from __future__ import annotations

import sqlalchemy as sa

from publisher.errors import PublisherError
from publisher.state import ACTIVE, STATUSES, Store, UnknownSubscriber, lifecycle
from publisher.state.schema import _key, _now, subscribers, suppressions


def set_status(store: Store, email: str, status: str) -> None:
    """Put a subscriber in `status` for a test. `active` on a suppressed address raises
    PublisherError (only `resubscribe` lifts that); unsubscribed and bounced also suppress, as
    the lifecycle does; pending and removed are written as they are."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    key = _key(email)
    with store._write() as conn:
        row = lifecycle.lock(conn, key)
        if row is None:
            raise UnknownSubscriber(f"no subscriber {key}")
        if status in lifecycle.ENDED:
            lifecycle.end(conn, row, status, status, _now())
            return
        if status == ACTIVE and lifecycle.is_suppressed(conn, key):
            raise PublisherError(f"{key} is on the suppression list")
        conn.execute(subscribers.update().where(subscribers.c.id == row.id).values(status=status))


def suppression_reason(store: Store, email: str) -> str | None:
    """Why an address is on the suppression list (None: it is not)."""
    with store.engine.connect() as conn:
        return conn.execute(
            sa.select(suppressions.c.reason).where(suppressions.c.email == _key(email))
        ).scalar()
