"""The ledger's status index holds the edition too: (digest_date, status, edition). An edition's
counts by status (`LedgerMixin.ledger_counts`: `publisher status`, the send's end, /metrics)
are then read from the index alone.

Why: those counts name the edition (a Monday has a daily and a weekly edition), which the
index (digest_date, status) did not hold. On PostgreSQL, counting a million-reader edition
read every row of its month's partition (a parallel sequential scan of five editions' rows:
0.49 to 0.65 s of `publisher status`'s 1.05 s at a million readers, bench/scale.py --large,
2026-12-07); with the edition in the index it is an index-only scan (0.11 s; 0.30 s right
after a send, before VACUUM marks the pages all-visible). On SQLite the count walked the
edition's rows in the table; the index now covers it. The key's first two columns are the old
index's, so every statement that used it still can; a `sent` row's index entry stays 24 bytes on
PostgreSQL (the short edition fits in the old entry's alignment padding).

On PostgreSQL the index of the partitioned ledger is made again on every month's partition:
on a ledger of five million-reader editions this took about 3.5 s.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_ledger_digest_status", table_name="ledger")
    op.create_index("ix_ledger_digest_status", "ledger", ["digest_date", "status", "edition"])


def downgrade() -> None:
    op.drop_index("ix_ledger_digest_status", table_name="ledger")
    op.create_index("ix_ledger_digest_status", "ledger", ["digest_date", "status"])
