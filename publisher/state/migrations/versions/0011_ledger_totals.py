"""Ledger compaction (`[state] keep_ledger_days`, publisher/state/compaction.py): the table
`ledger_totals` keeps, per edition and segment, the counts of the ledger rows compaction folded
and deleted. Existing rows are untouched: the first `publisher compact` folds them.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_totals",
        sa.Column("edition", sa.String(8), primary_key=True),
        sa.Column("digest_date", sa.Date, primary_key=True),
        sa.Column("topics", sa.String(1000), primary_key=True),
        sa.Column("max_papers", sa.Integer, primary_key=True),
        *(
            sa.Column(name, sa.Integer, nullable=False, server_default="0")
            for name in ("queued", "sent", "failed", "nomatch", "bounced", "complained")
        ),
        sa.Column("compacted_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ledger_totals")
