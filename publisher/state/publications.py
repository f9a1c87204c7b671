"""Publications (what the scheduler has seen and emailed) and the small key/value meta table."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import PublisherError
from . import lifecycle
from .schema import (
    DAILY,
    EMAIL_STATUSES,
    EmailStatus,
    _now,
    ledger_totals,
    meta,
    publications,
    upsert,
)


class EditionCompacted(PublisherError):
    """A send of an edition whose ledger was compacted (publisher/state/compaction.py)."""


@dataclass(frozen=True, slots=True)
class Publication:
    digest_date: dt.date
    source: str
    content_hash: str
    feed_built_at: dt.datetime | None
    email_status: str
    sent: int
    failed: int
    email_started_at: dt.datetime | None
    email_finished_at: dt.datetime | None
    created_at: dt.datetime | None = None  # when the digest was first seen
    email_retries: int = 0  # retries of the failed rows by `publisher run`
    edition: str = DAILY  # or weekly: then digest_date is the Monday of the week


def _publication(row: Any) -> Publication:
    return Publication(
        digest_date=row.digest_date,
        source=row.source,
        content_hash=row.content_hash,
        feed_built_at=row.feed_built_at,
        email_status=row.email_status,
        sent=row.sent,
        failed=row.failed,
        email_started_at=row.email_started_at,
        email_finished_at=row.email_finished_at,
        created_at=row.created_at,
        email_retries=row.email_retries,
        edition=row.edition,
    )


class PublicationsMixin:
    engine: sa.Engine

    def get_meta(self, key: str) -> str | None:
        """A small key/value setting kept in the database (e.g. the last imported CSV's hash)."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        """Create or replace a meta value (safe against a concurrent set of the same key)."""
        with self._write() as conn:
            upsert(conn, meta, {"key": key, "value": value}, ["key"], update={"value": value})

    def claim_meta(self, key: str, value: str) -> bool:
        """Create a meta value only if the key is new: True for the one caller (of any process)
        that created it. `publisher run` claims an alert this way before mailing it."""
        with self._write() as conn:
            return upsert(conn, meta, {"key": key, "value": value}, ["key"]) == 1

    def delete_meta(self, key: str) -> None:
        with self._write() as conn:
            conn.execute(meta.delete().where(meta.c.key == key))

    # -- publications (used by the scheduler) ------------------------------------------------

    def get_publication(self, digest_date: dt.date, *, edition: str = DAILY) -> Publication | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(publications).where(
                    publications.c.digest_date == digest_date, publications.c.edition == edition
                )
            ).first()
        return None if row is None else _publication(row)

    def list_publications(
        self, limit: int | None = None, *, edition: str = DAILY
    ) -> list[Publication]:
        """Publications of one edition (daily: one a digest), newest digest date first."""
        query = (
            sa.select(publications)
            .where(publications.c.edition == edition)
            .order_by(publications.c.digest_date.desc())
        )
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_publication(row) for row in conn.execute(query)]

    def record_publication(
        self, digest_date: dt.date, source: str, content_hash: str, *, edition: str = DAILY
    ) -> None:
        """Create or update the publication row of a digest (source path and content hash), or
        of a week's weekly edition (`digest_date` its Monday)."""
        now = _now()
        row = {
            "edition": edition,
            "digest_date": digest_date,
            "source": source,
            "content_hash": content_hash,
            "email_status": "none",
            "sent": 0,
            "failed": 0,
            "created_at": now,
            "updated_at": now,
        }
        changed = {"source": source, "content_hash": content_hash, "updated_at": now}
        with self._write() as conn:
            # An upsert: a manual send and a scheduler may record the same new digest at once.
            upsert(conn, publications, row, ["edition", "digest_date"], update=changed)

    def update_publication(
        self, digest_date: dt.date, *, edition: str = DAILY, **values: Any
    ) -> None:
        """Set columns of an existing publication row: feed_built_at, email_status, sent,
        failed, email_started_at, email_finished_at, email_retries."""
        allowed = {
            "feed_built_at",
            "email_status",
            "sent",
            "failed",
            "email_started_at",
            "email_finished_at",
            "email_retries",
        }
        bad = set(values) - allowed
        if bad:
            raise ValueError(f"not publication columns: {sorted(bad)}")
        if values.get("email_status", "none") not in EMAIL_STATUSES:
            raise ValueError(f"unknown email_status {values['email_status']!r}")
        with self._write() as conn:
            if values.get("email_status") == EmailStatus.SENDING:
                _refuse_compacted(conn, digest_date, edition)
            conn.execute(
                publications.update()
                .where(publications.c.digest_date == digest_date)
                .where(publications.c.edition == edition)
                .values(updated_at=_now(), **values)
            )
            # A send starting (`sending`) or ending (sent, partial) is on the audit trail.
            status = values.get("email_status")
            # The weekly edition's entries name it (its `digest` is the week's Monday).
            edition_of = {} if edition == DAILY else {"edition": str(edition)}
            if status == EmailStatus.SENDING:
                new = {"digest": digest_date.isoformat(), **edition_of}
                lifecycle.record(conn, lifecycle.Action.SEND_STARTED, None, "", {}, new)
            elif status in (EmailStatus.SENT, EmailStatus.PARTIAL):
                new = {"digest": digest_date.isoformat(), **edition_of, "email_status": status}
                new.update({k: values[k] for k in ("sent", "failed") if k in values})
                lifecycle.record(conn, lifecycle.Action.SEND_FINISHED, None, "", {}, new)


def _refuse_compacted(conn: sa.Connection, digest_date: dt.date, edition: str) -> None:
    """Raise EditionCompacted if compaction folded this edition's ledger: its readers are no
    longer in the ledger, so a send would mail them all again. The publication row is locked
    first (PostgreSQL; SQLite's write transaction is already exclusive), and compaction locks it
    too in each batch (compaction._why_not), so a send starting and a compaction of the same
    edition never both go on."""
    lock = sa.select(publications.c.email_status).where(
        publications.c.digest_date == digest_date, publications.c.edition == edition
    )
    if conn.dialect.name == "postgresql":
        conn.execute(lock.with_for_update())
    folded = sa.exists().where(
        ledger_totals.c.digest_date == digest_date, ledger_totals.c.edition == edition
    )
    if conn.execute(sa.select(folded)).scalar():
        what = "digest" if edition == DAILY else f"{edition} edition filed under"
        raise EditionCompacted(
            f"the {what} {digest_date} is older than [state] keep_ledger_days and its ledger "
            "was compacted (publisher compact): it is not sent again"
        )
