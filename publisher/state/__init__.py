"""The state database: subscribers, suppressions, the send ledger and publications.

One module per concern, each a mixin over the shared engine (`schema.StoreBase`); `Store` is
their sum, so callers keep one handle. The tables are in `schema` (not re-exported: the
name `subscribers` is a module here).


- `schema`: tables, statuses, the address key, the engine (SQLite pragmas);
- `subscribers`: subscribers, the suppression list, the CSV sync's database half;
- `lifecycle`: the only writer of a subscriber's status, hard bounces, the suppression list
  and the audit trail (the rules, the lock order);
- `ledger`: the send ledger and its group-commit recorder;
- `limits`: rate limits every process shares (token buckets in the database);
- `publications`: what the scheduler has seen and emailed, and the meta key/value table;
- `locks`: named locks across processes and machines (advisory locks, flock);
- `bounces`: inbound mail (bounces, complaints, mailto unsubscribes) and what it does.
- `compaction`: expired editions' ledger rows folded into per-edition counts (`ledger_totals`).
- `protocols`: what each caller needs of `Store` (ledger, subscribers, publications, inbound,
  web), as narrow `typing.Protocol`s the callers are typed against.

Quick tour::

    store = Store.open(cfg)
    sub, created = store.add_subscriber("ada@example.com", "Ada", status="active", source="web")
    store.unsubscribe("ada@example.com")          # status unsubscribed + suppression
    store.counts_by_status()                      # {"active": 3, "unsubscribed": 1, ...}
    store.queue_pending(date(2024, 5, 15))        # one queued ledger row per active subscriber
    recorder = store.sent_recorder()             # sent marks, a batch per commit
    recorder.record((e.id, "250 OK", 1) for e in store.pending_for(date(2024, 5, 15)))
"""

from __future__ import annotations

from .bounces import BounceEvent, BouncePolicy, BouncesMixin, InboundEvent
from .claims import ClaimsMixin
from .compaction import CompactionMixin
from .ledger import LedgerEntry, LedgerMixin, SentRecorder
from .limits import LimitsMixin
from .locks import LocksMixin
from .publications import Publication, PublicationsMixin
from .schema import (
    ACTIVE,
    BOUNCED,
    CADENCES,
    CHOICE_SOURCES,
    EMAIL_STATUSES,
    FAILED,
    NAME_MAX,
    NOMATCH,
    PENDING,
    QUEUED,
    REMOVED,
    SENT,
    SOURCES,
    STATUSES,
    UNSUBSCRIBED,
    AddressNormalizer,
    EmailStatus,
    InvalidAddress,
    SendStatus,
    Source,
    Status,
    StoreBase,
    UnknownSubscriber,
    normalize_email,
    normalize_name,
)
from .subscribers import (
    ChoiceUpdate,
    CsvSyncResult,
    Subscriber,
    SubscribersMixin,
    join_topics,
    split_topics,
)


class Store(
    SubscribersMixin,
    LedgerMixin,
    ClaimsMixin,
    LimitsMixin,
    PublicationsMixin,
    LocksMixin,
    BouncesMixin,
    CompactionMixin,
    StoreBase,
):
    """The state database. Thread-safe: every method takes its own short transaction."""


__all__ = [
    "AddressNormalizer",
    "CsvSyncResult",
    "EmailStatus",
    "SendStatus",
    "Source",
    "Status",
    "ACTIVE",
    "BOUNCED",
    "CADENCES",
    "CHOICE_SOURCES",
    "ChoiceUpdate",
    "NOMATCH",
    "join_topics",
    "split_topics",
    "EMAIL_STATUSES",
    "BounceEvent",
    "BouncePolicy",
    "InboundEvent",
    "FAILED",
    "NAME_MAX",
    "PENDING",
    "QUEUED",
    "REMOVED",
    "SENT",
    "SOURCES",
    "STATUSES",
    "UNSUBSCRIBED",
    "InvalidAddress",
    "LedgerEntry",
    "Publication",
    "SentRecorder",
    "Store",
    "Subscriber",
    "UnknownSubscriber",
    "ledger",
    "normalize_email",
    "normalize_name",
    "publications",
    "subscribers",
]
