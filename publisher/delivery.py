"""Deliver one digest's newsletter to every mailable subscriber, once each.

The pipe: the ledger is filled (`queue_pending`, one INSERT ... SELECT), then
`[smtp] connections` worker threads take pending ledger rows one at a time from a shared
iterator that reads the database a batch at a time; each worker owns one transport (one reused
SMTP connection, PIPELINING when offered) and builds each message on the fly with
`build(email, name) -> bytes`. Memory stays flat: no list of subscribers or messages is built.

Exactly-once, as far as SMTP allows: when the server accepts a message, its `sent` row is
queued for the ledger while the worker goes on with the next message; the worker sends that
next message's final "." (the point where the server may accept it) only once the previous one
is committed, committing itself whatever rows are waiting (group commit) unless another
worker's commit already covers it. A kill -9 at any moment
therefore loses nothing, and a re-run sends only what is not yet `sent`; the only duplicates
are the messages accepted but not yet recorded at the crash, at most one per connection.

Failures: transient ones (4xx, timeouts, dropped connections) are retried on a fresh connection
with exponential backoff (`retry_base_seconds` x 2^n) up to `max_attempts`, then marked failed
(retried by `send --retry-failed`). 5xx replies fail the message for good; a 5xx to RCPT is a
hard bounce, and `[subscribers] bounce_limit` of them suppress the address.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from .config import Config
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

Builder = Callable[[str, str], bytes]


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

    @property
    def ok(self) -> bool:
        """True when every mailable subscriber has the message (the exit status is 0)."""
        return self.unsent_active == 0

    def summary(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.digest_date}: {self.sent} sent, {self.failed} failed "
            f"({self.bounced} hard bounces), {self.retries} retries, in {self.seconds:.1f}s "
            f"({rate:.0f}/s) via {self.transport}; "
            + (
                "every active subscriber has it"
                if self.ok
                else f"{self.unsent_active} active subscribers still without it"
            )
        )


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def update(self, sent: int, failed: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def update(self, sent: int, failed: int) -> None:
        pass

    def finish(self) -> None:
        pass


class LogProgress:
    """Plain lines (for logs and pipes), at most one every `every` seconds."""

    def __init__(self, out=None, every: float = 5.0) -> None:  # noqa: ANN001
        self.out = out or sys.stderr
        self.every = every
        self.total = 0
        self.t0 = self.last = 0.0
        self.lock = threading.Lock()

    def start(self, total: int) -> None:
        self.total = total
        self.t0 = self.last = time.monotonic()
        print(f"sending to {total} subscribers", file=self.out, flush=True)

    def update(self, sent: int, failed: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        with self.lock:
            if now - self.last < self.every:
                return
            self.last = now
        done = sent + failed
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate else 0
        print(
            f"{done}/{self.total}: {sent} sent, {failed} failed, {rate:.0f}/s, ETA {eta:.0f}s",
            file=self.out,
            flush=True,
        )

    def finish(self) -> None:
        pass


class RichProgress:
    """A rich progress bar on a terminal: sent, failed, rate, ETA."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as _Progress

        self.bar = _Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sent {task.fields[sent]} failed {task.fields[failed]}"),
            TextColumn("{task.fields[rate]}/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = None
        self.t0 = 0.0

    def start(self, total: int) -> None:
        self.t0 = time.monotonic()
        self.bar.start()
        self.task = self.bar.add_task("send", total=total, sent=0, failed=0, rate="0")

    def update(self, sent: int, failed: int) -> None:
        done = sent + failed
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        self.bar.update(self.task, completed=done, sent=sent, failed=failed, rate=f"{rate:.0f}")

    def finish(self) -> None:
        self.bar.stop()


def default_progress() -> Progress:
    return RichProgress() if sys.stderr.isatty() else LogProgress()


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
    fatal: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def deliver(
    cfg: Config,
    store: Store,
    digest_date: dt.date,
    build: Builder,
    *,
    retry_failed: bool = False,
    progress: Progress | None = None,
    transport_factory: Callable[[], Transport] | None = None,
    stop: threading.Event | None = None,
) -> DeliveryReport:
    """Send the digest of `digest_date` to every mailable subscriber not yet sent it.

    `build(email, name)` returns the RFC 5322 message bytes (CRLF) for one subscriber.
    Raises SmtpSetupError (a PublisherError) if the server cannot be used at all; whatever was
    sent until then is in the ledger. Setting `stop` (SIGTERM in `publisher run`) makes every
    worker finish and record the message it is sending, then return.
    """
    shutdown = stop
    progress = progress or NoProgress()
    factory = transport_factory or make_transport_factory(cfg)
    transport_name = (
        f"smtp {cfg.smtp.host}:{cfg.smtp.port}" if cfg.smtp.host else f"maildir {cfg.smtp.outbox}"
    )
    sender = envelope_sender(cfg)
    t0 = time.monotonic()
    store.queue_pending(digest_date)
    total = store.count_pending(digest_date, retry_failed)
    store.update_publication(digest_date, email_status="sending", email_started_at=_utcnow())
    workers_n = max(cfg.smtp.connections, 1) if cfg.smtp.host else 1
    feed = _Feed(store.pending_for(digest_date, retry_failed))
    stop = threading.Event()
    tally = _Tally()
    limiter = RateLimiter(cfg.smtp.rate_limit)
    ledger = _LedgerWriter(store)
    progress.start(total)

    def worker() -> None:
        transport = factory()
        last = 0  # ledger ticket of this worker's last accepted message
        try:
            entry = feed.next()
            while entry is not None and not stop.is_set():
                # The next entry is taken early so a pipelining connection can announce it;
                # if the send stops first it simply stays queued in the ledger.
                upcoming = feed.next()
                ticket = _deliver_one(
                    cfg,
                    store,
                    transport,
                    sender,
                    build,
                    entry,
                    tally,
                    limiter,
                    stop,
                    ledger,
                    ready=lambda t=last: ledger.wait(t),
                    next_recipient=upcoming.email if upcoming is not None else None,
                )
                last = ticket or last
                progress.update(tally.sent, tally.failed)
                entry = upcoming
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            with tally.lock:
                tally.fatal = tally.fatal or exc
            stop.set()
        finally:
            transport.close()

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
    finally:
        ledger.close()  # commits every accepted message before anything else happens
        progress.update(tally.sent, tally.failed)
        progress.finish()
    if tally.fatal is not None:
        raise tally.fatal
    if ledger.error is not None:
        raise ledger.error
    unsent = store.unsent_active(digest_date)
    counts = store.ledger_counts(digest_date)
    store.update_publication(
        digest_date,
        email_status="sent" if unsent == 0 else "partial",
        sent=counts["sent"],
        failed=counts["failed"],
        email_finished_at=_utcnow(),
    )
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
    )


class _Feed:
    """The pending ledger rows, shared by the workers: each takes the next under a lock (the
    generator fetches from the database one batch at a time)."""

    def __init__(self, entries: Iterator[LedgerEntry]) -> None:
        self.entries = entries
        self.lock = threading.Lock()

    def next(self) -> LedgerEntry | None:
        with self.lock:
            return next(self.entries, None)


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


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _deliver_one(
    cfg: Config,
    store: Store,
    transport: Transport,
    sender: str,
    build: Builder,
    entry: LedgerEntry,
    tally: _Tally,
    limiter: RateLimiter,
    stop: threading.Event,
    ledger: _LedgerWriter,
    *,
    ready: Callable[[], None],
    next_recipient: str | None,
) -> int | None:
    """Send one message with retries and record the outcome in the ledger; return the ledger
    ticket of a `sent` row (None if the message failed). `ready` and `next_recipient` go to
    the transport (see Transport.send)."""
    message = build(entry.email, entry.name)
    max_attempts = max(cfg.smtp.max_attempts, 1)
    attempt = 0
    while True:
        attempt += 1
        limiter.wait(stop)
        try:
            reply = transport.send(
                sender, entry.email, message, next_recipient=next_recipient, ready=ready
            )
        except DeliveryError as exc:
            if exc.kind == "transient" and attempt < max_attempts and not stop.is_set():
                with tally.lock:
                    tally.retries += 1
                ready()  # record the previous acceptance before sleeping, not after
                stop.wait(cfg.smtp.retry_base_seconds * 2 ** (attempt - 1))
                if not stop.is_set():
                    continue
            if exc.connect:
                # The server is down, not this message: stop the whole send instead of failing
                # every reader in turn; what is not sent stays queued for the next run.
                raise SmtpUnreachable(
                    f"{exc.reply} (after {attempt} attempts); nothing was marked failed, "
                    "the send resumes on the next run"
                ) from None
            final = exc.kind != "transient"
            store.mark_failed(entry.id, exc.reply, final=final, attempts=attempt)
            bounced = False
            if exc.kind == "bounce":
                bounced = True
                store.record_hard_bounce(entry.email, exc.reply, cfg.subscribers.bounce_limit)
            log.info("failed %s after %d attempts: %s", entry.email, attempt, exc.reply)
            with tally.lock:
                tally.failed += 1
                tally.attempted += 1
                tally.bounced += bounced
            return None
        except SmtpSetupError:
            raise
        ticket = ledger.submit(entry.id, reply, attempt)
        with tally.lock:
            tally.sent += 1
            tally.attempted += 1
        return ticket
