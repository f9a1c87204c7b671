"""One connection of a send: a worker takes rows from the claims, sends each message over its own
transport with retries (the policy: publisher/delivery/outcome.py), and records what happened in
the ledger writer and the tally it shares with the other workers."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Config
from ..mailrules import HARD, SOFT, ReturnPath, smtp_refusal
from ..privacy import mask_addresses, reader
from ..progress import Progress
from ..state import LedgerEntry
from ..state.protocols import LedgerStore
from ..transport import DeliveryError, SmtpUnreachable, Transport
from .claims import ClaimRevoked, Claims
from .ledger import LedgerWriter
from .outcome import Outcome, outcome, retry_delay

log = logging.getLogger("publisher.delivery")

UNFINISHED = -1  # Worker.send: stopped while waiting to retry; the row stays queued


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
class Tally:
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    retries: int = 0
    attempted: int = 0
    skipped: int = 0
    rejected: int = 0
    fatal: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Worker:
    """One sending thread (`run`) with its own transport (one reused SMTP connection); the
    claims, ledger writer, tally, rate limiter and `halt` are shared by the send's workers.
    Setting `halt` makes it finish and record the message it is sending, then return."""

    def __init__(
        self,
        transport: Transport,
        *,
        cfg: Config,
        store: LedgerStore,
        claims: Claims,
        ledger: LedgerWriter,
        tally: Tally,
        limiter: RateLimiter,
        halt: threading.Event,
        build: Callable[[LedgerEntry], bytes],
        sender: str,
        return_path: ReturnPath | None,
        digest_date: dt.date,
        progress: Progress,
    ) -> None:
        self.transport = transport
        self.cfg = cfg
        self.store = store
        self.claims = claims
        self.ledger = ledger
        self.tally = tally
        self.limiter = limiter
        self.halt = halt
        self.build = build
        self.sender = sender
        self.return_path = return_path
        self.digest_date = digest_date
        self.progress = progress
        self.max_attempts = max(cfg.smtp.max_attempts, 1)

    def run(self) -> None:
        """Send until the claims run dry or the send halts. An exception is handed to the main
        thread through the tally, and halts the other workers."""
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            with self.tally.lock:
                self.tally.fatal = self.tally.fatal or exc
            self.halt.set()
        finally:
            self.transport.close()

    def _envelope(self, entry: LedgerEntry | None) -> str | None:
        """The VERP MAIL FROM of `entry`'s reader; None for no reader, or without a return
        path (the one sender for all)."""
        if entry is None or self.return_path is None:
            return None
        return self.return_path.address(entry.subscriber_id, self.digest_date)

    def _loop(self) -> None:
        claims, ledger, halt = self.claims, self.ledger, self.halt
        last = 0  # ledger ticket of this worker's last accepted message
        entry = claims.next()
        entry_from = self._envelope(entry)
        while entry is not None and not halt.is_set():
            # The next entry is taken early so a pipelining connection can announce it; if the
            # send stops first it simply stays queued in the ledger. Its envelope sender is
            # computed once, here, and used again when its own turn comes.
            upcoming = claims.next(wait=False)
            upcoming_from = self._envelope(upcoming)
            ticket = self.send(
                entry,
                entry_from or self.sender,
                ready=lambda t=last, i=entry.id: (ledger.wait(t), claims.check(i)),
                next_recipient=upcoming.email if upcoming is not None else None,
                next_sender=upcoming_from,
            )
            if ticket == UNFINISHED:
                break  # stopped before its retry: the row stays open, close() gives it back
            # Sent, failed or left out: settled. (A row whose send raised stays claimed until
            # close() gives it back.)
            claims.done(entry.id)
            last = ticket or last
            self.progress.update(self.tally.sent, self.tally.failed)
            if upcoming is None:
                # Commit this worker's last acceptance before next() may wait for other
                # senders: they may be waiting for that very row.
                ledger.wait(last)
                upcoming = claims.next()
                upcoming_from = self._envelope(upcoming)
            entry, entry_from = upcoming, upcoming_from

    def send(
        self,
        entry: LedgerEntry,
        sender: str,
        *,
        ready: Callable[[], None],
        next_recipient: str | None,
        next_sender: str | None = None,
    ) -> int | None:
        """Send one message with retries and record the outcome; return the ledger ticket of
        its `sent` row (None if the message failed or was left out, UNFINISHED if the send
        stopped before a retry). `ready` and `next_recipient` go to the transport (see
        Transport.send)."""
        message = self.build(entry)
        tally, halt = self.tally, self.halt
        attempt = 0
        while True:
            attempt += 1
            self.limiter.wait(halt)
            try:
                # The next message's own VERP sender, only when there is one (a Transport
                # written before VERP need not know the keyword).
                extra = {"next_sender": next_sender} if next_sender else {}
                reply = self.transport.send(
                    sender,
                    entry.email,
                    message,
                    next_recipient=next_recipient,
                    ready=ready,
                    **extra,
                )
            except DeliveryError as exc:
                verdict = outcome(exc, attempt, self.max_attempts, halt.is_set())
                if verdict is Outcome.RETRY:
                    with tally.lock:
                        tally.retries += 1
                    ready()  # record the previous acceptance before sleeping, not after
                    halt.wait(retry_delay(self.cfg.smtp.retry_base_seconds, attempt))
                    if not halt.is_set():
                        continue
                    verdict = Outcome.STOPPED
                if verdict is Outcome.STOPPED:
                    # Stopped with attempts left: not a failure (nor an outage), the next run
                    # sends it.
                    return UNFINISHED
                if verdict is Outcome.OUTAGE:
                    # What is not sent stays queued for the next run.
                    raise SmtpUnreachable(
                        f"{exc.reply} (after {attempt} attempts); nothing was marked failed, "
                        "the send resumes on the next run"
                    ) from None
                self._fail(entry, exc, attempt, verdict)
                return None
            except ClaimRevoked:
                log.info(
                    "left out %s: unsubscribed (or claim lost) during the send",
                    reader(entry.subscriber_id, entry.email),
                )
                with tally.lock:
                    tally.skipped += 1
                return None
            ticket = self.ledger.submit(entry.id, reply, attempt)
            with tally.lock:
                tally.sent += 1
                tally.attempted += 1
            return ticket

    def _fail(self, entry: LedgerEntry, exc: DeliveryError, attempt: int, verdict: Outcome) -> None:
        """Record a failed message: FAILED (retried by --retry-failed), FINAL or BOUNCE."""
        cfg, store = self.cfg, self.store
        final = verdict is not Outcome.FAILED
        store.mark_failed(
            entry.id, exc.reply, final=final, attempts=attempt, owner=self.claims.owner
        )
        bounced = False
        if verdict is Outcome.BOUNCE:
            bounced = True
            store.record_hard_bounce(entry.email, exc.reply, cfg.subscribers.bounce_limit)
        if final:
            _record_refusal(store, entry, exc)
        # Logs name the reader by id and a masked address (journald, shippers: not the list);
        # the reply often echoes the address, so it is masked too.
        log.info(
            "failed %s after %d attempts: %s",
            reader(entry.subscriber_id, entry.email),
            attempt,
            mask_addresses(exc.reply),
        )
        with self.tally.lock:
            self.tally.failed += 1
            self.tally.attempted += 1
            self.tally.bounced += bounced
            self.tally.rejected += verdict is Outcome.FINAL


def _record_refusal(store: LedgerStore, entry: LedgerEntry, exc: DeliveryError) -> None:
    """A 5xx during the send is a bounce event too (kind by cause), so `bounces list` and the
    rates in `publisher status` see it next to the bounces that come back by mail."""
    code, _, text = exc.reply.partition(" ")
    kind, cause = smtp_refusal(int(code) if code.isdigit() else 500, text)
    if exc.kind == "bounce":
        kind = HARD
    elif kind not in (HARD, SOFT) and kind != "blocked":
        kind = SOFT
    action = "counted (refused during the send)" if exc.kind == "bounce" else "recorded"
    store.record_send_refusal(entry.email, entry.digest_date, kind, exc.reply, action, cause)
