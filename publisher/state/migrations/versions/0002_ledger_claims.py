"""The ledger becomes a work queue: claimed_by and lease_until on each row.

Also forgets the "CSV unchanged since the last import" fingerprints, so the next send re-reads
the subscriber CSV in full: before this release two overlapping imports could mark rows of the
CSV `removed`, and the fingerprint would have kept that state (a full sync puts them back).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger", sa.Column("claimed_by", sa.String(100), nullable=True))
    op.add_column("ledger", sa.Column("lease_until", sa.DateTime, nullable=True))
    op.execute("DELETE FROM meta WHERE key LIKE 'csv_sha256:%'")


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("claimed_by")
