"""Bounce causes and Message-IDs: `bounce_events.cause` (Sisimai's reason, the kind follows from
it) and `ledger.message_id` (the Message-ID each message went out with, so a report quoting it,
or an Amazon SES notification, names the reader it was sent to).

Earlier events get an empty cause; earlier rows no Message-ID.

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
    op.add_column("ledger", sa.Column("message_id", sa.String(250), nullable=True))
    op.create_index("ix_ledger_message_id", "ledger", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_message_id", table_name="ledger")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("message_id")
    with op.batch_alter_table("bounce_events") as batch:
        batch.drop_column("cause")
