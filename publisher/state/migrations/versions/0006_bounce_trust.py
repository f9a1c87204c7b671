"""Bounce trust: `bounce_events.reported_kind`, what a report without a valid VERP token
claimed (its event is recorded as `unverified` and acts on nobody).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bounce_events") as batch:
        batch.add_column(
            sa.Column("reported_kind", sa.String(16), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("bounce_events") as batch:
        batch.drop_column("reported_kind")
