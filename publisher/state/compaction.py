"""Ledger compaction (`publisher compact`, and a daily job of `publisher run`): the ledger keeps
one row per reader and edition, 240 to 325 MB per digest at a million readers. Past `[state]
keep_ledger_days` (policy.expired) an edition's rows are folded into `ledger_totals` (counts per
segment: queued, sent, failed, nomatch, and the readers a bounce or complaint event names the
edition's date for), then deleted; its publication row, the bounce events and the suppressions
stay forever. The raw messages of inbound mail received before the same day are emptied (their
events stay).

Never in the way of a send:
- only an edition whose email is not `sending` and none of whose rows is under a live claim is
  touched (checked again in every batch's transaction, under the publication row's lock), and
  `publisher send` refuses an edition once compaction has begun to fold it, so nothing sends
  what is being folded; `partial` editions are folded too (a send that failed some readers and
  was never retried to `final` no longer keeps its rows forever);
- the rows go in batches of BATCH, each folded and deleted in one short transaction (so the
  counts are exact whenever it stops: an edition's count is its rows plus its totals), on
  PostgreSQL taking only rows nobody has locked (FOR UPDATE SKIP LOCKED); on SQLite a sender's
  write waits at most one batch.

On PostgreSQL the ledger is partitioned by month (partitions.py): a month whose every row is
expired is folded whole instead, its counts read in one pass and the partition dropped, in one
transaction under the same checks (every edition of it), so a month of a million readers leaves
no dead row for VACUUM. A month that cannot be (one of its editions is being sent or claimed,
or the lock for DROP is not had within partitions.LOCK_TIMEOUT) is folded by batches or left for
the next run, as above.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..config import Config
from ..policy import ledger_cutoffs
from . import partitions
from .ledger import retry_conflicts
from .schema import (
    FAILED,
    NOMATCH,
    QUEUED,
    SENT,
    EmailStatus,
    _now,
    bounce_events,
    bounce_messages,
    dialect_insert,
    ledger,
    ledger_totals,
    publications,
)

log = logging.getLogger(__name__)

# Ledger rows folded and deleted per transaction (and raw messages emptied per transaction).
BATCH = 5000
_BOUNCE_KINDS = ("hard", "soft", "blocked")
_COUNTED = (QUEUED, SENT, FAILED, NOMATCH)


@dataclass(frozen=True, slots=True)
class EditionFold:
    """One expired edition: its rows folded (or, in a dry run or when skipped, still there)."""

    edition: str
    digest_date: dt.date
    rows: int
    segments: int
    skipped: str = ""  # why it was left alone (its email not final, a live claim); "" if folded


@dataclass(slots=True)
class CompactionReport:
    cutoffs: dict[str, dt.date]
    dry_run: bool
    editions: list[EditionFold] = field(default_factory=list)
    raw_messages: int = 0
    raw_bytes: int = 0
    partitions: list[str] = field(default_factory=list)  # dropped whole (PostgreSQL)

    @property
    def folded(self) -> list[EditionFold]:
        return [e for e in self.editions if not e.skipped]

    @property
    def rows(self) -> int:
        return sum(e.rows for e in self.folded)

    def lines(self) -> list[str]:
        """What `publisher compact` prints."""
        would = "would fold" if self.dry_run else "folded"
        out = [
            f"{'skipped' if e.skipped else would} {e.edition} {e.digest_date}: "
            f"{e.rows:,} ledger rows in {e.segments} segment(s)"
            + (f" ({e.skipped})" if e.skipped else "")
            for e in self.editions
        ]
        verb = "would be" if self.dry_run else "were"
        out.append(
            f"{len(self.folded)} edition(s) dated before {self.cutoffs['daily']} "
            f"(weekly: filed before {self.cutoffs['weekly']}): {self.rows:,} ledger rows "
            f"{verb} folded into per-edition counts and deleted; {self.raw_messages:,} raw "
            f"bounce messages ({self.raw_bytes:,} bytes) {verb} emptied"
        )
        if self.partitions:
            out.append(f"dropped the ledger's partitions {', '.join(self.partitions)}")
        if self.dry_run:
            out.append("dry run: nothing changed")
        return out


def compact(
    cfg: Config, store: CompactionMixin, *, dry_run: bool = False, now: dt.datetime | None = None
) -> CompactionReport:
    """Fold the ledger of every expired edition and empty the raw messages received before the
    same day (`[state] keep_ledger_days`, policy.ledger_cutoffs); with `dry_run` only count."""
    now = now or dt.datetime.now(dt.UTC)
    cutoffs = ledger_cutoffs(cfg, now)
    first_kept = dt.datetime.combine(cutoffs["daily"], dt.time(), cfg.tz)
    raw_before = first_kept.astimezone(dt.UTC).replace(tzinfo=None)
    return store.compact_ledger(cutoffs, raw_before, dry_run=dry_run)


def _old(cutoffs: dict[str, dt.date]) -> sa.ColumnElement[bool]:
    return sa.or_(
        *(
            sa.and_(ledger.c.edition == edition, ledger.c.digest_date < day)
            for edition, day in sorted(cutoffs.items())
        )
    )


def _one(edition: str, day: dt.date) -> sa.ColumnElement[bool]:
    return sa.and_(ledger.c.edition == edition, ledger.c.digest_date == day)


class CompactionMixin:
    engine: sa.Engine

    def compact_ledger(
        self,
        cutoffs: dict[str, dt.date],
        raw_before: dt.datetime,
        *,
        dry_run: bool = False,
        batch: int = BATCH,
    ) -> CompactionReport:
        """Fold every edition dated before its edition's cutoff whose email is final and
        unclaimed (`_why_not`), and empty raw messages received before `raw_before` (naive
        UTC); with `dry_run` change nothing and report what would be done."""
        report = CompactionReport(cutoffs, dry_run)
        expired = self._expired(cutoffs)
        whole: set[tuple[str, dt.date]] = set()
        if not dry_run:
            whole = self._fold_partitions(cutoffs, expired, report)
        for (edition, day), (rows, segments) in sorted(expired.items()):
            if (edition, day) in whole:
                report.editions.append(EditionFold(edition, day, rows, segments))
                continue
            with self.engine.connect() as conn:
                why = self._why_not(conn, edition, day)
            if why or dry_run:
                report.editions.append(EditionFold(edition, day, rows, segments, why))
                continue
            folded, why = self._fold(edition, day, batch)
            report.editions.append(EditionFold(edition, day, folded, segments, why))
        report.raw_messages, report.raw_bytes = self._empty_raw(raw_before, dry_run, batch)
        return report

    def _expired(self, cutoffs: dict[str, dt.date]) -> dict[tuple[str, dt.date], tuple[int, int]]:
        """{(edition, digest date): (ledger rows, segments)} of the editions before the cutoffs."""
        q = (
            sa.select(
                ledger.c.edition,
                ledger.c.digest_date,
                ledger.c.topics,
                ledger.c.max_papers,
                sa.func.count(),
            )
            .where(_old(cutoffs))
            .group_by(ledger.c.edition, ledger.c.digest_date, ledger.c.topics, ledger.c.max_papers)
        )
        out: dict[tuple[str, dt.date], tuple[int, int]] = {}
        with self.engine.connect() as conn:
            for edition, day, _topics, _cap, n in conn.execute(q):
                rows, segments = out.get((edition, day), (0, 0))
                out[(edition, day)] = (rows + n, segments + 1)
        return out

    def _fold_partitions(
        self,
        cutoffs: dict[str, dt.date],
        expired: dict[tuple[str, dt.date], tuple[int, int]],
        report: CompactionReport,
    ) -> set[tuple[str, dt.date]]:
        """PostgreSQL: fold and drop each monthly partition of the ledger that holds only
        expired editions, all of them foldable now; the editions so folded (none on SQLite)."""
        with self.engine.connect() as conn:
            candidates = partitions.expired(conn, min(cutoffs.values()))
        done: set[tuple[str, dt.date]] = set()
        for table, start, end in candidates:
            editions = sorted(k for k in expired if start <= k[1] < end)
            try:
                with self._write() as conn:
                    why = next(
                        (w for e, d in editions if (w := self._why_not(conn, e, d, lock=True))),
                        "",
                    )
                    if why:
                        raise _Skip(why)
                    rows = sa.table(table, *(sa.column(c.name) for c in ledger.columns))
                    for values in _totals(conn, rows):
                        values["compacted_at"] = _now()
                        _add_totals(conn, values)
                    partitions.drop(conn, table)
            except _Skip as skip:
                log.info("ledger partition %s not dropped: %s", table, skip)
                continue
            except sa.exc.OperationalError as exc:  # the lock for DROP not had in time
                log.warning("ledger partition %s not dropped now: %s", table, exc.orig)
                continue
            report.partitions.append(table)
            done.update(editions)
        return done

    def _why_not(
        self,
        conn: sa.Connection,
        edition: str,
        day: dt.date,
        *,
        lock: bool = False,
        ids: list[int] | None = None,
    ) -> str:
        """Why an edition may not be folded now ("" if it may): its email is `sending` (a
        send is starting or at it), or a row of it (of `ids`, when given: a batch) is under a
        live claim. A `partial` edition is folded like a sent one: it was once kept until its
        email was `sent` or `final`, and without `publisher run`, which makes a partial
        edition final after its retries, it kept its rows forever. With `lock`, the
        publication row is share-locked on PostgreSQL until the transaction ends: a send
        marking it `sending` waits for this batch, then finds it compacted and stops
        (publications._refuse_compacted)."""
        pub = sa.select(publications.c.email_status).where(
            publications.c.edition == edition, publications.c.digest_date == day
        )
        if lock and conn.dialect.name == "postgresql":
            pub = pub.with_for_update(read=True)
        if conn.execute(pub).scalar() == EmailStatus.SENDING:
            return "its email is being sent"
        now = (
            sa.func.timezone("UTC", sa.func.now())
            if conn.dialect.name == "postgresql"
            else sa.literal(_now(), sa.DateTime)
        )
        rows = _one(edition, day) if ids is None else ledger.c.id.in_(ids)
        claimed = conn.execute(
            sa.select(
                sa.exists().where(
                    rows, ledger.c.claimed_by.is_not(None), ledger.c.lease_until > now
                )
            )
        ).scalar()
        return "a send holds a claim on its rows" if claimed else ""

    def _fold(self, edition: str, day: dt.date, batch: int) -> tuple[int, str]:
        """Fold and delete one edition's rows, `batch` per transaction; (rows folded, why it
        stopped early or "")."""
        total = 0
        while True:
            n, why = retry_conflicts(
                "ledger compaction", lambda: self._fold_batch(edition, day, batch)
            )
            total += n
            if why or n == 0:
                return total, why

    def _fold_batch(self, edition: str, day: dt.date, batch: int) -> tuple[int, str]:
        with self._write() as conn:
            pick = sa.select(ledger.c.id).where(_one(edition, day)).limit(batch)
            if conn.dialect.name == "postgresql":
                pick = pick.with_for_update(skip_locked=True)
            ids = list(conn.execute(pick).scalars())
            # The whole edition was checked before its first batch; here its status again and
            # only this batch's claims (a scan of the edition's rows per batch costs seconds at
            # a million readers).
            why = self._why_not(conn, edition, day, lock=True, ids=ids)
            if why or not ids:
                return 0, why
            batch_rows = sa.select(ledger).where(ledger.c.id.in_(ids)).subquery()
            for values in _totals(conn, batch_rows):
                values["compacted_at"] = _now()
                _add_totals(conn, values)
            conn.execute(ledger.delete().where(ledger.c.id.in_(ids)))
            return len(ids), ""

    def _empty_raw(self, before: dt.datetime, dry_run: bool, batch: int) -> tuple[int, int]:
        """Empty the raw bytes of inbound messages received before `before`: (messages, bytes)."""
        m = bounce_messages.c
        old = sa.and_(m.received_at < before, sa.func.length(m.raw) > 0)
        with self.engine.connect() as conn:
            n, size = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.func.length(m.raw)), 0))
                .select_from(bounce_messages)
                .where(old)
            ).one()
        if dry_run or not n:
            return int(n), int(size)
        while True:
            with self._write() as conn:
                ids = conn.execute(sa.select(m.id).where(old).limit(batch)).scalars().all()
                if not ids:
                    break
                conn.execute(bounce_messages.update().where(m.id.in_(ids)).values(raw=b""))
        return int(n), int(size)


def _totals(conn: sa.Connection, rows: sa.FromClause) -> list[dict[str, object]]:
    """The counts of `rows` (ledger rows: a subquery of the ledger, or one of its partitions)
    per edition and segment (topics, cap), in that order (two compactions meeting on one
    totals row take the rows in one order)."""
    r = rows.c

    def named(kinds: tuple[str, ...]) -> sa.ColumnElement[int]:
        # A reader an event of that kind was matched to (a VERP token, else the address) for
        # the edition's date; unmatched events acted on nobody.
        ev = bounce_events.c
        hit = sa.exists().where(
            ev.subscriber_id == r.subscriber_id,
            ev.digest_date == r.digest_date,
            ev.kind.in_(kinds),
        )
        return sa.func.sum(sa.case((hit, 1), else_=0))

    key = (r.edition, r.digest_date, r.topics, r.max_papers)
    q = (
        sa.select(
            *key,
            *(sa.func.sum(sa.case((r.status == s, 1), else_=0)).label(str(s)) for s in _COUNTED),
            named(_BOUNCE_KINDS).label("bounced"),
            named(("complaint",)).label("complained"),
        )
        .select_from(rows)
        .group_by(*key)
        .order_by(*key)
    )
    text = ("edition", "digest_date", "topics")
    return [
        {k: v if k in text else int(v) for k, v in row._mapping.items()} for row in conn.execute(q)
    ]


def _add_totals(conn: sa.Connection, values: dict[str, object]) -> None:
    """Add one segment's counts (`_totals`, with `compacted_at`) to `ledger_totals`."""
    ins = dialect_insert(conn.dialect.name, ledger_totals).values(values)
    counts = ("queued", "sent", "failed", "nomatch", "bounced", "complained")
    conn.execute(
        ins.on_conflict_do_update(
            index_elements=["edition", "digest_date", "topics", "max_papers"],
            set_={
                **{c: ledger_totals.c[c] + ins.excluded[c] for c in counts},
                "compacted_at": ins.excluded.compacted_at,
            },
        )
    )


class _Skip(Exception):  # noqa: N818 - a partition left alone, and why
    pass
