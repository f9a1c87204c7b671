"""Rate limits in the database: the `rate_limits` table, one token bucket a key.

The web side's signup limits (per client, per address) live here so that every `publisher
serve` process on the database shares them. The per-address stamps that earlier releases kept
in `meta` (`web.confirm_sent.*`, never deleted) are dropped: at worst an address may get one
more confirmation mail within `confirm_resend_minutes` of the upgrade.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_rate_limits_expires_at", "rate_limits", ["expires_at"])
    op.execute("DELETE FROM meta WHERE key LIKE 'web.confirm_sent.%'")


def downgrade() -> None:
    op.drop_index("ix_rate_limits_expires_at", "rate_limits")
    op.drop_table("rate_limits")
