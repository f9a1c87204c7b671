"""The rows one sender has claimed from the ledger: taken in batches under a lease, handed to the
workers one at a time, renewed and checked by a background thread (see `Claims`)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque

from ..state import LedgerEntry
from ..state.protocols import LedgerStore

log = logging.getLogger("publisher.delivery")

CLAIM_BATCH = 100  # ledger rows a sender claims at a time, at least (and 8 per connection)
# ... and at most: a fast sender claims what it sends in a quarter of its lease (`Claims._size`).
CLAIM_BATCH_MAX = 1000


class ClaimRevoked(Exception):
    """The row must not be sent after all: its reader unsubscribed (or bounced, or was
    suppressed) since it was claimed, or another sender took the claim over."""


class Claims:
    """This sender's share of one digest's ledger: rows claimed in batches with a lease, handed
    to the workers one at a time, kept honest by a background thread.

    The thread renews the lease every third of `lease_seconds` and checks every `REFRESH`
    seconds which claimed rows may no longer be sent (`Store.revoked_claims`); `check(id)`,
    called right before a message can be accepted, raises `ClaimRevoked` for those, and redoes
    the check itself if the last one started more than `STALE` seconds ago, so an unsubscribe
    committed before that is always seen. When nothing is left to claim but other senders hold
    rows under live leases, `next()` waits for them (they finish, or their lease runs out and
    their rows are claimed here): a send returns when the digest is delivered, not earlier.

    The next batch is claimed ahead, by the same thread, once the rows at hand fall below a
    quarter of the last claim (`_running_low`): a claim takes tens of milliseconds on a busy
    PostgreSQL, and claimed only when the rows ran out, every connection of the sender waited
    for it about once per thousand messages.
    """

    REFRESH = 0.25
    STALE = 0.5

    def __init__(
        self,
        store: LedgerStore,
        digest_date: dt.date,
        *,
        retry_failed: bool,
        include_final: bool = False,
        lease_seconds: float,
        batch: int,
        stop: threading.Event,
        edition: str = "daily",
    ) -> None:
        self.store = store
        self.digest_date = digest_date
        self.edition = edition
        self.retry_failed = retry_failed
        self.include_final = include_final
        # Failed rows are wanted again (retry_failed) only if they failed before this send
        # began: one it failed itself has used up its max_attempts here.
        self.started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        self.lease = max(lease_seconds, 1.0)
        self.batch = batch
        self.stop = stop
        self.host = socket.gethostname()[:60].replace(":", "-")
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self.queue: deque[LedgerEntry] = deque()
        self.open: set[int] = set()  # claimed and not finished: renewed, checked, released
        self.revoked: set[int] = set()
        self.checked_at = self.started_at = time.monotonic()
        self.finished = 0  # rows sent or failed (`done`): this sender's rate sizes its claims
        self.lock = threading.Lock()
        self.fetching = threading.Lock()  # one claim query at a time
        self.refreshing = threading.Lock()
        self.closed = threading.Event()
        # Set when the rows at hand run low: wakes the thread below to claim the next batch.
        self.wake = threading.Event()
        self.full = False  # the last claim got all it asked for: there may be more to claim
        self.last_size = 0  # how many rows the last claim asked for
        self.keeper = threading.Thread(target=self._keep, name="claims", daemon=True)
        self.keeper.start()

    def next(self, wait: bool = True) -> LedgerEntry | None:
        """The next row to send, or None when this sender has nothing left of the digest.

        `wait=False` (a worker looking one message ahead, for pipelining) never blocks: a worker
        must not hold its own row back while waiting for other senders, who may be waiting for
        that very row."""
        while True:
            with self.lock:
                while self.queue:
                    entry = self.queue.popleft()
                    if entry.id not in self.revoked:
                        if self._running_low():
                            self.wake.set()
                        return entry
            if self.stop.is_set() or not self.fetching.acquire(blocking=wait):
                return None
            try:
                with self.lock:
                    refilled = bool(self.queue)  # by another thread while this one waited
                if not refilled:
                    refilled = self._claim() > 0
                if not refilled and not wait:
                    return None
                others = refilled or self._others()
            finally:
                self.fetching.release()
            if not others:
                return None
            if not refilled:
                self.stop.wait(self.REFRESH)

    def _claim(self) -> int:
        """Claim the next batch into the queue; how many rows. Holding `fetching`."""
        size = self._size()
        entries = self.store.claim(
            self.digest_date,
            self.owner,
            size,
            self.lease,
            self.retry_failed,
            self.include_final,
            failed_before=self.started,
            edition=self.edition,
        )
        with self.lock:
            self.queue.extend(entries)
            self.open.update(e.id for e in entries)
            self.full = len(entries) >= size
            self.last_size = size
        return len(entries)

    def _running_low(self) -> bool:
        """Whether to claim ahead now (holding `lock`): the last claim was full, and what is
        left of the rows at hand would last less than a quarter of it."""
        return self.full and len(self.queue) < self.last_size // 4

    def _claim_ahead(self) -> None:
        """Claim the next batch before the rows at hand run out, unless a worker is claiming
        already (then it refills the queue itself) or the send is stopping. If the claim fails,
        no other is tried ahead (each message would wake the thread to fail and log again):
        the worker that finds the queue empty claims, and meets the error itself."""
        if self.stop.is_set() or self.closed.is_set() or not self.fetching.acquire(blocking=False):
            return
        try:
            with self.lock:
                if not self._running_low():
                    return
            try:
                self._claim()
            except Exception:
                with self.lock:
                    self.full = False
                raise
        finally:
            self.fetching.release()

    def _size(self) -> int:
        """How many rows to claim: what this sender has been sending in a quarter of its lease,
        between `batch` and CLAIM_BATCH_MAX. A claim costs a few milliseconds however small
        (at 3,000 messages a second, 100-row claims were a tenth of the send's CPU), while a
        slow sender must not hold more rows than it renews and sends in time (a renewal of many
        rows on a busy database outlasted a short lease, and others took them over)."""
        elapsed = time.monotonic() - self.started_at
        rate = self.finished / elapsed if elapsed >= 1.0 else 0.0
        return max(self.batch, min(CLAIM_BATCH_MAX, int(rate * self.lease / 4)))

    def _others(self) -> bool:
        """Whether other live senders hold rows of this digest. A sender on this machine whose
        process is gone (kill -9) does not count: its rows are given back at once instead of
        after its lease."""
        others = self.store.other_claimants(
            self.digest_date,
            self.owner,
            self.retry_failed,
            self.include_final,
            edition=self.edition,
        )
        for other in others:
            host, _, rest = other.partition(":")
            pid = rest.partition(":")[0]
            if host == self.host and pid.isdigit() and not _pid_alive(int(pid)):
                log.info("taking over the claims of %s (that process is gone)", other)
                self.store.expire_claims(self.digest_date, other, edition=self.edition)
        return bool(others)  # a dead one's rows are claimed on the next round

    def check(self, entry_id: int) -> None:
        """Raise ClaimRevoked unless `entry_id` may still be sent (see the class)."""
        if time.monotonic() - self.checked_at > self.STALE:
            self._refresh()
        if entry_id in self.revoked:
            raise ClaimRevoked(entry_id)

    def done(self, entry_id: int) -> None:
        """The row is sent or failed: no longer this sender's to renew or release. (A row left
        out stays open, so close() gives it back for when its reader comes back.)"""
        with self.lock:
            self.finished += 1
            if entry_id not in self.revoked:
                self.open.discard(entry_id)

    def _refresh(self) -> None:
        with self.refreshing:
            started = time.monotonic()
            if started - self.checked_at <= self.REFRESH / 2:
                return  # another thread has just done it
            with self.lock:
                ids = list(self.open)
            revoked = self.store.revoked_claims(self.owner, ids, digest_date=self.digest_date)
            with self.lock:
                self.revoked = revoked
                self.checked_at = started

    def _keep(self) -> None:
        """The keeper thread: every REFRESH seconds the revocation check, every third of a
        lease the renewal, and when woken (`wake`) the next claim ahead of need."""
        renewed = time.monotonic()
        due = renewed + self.REFRESH
        while True:
            woken = self.wake.wait(max(0.0, due - time.monotonic()))
            if self.closed.is_set():
                return
            try:
                if woken:
                    self.wake.clear()
                    self._claim_ahead()
                now = time.monotonic()
                if now < due:
                    continue
                due = now + self.REFRESH
                self._refresh()
                if now - renewed > self.lease / 3:
                    renewed = now
                    with self.lock:
                        ids = list(self.open)
                    self.store.renew_claims(
                        self.owner, ids, self.lease, digest_date=self.digest_date
                    )
            except Exception:  # noqa: BLE001 - the workers' own check() raises it if it lasts
                log.warning("checking claims failed; retrying", exc_info=True)

    def close(self) -> None:
        """Stop the keeper and give back every claimed row not sent."""
        self.closed.set()
        self.wake.set()
        self.keeper.join()
        with self.lock:
            ids, self.open = list(self.open), set()
            self.queue.clear()
        self.store.release_claims(self.owner, ids, digest_date=self.digest_date)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
