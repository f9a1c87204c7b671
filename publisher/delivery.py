"""Deliver one digest's newsletter to every mailable subscriber, once each.

The pipe: the ledger is filled (`queue_pending`, one INSERT ... SELECT, idempotent), then
`[smtp] connections` worker threads take ledger rows one at a time from this sender's claims
(`_Claims`: batches of rows claimed in the database with a lease, so any number of senders, in
any number of processes or machines, split one digest between them and never take the same
row); each worker owns one transport (one reused SMTP connection, PIPELINING when offered) and
builds each message on the fly with `build(email, name, subscriber_id) -> bytes`. Memory stays
flat: no list of subscribers or messages is built. Readers who join while the send runs (an
import, a confirmed signup, committed after the first `queue_pending`) are queued once the
workers run dry and mailed in one more pass, so a send ends with every active subscriber
served, whatever else ran beside it.

Unsubscribes during a send: the claimed rows are checked against the subscribers' status at
most `_Claims.STALE` seconds before each message's final "." (a background check every
`_Claims.REFRESH` s, redone on the spot if it is late), and a row whose reader unsubscribed,
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
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .config import Config
from .mailrules import ReturnPath
from .privacy import mask_addresses, reader
from .progress import NoProgress, Progress
from .state import LedgerEntry, SentRecorder, Store
from .transport import (
    DeliveryError,
    SmtpSetupError,
    SmtpUnreachable,
    Transport,
    envelope_sender,
    make_transport_factory,
)

log = logging.getLogger("publisher.delivery")

Builder = Callable[[str, str, int], bytes]


class SegmentedBuilder(Protocol):
    """The messages of an edition with reader choice (publisher.mailer.Segments): rows are
    queued with their reader's segment, and one whose topics match none of `present_topics`
    is recorded `nomatch` (served, nothing to send) instead of queued."""

    present_topics: frozenset[str] | None

    def build_entry(self, entry: LedgerEntry) -> bytes: ...


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    digest_date: dt.date
    transport: str
    attempted: int
    sent: int
    failed: int
    bounced: int
    retries: int
    unsent_active: int
    seconds: float
    skipped: int = 0  # claimed, then left out: unsubscribed (or suppressed) during the send
    rejected: int = 0  # failed for good for a reason not the address (e.g. 554 content)
    stopped: bool = False  # `stop` was set (SIGTERM/SIGINT) before the end
    nomatch: int = 0  # readers of this edition served with nothing matched (no email)
    edition: str = "daily"  # or weekly: digest_date is then the Monday of the week

    @property
    def name(self) -> str:
        """The edition's name: its date, or the weekly edition's ISO week ("week 2026-W49")."""
        if self.edition == "weekly":
            from .editions import Week

            return f"week {Week.of(self.digest_date)}"
        return str(self.digest_date)

    @property
    def ok(self) -> bool:
        """True when every mailable subscriber has the message or a final failure (a 5xx:
        nothing a re-run would do); the exit status is then 0."""
        return self.unsent_active == 0

    def summary(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.name}: {self.sent} sent, {self.failed} failed "
            f"({self.bounced} hard bounces), {self.retries} retries, in {self.seconds:.1f}s "
            f"({rate:.0f}/s) via {self.transport}; "
            + (f"{self.skipped} left out (unsubscribed during the send); " if self.skipped else "")
            + (
                f"{self.nomatch} with nothing matching their topics (no email); "
                if self.nomatch
                else ""
            )
            + (
                f"{self.rejected} rejected by the server for content or policy (5xx, final; "
                "`publisher send --retry-failed --include-final` retries them); "
                if self.rejected
                else ""
            )
            + (
                "every active subscriber has it or a final failure"
                if self.ok and self.rejected
                else "every active subscriber has it"
                if self.ok
                else f"{self.unsent_active} active subscribers still without it"
            )
        )


class RateLimiter:
    """At most `rate` acquisitions per second across all workers (0 = unlimited)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            slot = max(now, self.next)
            self.next = slot + self.interval
        if slot > now:
            stop.wait(slot - now)


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    retries: int = 0
    attempted: int = 0
    skipped: int = 0
    rejected: int = 0
    fatal: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def deliver(
    cfg: Config,
    store: Store,
    digest_date: dt.date,
    build: Builder | None,
    *,
    retry_failed: bool = False,
    include_final: bool = False,
    progress: Progress | None = None,
    transport_factory: Callable[[], Transport] | None = None,
    stop: threading.Event | None = None,
    segments: SegmentedBuilder | None = None,
    edition: str = "daily",
) -> DeliveryReport:
    """Send the digest of `digest_date` to every mailable subscriber not yet sent it (with
    `edition="weekly"`: the weekly edition of the week starting that Monday, to weekly readers).

    `build(email, name, subscriber_id)` returns the RFC 5322 message bytes (CRLF) for one
    subscriber; or `segments` builds each row's message in its reader's segment (reader choice).
    Raises SmtpSetupError (a PublisherError) if the server cannot be used at all; whatever was
    sent until then is in the ledger. Setting `stop` (SIGTERM or SIGINT in `publisher run` and
    `publisher send`) makes every worker finish and record the message it is sending, then
    return (`stopped` in the report). `include_final` (with `retry_failed`) also retries the
    messages failed for good (5xx).
    """
    retry_failed = retry_failed or include_final
    shutdown = stop
    progress = progress or NoProgress()
    factory = transport_factory or make_transport_factory(cfg)
    transport_name = (
        f"smtp {cfg.smtp.host}:{cfg.smtp.port}" if cfg.smtp.host else f"maildir {cfg.smtp.outbox}"
    )
    sender = envelope_sender(cfg)
    verp = return_path(cfg)
    t0 = time.monotonic()
    if segments is not None:
        make: Callable[[LedgerEntry], bytes] = segments.build_entry
        present = segments.present_topics
    elif build is not None:
        make = lambda e: build(e.email, e.name, e.subscriber_id)  # noqa: E731
        present = None
    else:
        raise TypeError("deliver() needs build or segments")
    store.queue_pending(digest_date, present, edition=edition)
    total = store.count_pending(digest_date, retry_failed, include_final, edition=edition)
    workers_n = max(cfg.smtp.connections, 1) if cfg.smtp.host else 1
    stop = threading.Event()
    feed = _Claims(
        store,
        digest_date,
        retry_failed=retry_failed,
        include_final=include_final,
        lease_seconds=cfg.state.lease_seconds,
        batch=max(CLAIM_BATCH, 8 * workers_n),
        stop=stop,
        edition=edition,
    )
    tally = _Tally()
    limiter = RateLimiter(cfg.smtp.rate_limit)
    ledger = _LedgerWriter(store)
    progress.start(total)

    def envelope_of(entry: LedgerEntry | None) -> str | None:
        """MAIL FROM for one reader (None for no reader): their VERP address, or the one
        sender for all."""
        if entry is None:
            return None
        return verp.address(entry.subscriber_id, digest_date) if verp else sender

    def worker() -> None:
        transport = factory()
        last = 0  # ledger ticket of this worker's last accepted message
        try:
            entry = feed.next()
            entry_from = envelope_of(entry)
            while entry is not None and not stop.is_set():
                # The next entry is taken early so a pipelining connection can announce it;
                # if the send stops first it simply stays queued in the ledger. Its envelope
                # sender is computed once, here, and used again when its own turn comes.
                upcoming = feed.next(wait=False)
                upcoming_from = envelope_of(upcoming)
                ticket = _deliver_one(
                    cfg,
                    store,
                    transport,
                    entry_from or sender,
                    make,
                    entry,
                    tally,
                    limiter,
                    stop,
                    ledger,
                    feed,
                    ready=lambda t=last, i=entry.id: (ledger.wait(t), feed.check(i)),
                    next_recipient=upcoming.email if upcoming is not None else None,
                    next_sender=upcoming_from if verp else None,
                )
                if ticket is _UNFINISHED:
                    break  # stopped before its retry: the row stays open, close() gives it back
                # Sent, failed or left out: settled. (A row whose send raised stays claimed
                # until close() gives it back.)
                feed.done(entry.id)
                last = ticket or last
                progress.update(tally.sent, tally.failed)
                if upcoming is None:
                    # Commit this worker's last acceptance before next() may wait for other
                    # senders: they may be waiting for that very row.
                    ledger.wait(last)
                    upcoming = feed.next()
                    upcoming_from = envelope_of(upcoming)
                entry, entry_from = upcoming, upcoming_from
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            with tally.lock:
                tally.fatal = tally.fatal or exc
            stop.set()
        finally:
            transport.close()

    def one_pass() -> None:
        threads = [
            threading.Thread(target=worker, name=f"smtp-{i}", daemon=True) for i in range(workers_n)
        ]
        for t in threads:
            t.start()
        try:
            # join() with a timeout so Ctrl-C reaches this thread.
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
                    if shutdown is not None and shutdown.is_set():
                        stop.set()
        except BaseException:
            # Ctrl-C: let each worker finish (and record) the message it is sending, then stop.
            stop.set()
            for t in threads:
                t.join()
            raise

    if shutdown is not None and shutdown.is_set():
        stop.set()  # stopped before the send began (e.g. during the CSV import)
    try:
        while True:
            one_pass()
            if stop.is_set() or tally.fatal is not None:
                break
            ledger.wait(ledger.submitted)  # the count below must see every acceptance
            # Readers who arrived during the send (an import, a confirmed signup) get it too.
            # Counted first, queued second: whoever the count saw is queued now and mailed in
            # another pass, so the report never calls a reader "still without it" merely
            # because they were added after the queueing at the start.
            unsent = store.unsent_active(digest_date, edition=edition)
            added = store.queue_pending(digest_date, present, edition=edition) if unsent else 0
            if not added:
                break
            progress.grow(added)
    finally:
        ledger.close()  # commits every accepted message before anything else happens
        feed.close()  # gives back the claimed rows not sent (a stop), for any sender to take
        progress.update(tally.sent, tally.failed)
        progress.finish()
    if tally.fatal is not None:
        raise tally.fatal
    if ledger.error is not None:
        raise ledger.error
    unsent = store.unsent_active(digest_date, edition=edition)
    return DeliveryReport(
        digest_date=digest_date,
        transport=transport_name,
        attempted=tally.attempted,
        sent=tally.sent,
        failed=tally.failed,
        bounced=tally.bounced,
        retries=tally.retries,
        unsent_active=unsent,
        seconds=time.monotonic() - t0,
        skipped=tally.skipped,
        rejected=tally.rejected,
        stopped=shutdown is not None and shutdown.is_set(),
        nomatch=store.ledger_counts(digest_date, edition=edition).get("nomatch", 0),
        edition=edition,
    )


CLAIM_BATCH = 100  # ledger rows a sender claims at a time (at least 8 per connection)


class ClaimRevoked(Exception):
    """The row must not be sent after all: its reader unsubscribed (or bounced, or was
    suppressed) since it was claimed, or another sender took the claim over."""


class _Claims:
    """This sender's share of one digest's ledger: rows claimed in batches with a lease, handed
    to the workers one at a time, kept honest by a background thread.

    The thread renews the lease every third of `lease_seconds` and checks every `REFRESH`
    seconds which claimed rows may no longer be sent (`Store.revoked_claims`); `check(id)`,
    called right before a message can be accepted, raises `ClaimRevoked` for those, and redoes
    the check itself if the last one started more than `STALE` seconds ago, so an unsubscribe
    committed before that is always seen. When nothing is left to claim but other senders hold
    rows under live leases, `next()` waits for them (they finish, or their lease runs out and
    their rows are claimed here): a send returns when the digest is delivered, not earlier.
    """

    REFRESH = 0.25
    STALE = 0.5

    def __init__(
        self,
        store: Store,
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
        self.checked_at = time.monotonic()
        self.lock = threading.Lock()
        self.fetching = threading.Lock()  # one claim query at a time
        self.refreshing = threading.Lock()
        self.closed = threading.Event()
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
                        return entry
            if self.stop.is_set() or not self.fetching.acquire(blocking=wait):
                return None
            try:
                with self.lock:
                    refilled = bool(self.queue)  # by another worker while this one waited
                if not refilled:
                    entries = self.store.claim(
                        self.digest_date,
                        self.owner,
                        self.batch,
                        self.lease,
                        self.retry_failed,
                        self.include_final,
                        failed_before=self.started,
                        edition=self.edition,
                    )
                    with self.lock:
                        self.queue.extend(entries)
                        self.open.update(e.id for e in entries)
                    refilled = bool(entries)
                if not refilled and not wait:
                    return None
                others = refilled or self._others()
            finally:
                self.fetching.release()
            if not others:
                return None
            if not refilled:
                self.stop.wait(self.REFRESH)

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
            if entry_id not in self.revoked:
                self.open.discard(entry_id)

    def _refresh(self) -> None:
        with self.refreshing:
            started = time.monotonic()
            if started - self.checked_at <= self.REFRESH / 2:
                return  # another thread has just done it
            with self.lock:
                ids = list(self.open)
            revoked = self.store.revoked_claims(self.owner, ids)
            with self.lock:
                self.revoked = revoked
                self.checked_at = started

    def _keep(self) -> None:
        renewed = time.monotonic()
        while not self.closed.wait(self.REFRESH):
            try:
                self._refresh()
                if time.monotonic() - renewed > self.lease / 3:
                    renewed = time.monotonic()
                    with self.lock:
                        ids = list(self.open)
                    self.store.renew_claims(self.owner, ids, self.lease)
            except Exception:  # noqa: BLE001 - the workers' own check() raises it if it lasts
                log.warning("checking claims failed; retrying", exc_info=True)

    def close(self) -> None:
        """Stop the keeper and give back every claimed row not sent."""
        self.closed.set()
        self.keeper.join()
        with self.lock:
            ids, self.open = list(self.open), set()
            self.queue.clear()
        self.store.release_claims(self.owner, ids)


class _LedgerWriter:
    """Group commit of `sent` rows on one long-lived connection, done by the workers themselves.

    A worker submits its accepted message and goes on; before letting the server accept its
    next message it calls `wait(ticket)`. If that row is not committed yet, the first worker
    to need it commits everything submitted so far in one transaction while the others wait
    for that commit. No separate writer thread: handing each batch to one and waking the
    workers back cost two thread switches per message, which on a busy machine took longer
    than the commit itself.
    """

    def __init__(self, store: Store) -> None:
        self.recorder: SentRecorder = store.sent_recorder()
        self.lock = threading.Lock()
        self.committed = threading.Condition(self.lock)  # `done` moved, or an error
        self.pending: list[tuple[int, str, int]] = []
        self.submitted = 0  # tickets handed out: row n of this run has ticket n
        self.done = 0  # every ticket <= done is committed
        self.busy = False  # a worker is committing
        self.error: BaseException | None = None

    def submit(self, entry_id: int, reply: str, attempts: int) -> int:
        with self.lock:
            if self.error is not None:
                raise self.error
            self.pending.append((entry_id, reply, attempts))
            self.submitted += 1
            return self.submitted

    def wait(self, ticket: int) -> None:
        """Return once the row with `ticket` (0: none) is committed, committing it (and every
        other submitted row) if no other worker is; raise if committing failed."""
        with self.committed:
            while self.error is None and self.done < ticket:
                if self.busy:
                    self.committed.wait()
                else:
                    self._commit_locked()
            if self.error is not None:
                raise self.error

    def _commit_locked(self) -> None:
        """Commit what is pending; called and returns with the lock held (released meanwhile)."""
        batch, self.pending = self.pending, []
        upto = self.submitted
        self.busy = True
        self.lock.release()
        error: BaseException | None = None
        try:
            self.recorder.record(batch)
        except BaseException as exc:  # noqa: BLE001 - raised in every waiter
            error = exc
        finally:
            self.lock.acquire()
            self.busy = False
        if error is not None:
            self.error = self.error or error
        else:
            self.done = max(self.done, upto)
        self.committed.notify_all()

    def close(self) -> None:
        """Commit what is submitted (after any commit in progress); `error` says if it failed.
        Called once the workers are done."""
        with self.committed:
            while self.busy:
                self.committed.wait()
            if self.pending and self.error is None:
                self._commit_locked()
        self.recorder.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


_UNFINISHED = -1  # _deliver_one: stopped while waiting to retry; the row stays queued


def _deliver_one(
    cfg: Config,
    store: Store,
    transport: Transport,
    sender: str,
    build: Callable[[LedgerEntry], bytes],
    entry: LedgerEntry,
    tally: _Tally,
    limiter: RateLimiter,
    stop: threading.Event,
    ledger: _LedgerWriter,
    claims: _Claims,
    *,
    ready: Callable[[], None],
    next_recipient: str | None,
    next_sender: str | None = None,
) -> int | None:
    """Send one message with retries and record the outcome in the ledger; return the ledger
    ticket of a `sent` row (None if the message failed, _UNFINISHED if the send was stopped
    before a retry). `ready` and `next_recipient` go to the transport (see Transport.send)."""
    message = build(entry)
    max_attempts = max(cfg.smtp.max_attempts, 1)
    attempt = 0
    while True:
        attempt += 1
        limiter.wait(stop)
        try:
            # The next message's own VERP sender, only when there is one (a Transport written
            # before VERP need not know the keyword).
            extra = {"next_sender": next_sender} if next_sender else {}
            reply = transport.send(
                sender, entry.email, message, next_recipient=next_recipient, ready=ready, **extra
            )
        except DeliveryError as exc:
            if exc.kind == "transient" and attempt < max_attempts and not stop.is_set():
                with tally.lock:
                    tally.retries += 1
                ready()  # record the previous acceptance before sleeping, not after
                stop.wait(cfg.smtp.retry_base_seconds * 2 ** (attempt - 1))
                if not stop.is_set():
                    continue
            if exc.kind == "transient" and attempt < max_attempts:
                # Stopped with attempts left: not a failure (nor an outage), the next run sends it.
                return _UNFINISHED
            if exc.connect:
                # The server is down, not this message: stop the whole send instead of failing
                # every reader in turn; what is not sent stays queued for the next run.
                raise SmtpUnreachable(
                    f"{exc.reply} (after {attempt} attempts); nothing was marked failed, "
                    "the send resumes on the next run"
                ) from None
            final = exc.kind != "transient"
            store.mark_failed(
                entry.id, exc.reply, final=final, attempts=attempt, owner=claims.owner
            )
            bounced = False
            if exc.kind == "bounce":
                bounced = True
                store.record_hard_bounce(entry.email, exc.reply, cfg.subscribers.bounce_limit)
            if final:
                _record_refusal(store, entry, exc)
            # Logs name the reader by id and a masked address (journald, shippers: not the
            # list); the reply often echoes the address, so it is masked too.
            log.info(
                "failed %s after %d attempts: %s",
                reader(entry.subscriber_id, entry.email),
                attempt,
                mask_addresses(exc.reply),
            )
            with tally.lock:
                tally.failed += 1
                tally.attempted += 1
                tally.bounced += bounced
                tally.rejected += exc.kind == "permanent"
            return None
        except ClaimRevoked:
            log.info(
                "left out %s: unsubscribed (or claim lost) during the send",
                reader(entry.subscriber_id, entry.email),
            )
            with tally.lock:
                tally.skipped += 1
            return None
        except SmtpSetupError:
            raise
        ticket = ledger.submit(entry.id, reply, attempt)
        with tally.lock:
            tally.sent += 1
            tally.attempted += 1
        return ticket


def return_path(cfg: Config) -> ReturnPath | None:
    """The VERP envelope senders (`[email] return_path`), or None to send from the From
    address. Keyed once; a sender is one HMAC copy and a base32 per message."""
    if not cfg.email.return_path:
        return None
    from .tokens import secret_from_env

    return ReturnPath(cfg.email.return_path, secret_from_env(cfg))


def _record_refusal(store: Store, entry: LedgerEntry, exc: DeliveryError) -> None:
    """A 5xx during the send is a bounce event too (kind by cause), so `bounces list` and the
    rates in `publisher status` see it next to the bounces that come back by mail."""
    from .mailrules import HARD, smtp_refusal_kind

    code, _, text = exc.reply.partition(" ")
    kind = (
        HARD
        if exc.kind == "bounce"
        else smtp_refusal_kind(int(code) if code.isdigit() else 500, text)
    )
    action = "counted (refused during the send)" if exc.kind == "bounce" else "recorded"
    store.record_send_refusal(entry.email, entry.digest_date, kind, exc.reply, action)
