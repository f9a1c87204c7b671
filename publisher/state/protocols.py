"""What each caller needs of the state database, as narrow `typing.Protocol`s.

`Store` (publisher/state/__init__.py) is the sum of six mixins, about 60 methods; each caller
uses a handful. The callers are typed against these instead (as listmonk's manager declares its
`Store`), so the part of the database a module touches is written at its top, and a fake for a
test or another backend implements only that. `Store` satisfies every one of them
(tests/test_store_protocols.py compares the signatures).

- `LedgerStore`: a send (publisher/delivery/): the ledger as a work queue, and the failures a
  send records.
- `SubscribersStore`: the CSV sync (publisher/subscribers.py).
- `PublicationsStore`: the scheduler's bookkeeping (publisher/scheduler.py, publish.py).
- `InboundStore`: inbound reports (publisher/bounces/intake.py).
- `WebStore`: `publisher serve` (publisher/web/app.py).
- `PublishStore`: the one road a digest takes (publish.py): a send, a CSV sync and its
  publication row together.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .bounces import BouncePolicy, InboundMessage
    from .ledger import LedgerEntry, SentRecorder
    from .publications import Publication
    from .subscribers import ChoiceUpdate, CsvSyncResult, Subscriber


class LedgerStore(Protocol):
    """A send: queue the ledger, claim rows under a lease, record what happened."""

    def queue_pending(
        self,
        digest_date: dt.date,
        present_topics: frozenset[str] | None = None,
        *,
        edition: str = "daily",
    ) -> int: ...

    def count_pending(
        self,
        digest_date: dt.date,
        retry_failed: bool = False,
        include_final: bool = False,
        *,
        edition: str = "daily",
    ) -> int: ...

    def unsent_active(self, digest_date: dt.date, *, edition: str = "daily") -> int: ...

    def ledger_counts(
        self,
        digest_date: dt.date,
        *,
        edition: str = "daily",
        statuses: tuple[str, ...] | None = None,
    ) -> dict[str, int]: ...

    def claim(
        self,
        digest_date: dt.date,
        owner: str,
        limit: int,
        lease_seconds: float,
        retry_failed: bool = False,
        include_final: bool = False,
        *,
        failed_before: dt.datetime | None = None,
        edition: str = "daily",
    ) -> list[LedgerEntry]: ...

    def other_claimants(
        self,
        digest_date: dt.date,
        owner: str,
        retry_failed: bool = False,
        include_final: bool = False,
        *,
        edition: str = "daily",
    ) -> set[str]: ...

    def expire_claims(self, digest_date: dt.date, owner: str, *, edition: str = "daily") -> int: ...

    def renew_claims(
        self,
        owner: str,
        ids: Iterable[int],
        lease_seconds: float,
        *,
        digest_date: dt.date | None = None,
    ) -> int: ...

    def revoked_claims(
        self, owner: str, ids: Iterable[int], *, digest_date: dt.date | None = None
    ) -> set[int]: ...

    def release_claims(
        self, owner: str, ids: Iterable[int], *, digest_date: dt.date | None = None
    ) -> int: ...

    def sent_recorder(self, digest_date: dt.date | None = None) -> SentRecorder: ...

    def mark_failed(
        self,
        entry_id: int,
        reply: str,
        *,
        final: bool,
        attempts: int = 1,
        owner: str | None = None,
    ) -> bool: ...

    def record_hard_bounce(self, email: str, reply: str, limit: int) -> bool: ...

    def record_send_refusal(
        self, email: str, digest_date: dt.date, kind: str, reply: str, action: str, cause: str = ""
    ) -> None: ...


class SubscribersStore(Protocol):
    """The CSV sync: the file's rows in bulk, compared and applied set-based."""

    def lock(self, name: str) -> AbstractContextManager[None]: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def new_csv_run(self) -> int: ...

    def sync_csv(
        self,
        run: int,
        rows: Iterable[tuple[str, str] | tuple[str, str, ChoiceUpdate | None]],
        source: str = "csv",
        *,
        remove: bool = False,
    ) -> CsvSyncResult: ...

    def csv_run_intact(self, run: int) -> bool: ...

    def iter_subscribers(
        self, status: str | None = None, batch: int = 1000
    ) -> Iterator[Subscriber]: ...


class PublicationsStore(Protocol):
    """What the scheduler has seen, built and emailed, one row per digest, and its notes."""

    def lock(self, name: str) -> AbstractContextManager[None]: ...

    def list_publications(
        self, limit: int | None = None, *, edition: str = "daily"
    ) -> list[Publication]: ...

    def get_publication(
        self, digest_date: dt.date, *, edition: str = "daily"
    ) -> Publication | None: ...

    def record_publication(
        self, digest_date: dt.date, source: str, content_hash: str, *, edition: str = "daily"
    ) -> None: ...

    def update_publication(
        self, digest_date: dt.date, *, edition: str = "daily", **values: Any
    ) -> None: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


class InboundStore(Protocol):
    """Inbound reports: which were seen already, and record a batch with what it does."""

    def known_bounce_messages(self, shas: list[str]) -> list[str]: ...

    def record_inbound_batch(
        self,
        items: list[InboundMessage],
        policy: BouncePolicy,
        *,
        now: dt.datetime | None = None,
    ) -> list[list[str] | None]: ...


class WebStore(Protocol):
    """`publisher serve`: signups and their rate limits, confirm, unsubscribe, preferences."""

    engine: Engine  # /metrics reads the database (publisher/metrics.py)

    def ping(self) -> None: ...

    def take_token(self, key: str, capacity: float, period: float, now: float) -> bool: ...

    def give_back_token(self, key: str, capacity: float, period: float, now: float) -> None: ...

    def add_subscriber(
        self,
        email: str,
        name: str = "",
        status: str = "active",
        source: str = "cli",
        *,
        rename: bool = True,
        action: str = "add",
    ) -> tuple[Subscriber, bool]: ...

    def discard_pending(self, subscriber_id: int) -> bool: ...

    def get(self, email: str) -> Subscriber | None: ...

    def get_by_id(self, subscriber_id: int) -> Subscriber | None: ...

    def is_suppressed(self, email: str) -> bool: ...

    def resubscribe(
        self, email: str, name: str = "", source: str = "web", action: str = "resubscribe"
    ) -> Subscriber: ...

    def unsubscribe(
        self, email: str, reason: str = "unsubscribed", action: str = "unsubscribe"
    ) -> bool: ...

    def rename(self, email: str, name: str) -> Subscriber | None: ...

    def set_choice(self, email: str, choice: ChoiceUpdate, source: str) -> Subscriber: ...

    def stored_data(self, email: str) -> dict[str, Any]: ...

    def delete_data(self, email: str) -> bool: ...


class PublishStore(LedgerStore, SubscribersStore, PublicationsStore, Protocol):
    """A digest's road to its readers (publish.send_digest): the CSV sync, the send and the
    publication row; `engine` for the integrity check before anything is mailed."""

    engine: Engine
