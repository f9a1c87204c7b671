"""The audit trail (`audit_log`), each subscriber's confirmation time, an index on
(status, cadence) for /metrics, and the time the trail
began (meta `audit_started`): a database upgraded from an older release has no history before
it, and `publisher report` says so.

Revision ID: 0010
Revises: 0007
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subscriber_id", sa.Integer, nullable=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("old_values", sa.String(2000), nullable=False),
        sa.Column("new_values", sa.String(2000), nullable=False),
    )
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])
    op.create_index("ix_audit_log_email", "audit_log", ["email"])
    op.add_column("subscribers", sa.Column("confirmed_at", sa.DateTime, nullable=True))
    op.create_index("ix_subscribers_status_cadence", "subscribers", ["status", "cadence"])
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    op.execute(meta.delete().where(meta.c.key == "audit_started"))
    op.execute(meta.insert().values(key="audit_started", value=now))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM meta WHERE key = 'audit_started'"))
    op.drop_index("ix_subscribers_status_cadence", "subscribers")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("confirmed_at")
    op.drop_index("ix_audit_log_email", "audit_log")
    op.drop_index("ix_audit_log_action_at", "audit_log")
    op.drop_table("audit_log")
