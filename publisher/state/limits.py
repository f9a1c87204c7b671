"""Rate limits shared by every process on the database: one token bucket a key, in `rate_limits`.

A bucket holds at most `capacity` tokens and refills evenly, `capacity` every `period` seconds;
`take_token` takes one if there is one. The check and the take are one write transaction that
holds the bucket's row: on PostgreSQL an INSERT ... ON CONFLICT DO NOTHING makes sure the row
exists and SELECT ... FOR UPDATE locks it, on SQLite the write lock of BEGIN IMMEDIATE (every
`_write`) serialises the whole transaction. So N `publisher serve` processes grant exactly what
one would. Times are the caller's clock (seconds since the epoch), so a test clock drives them.

With capacity 1 and a period of W seconds a bucket is "at most once per W": the web side's
per-mailbox confirmation limit, whose token goes back (`give_back_token`) when the mail fails.
It is keyed on `canonical_mailbox`, so `victim+1@`, `victim+2@` and `v.ictim@gmail.com` share one
allowance: one mailbox gets at most one confirmation mail per W, whatever the spellings used.

A row whose bucket has refilled is the same as no row. Every `PRUNE_EVERY`-th take in a process
deletes up to `PRUNE_BATCH` such rows, in a short transaction of its own that skips rows another
transaction holds, so the table stays the size of the limits currently in force.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from .schema import rate_limits, upsert

PRUNE_EVERY = 16
PRUNE_BATCH = 500
# Refill is computed in floating point from microsecond timestamps: a bucket that is full to
# within this much is full.
_EPSILON = 1e-6


# Providers that deliver every dotted spelling of a local part to one mailbox (Gmail), or also
# ignore hyphens and underscores (Proton), and the domains that are one mailbox there: the
# value is the domain the canonical form uses.
_IGNORED_IN_LOCAL_PART = {
    "gmail.com": (".", "gmail.com"),
    "googlemail.com": (".", "gmail.com"),
    "protonmail.com": ("._-", "proton.me"),
    "protonmail.ch": ("._-", "proton.me"),
    "proton.me": ("._-", "proton.me"),
    "pm.me": ("._-", "proton.me"),
}


def canonical_mailbox(email: str) -> str:
    """The mailbox a normalised address delivers to, for limits only (the stored address stays
    as typed): lower case, without a `+tag`, and without the characters its provider ignores
    (dots at Gmail, dots, hyphens and underscores at Proton)."""
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0] or local
    ignored, domain = _IGNORED_IN_LOCAL_PART.get(domain, ("", domain))
    if ignored:
        local = local.translate({ord(c): None for c in ignored}) or local
    return f"{local}@{domain}"


def _utc(ts: float) -> dt.datetime:
    """Seconds since the epoch as the database's naive UTC time."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).replace(tzinfo=None)


class LimitsMixin:
    engine: sa.Engine
    _limit_takes: int = 0

    def take_token(self, key: str, capacity: float, period: float, now: float) -> bool:
        """Take one token from the bucket `key` (at most 100 characters) if it has one; False
        if it is empty. A new key starts full. A `period` of 0 or less means no limit."""
        if period <= 0:
            return True
        at = _utc(now)
        with self._write() as conn:  # type: ignore[attr-defined]
            tokens, updated = self._refilled(conn, key, capacity, period, at)
            allowed = tokens >= 1.0 - _EPSILON
            if allowed:
                tokens = max(tokens - 1.0, 0.0)
            self._store_bucket(conn, key, capacity, period, tokens, updated)
        self._limit_takes += 1
        if self._limit_takes % PRUNE_EVERY == 0:
            self.prune_limits(now)
        return allowed

    def give_back_token(self, key: str, capacity: float, period: float, now: float) -> None:
        """Put back a token taken for something that then failed (never above `capacity`)."""
        if period <= 0:
            return
        with self._write() as conn:  # type: ignore[attr-defined]
            tokens, updated = self._refilled(conn, key, capacity, period, _utc(now))
            self._store_bucket(conn, key, capacity, period, min(capacity, tokens + 1.0), updated)

    def prune_limits(self, now: float, limit: int = PRUNE_BATCH) -> int:
        """Delete up to `limit` buckets that have refilled by `now` (the same as no row); rows
        another transaction holds are left for next time. Returns how many were deleted."""
        expired = (
            sa.select(rate_limits.c.key)
            .where(rate_limits.c.expires_at <= _utc(now))
            .order_by(rate_limits.c.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._write() as conn:  # type: ignore[attr-defined]
            return conn.execute(rate_limits.delete().where(rate_limits.c.key.in_(expired))).rowcount

    @staticmethod
    def _refilled(
        conn: sa.Connection, key: str, capacity: float, period: float, at: dt.datetime
    ) -> tuple[float, dt.datetime]:
        """Lock the bucket's row (creating it full if absent) and return its tokens refilled up
        to `at`, and the time they are counted from."""
        locked = (
            sa.select(rate_limits.c.tokens, rate_limits.c.updated_at)
            .where(rate_limits.c.key == key)
            .with_for_update()
        )
        for _ in range(10):
            row = conn.execute(locked).first()
            if row is not None:
                break
            # Absent, or deleted by a prune between the insert and the select: (re)create it.
            full = {"key": key, "tokens": float(capacity), "updated_at": at, "expires_at": at}
            upsert(conn, rate_limits, full, ["key"])
        else:
            raise RuntimeError(f"rate limit {key!r}: the row keeps disappearing")
        # Another machine's clock may be behind ours: never refill backwards.
        updated = max(at, row.updated_at)
        elapsed = (updated - row.updated_at).total_seconds()
        return min(float(capacity), row.tokens + elapsed * capacity / period), updated

    @staticmethod
    def _store_bucket(
        conn: sa.Connection,
        key: str,
        capacity: float,
        period: float,
        tokens: float,
        updated: dt.datetime,
    ) -> None:
        # Full again (the same as no row) once the missing tokens have refilled.
        refill = dt.timedelta(seconds=max(capacity - tokens, 0.0) * period / capacity)
        conn.execute(
            rate_limits.update()
            .where(rate_limits.c.key == key)
            .values(tokens=tokens, updated_at=updated, expires_at=updated + refill)
        )
