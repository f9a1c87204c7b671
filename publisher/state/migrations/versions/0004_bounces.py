"""Inbound mail: the `bounce_messages` kept for review and the `bounce_events` found in them.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "bounce_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.Integer, sa.ForeignKey("bounce_messages.id"), nullable=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("subscriber_id", sa.Integer, nullable=True),
        sa.Column("digest_date", sa.Date, nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_bounce_events_email", "bounce_events", ["email"])
    op.create_index("ix_bounce_events_digest_kind", "bounce_events", ["digest_date", "kind"])
    op.create_index("ix_bounce_events_subscriber", "bounce_events", ["subscriber_id", "kind"])


def downgrade() -> None:
    op.drop_table("bounce_events")
    op.drop_table("bounce_messages")
