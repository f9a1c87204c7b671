"""How many times `publisher run` has retried a partial send's failed rows (`email_retries`),
so that it stops after `[schedule] retry_failed_times` and the digest's email is `final`.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.add_column(sa.Column("email_retries", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("publications") as batch:
        batch.drop_column("email_retries")
