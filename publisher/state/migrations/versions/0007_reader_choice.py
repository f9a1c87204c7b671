"""Reader choice: each subscriber's cadence, topics and cap, and where that choice came from;
each ledger row keeps the topics and cap it was queued with (the segment it is rendered in).

Existing readers become daily, all topics, no cap (the server defaults), so nothing changes for
anyone who does nothing.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "subscribers",
        sa.Column("cadence", sa.String(8), nullable=False, server_default="daily"),
    )
    op.add_column(
        "subscribers",
        sa.Column("topics", sa.String(1000), nullable=False, server_default=""),
    )
    op.add_column(
        "subscribers",
        sa.Column("max_papers", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column("subscribers", sa.Column("choice_source", sa.String(8), nullable=True))
    op.add_column("ledger", sa.Column("topics", sa.String(1000), nullable=False, server_default=""))
    op.add_column("ledger", sa.Column("max_papers", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("max_papers")
        batch.drop_column("topics")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("choice_source")
        batch.drop_column("max_papers")
        batch.drop_column("topics")
        batch.drop_column("cadence")
