"""Bounce causes: `bounce_events.cause` (Sisimai's reason, the kind follows from it). Earlier
events get an empty cause. (A report quoting one of our Message-IDs names its reader through
the ledger row the Message-ID itself names, signed: nothing is stored per message for it.)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bounce_events") as batch:
        batch.add_column(sa.Column("cause", sa.String(16), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("bounce_events") as batch:
        batch.drop_column("cause")
