"""`deliver`: one digest to every mailable reader, through the workers (publisher/delivery/)."""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..config import Config
from ..editions import Week
from ..mailrules import ReturnPath
from ..progress import NoProgress, Progress
from ..state import LedgerEntry, SendStatus
from ..state.protocols import LedgerStore
from ..transport import Transport, envelope_sender, make_transport_factory
from .claims import CLAIM_BATCH, Claims
from .ledger import LedgerWriter
from .worker import RateLimiter, Tally, Worker

Builder = Callable[[str, str, int], bytes]


@dataclass
class ProcessTotals:
    """What the sends run by this process delivered since it started (reset on restart): the
    per-process counters of /metrics (publisher.metrics reads them at scrape time), kept as
    plain numbers so that a send never loads prometheus_client."""

    sent: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, sent: int, failed: int) -> None:
        with self.lock:
            self.sent += sent
            self.failed += failed


PROCESS_TOTALS = ProcessTotals()


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


def deliver(
    cfg: Config,
    store: LedgerStore,
    digest_date: dt.date,
    build: Builder | None,
    *,
    retry_failed: bool = False,
    include_final: bool = False,
    progress: Progress | None = None,
    transport_factory: Callable[[], Transport] | None = None,
    stop: threading.Event | None = None,
    segments: SegmentedBuilder | None = None,
    return_path: ReturnPath | None = None,
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
    messages failed for good (5xx). `return_path` (`ReturnPath.of([email] return_path, secret)`,
    required when that key is set) gives each message its own VERP envelope sender.
    """
    if cfg.email.return_path and return_path is None:
        raise TypeError("deliver() needs return_path: [email] return_path is set")
    retry_failed = retry_failed or include_final
    progress = progress or NoProgress()
    factory = transport_factory or make_transport_factory(cfg)
    transport_name = (
        f"smtp {cfg.smtp.host}:{cfg.smtp.port}" if cfg.smtp.host else f"maildir {cfg.smtp.outbox}"
    )
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
    # `halt` stops the workers: set when the caller's `stop` is, when a worker fails for good,
    # and on Ctrl-C.
    halt = threading.Event()
    claims = Claims(
        store,
        digest_date,
        retry_failed=retry_failed,
        include_final=include_final,
        lease_seconds=cfg.state.lease_seconds,
        batch=max(CLAIM_BATCH, 8 * workers_n),
        stop=halt,
        edition=edition,
    )
    tally = Tally()
    ledger = LedgerWriter(store, digest_date)
    worker = functools.partial(
        Worker,
        cfg=cfg,
        store=store,
        claims=claims,
        ledger=ledger,
        tally=tally,
        limiter=RateLimiter(cfg.smtp.rate_limit),
        halt=halt,
        build=make,
        sender=envelope_sender(cfg),
        return_path=return_path,
        digest_date=digest_date,
        progress=progress,
    )
    progress.start(total)
    if stop is not None and stop.is_set():
        halt.set()  # stopped before the send began (e.g. during the CSV import)
    # The report's count of readers still without the edition: the last pass's, when the send
    # ran to its end (nothing is sent after it: counting again read every reader once more,
    # 30 ms at 20,000 readers and seconds at a million), else counted once the send stopped.
    unsent: int | None = None
    try:
        while True:
            _run([worker(factory()) for _ in range(workers_n)], stop, halt)
            if halt.is_set() or tally.fatal is not None:
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
            unsent = None
            progress.grow(added)
    finally:
        ledger.close()  # commits every accepted message before anything else happens
        claims.close()  # gives back the claimed rows not sent (a stop), for any sender to take
        progress.update(tally.sent, tally.failed)
        progress.finish()
    PROCESS_TOTALS.add(tally.sent, tally.failed)
    if tally.fatal is not None:
        raise tally.fatal
    if ledger.error is not None:
        raise ledger.error
    if unsent is None:
        unsent = store.unsent_active(digest_date, edition=edition)
    # The one status (an index range), not the edition's counts, which publish.py takes next:
    # at a million readers each of those reads every row.
    nomatch = store.ledger_counts(digest_date, edition=edition, statuses=(SendStatus.NOMATCH,))
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
        stopped=stop is not None and stop.is_set(),
        nomatch=nomatch[SendStatus.NOMATCH],
        edition=edition,
    )


def _run(workers: list[Worker], stop: threading.Event | None, halt: threading.Event) -> None:
    """One pass: each worker in a thread of its own, until the claims run dry or `halt` is set
    (by a worker, by `stop`, or by Ctrl-C here)."""
    threads = [
        threading.Thread(target=w.run, name=f"smtp-{i}", daemon=True) for i, w in enumerate(workers)
    ]
    for t in threads:
        t.start()
    try:
        # join() with a timeout so Ctrl-C reaches this thread.
        for t in threads:
            while t.is_alive():
                t.join(0.2)
                if stop is not None and stop.is_set():
                    halt.set()
    except BaseException:
        # Ctrl-C: let each worker finish (and record) the message it is sending, then stop.
        halt.set()
        for t in threads:
            t.join()
        raise
