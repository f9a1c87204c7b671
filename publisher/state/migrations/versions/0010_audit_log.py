"""The audit trail (`audit_log`; on PostgreSQL a trigger refuses UPDATE and DELETE of it but
the erasure's address-to-hash rewrite), each subscriber's confirmation time, an index on
(status, cadence) for /metrics, and the time the trail
began (meta `audit_started`): a database upgraded from an older release has no history before
it, and `publisher report` says so.

Revision ID: 0010
Revises: 0009
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
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
    if op.get_bind().dialect.name == "postgresql":
        # Append-only in the database too: UPDATE and DELETE are refused, except the one
        # rewrite an erasure makes (the address replaced by its `sha256:` hash, nothing else).
        op.execute(_APPEND_ONLY)
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.String))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    op.execute(meta.delete().where(meta.c.key == "audit_started"))
    op.execute(meta.insert().values(key="audit_started", value=now))


_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.email LIKE 'sha256:%'
     AND (NEW.id, NEW.at, NEW.actor, NEW.action, NEW.subscriber_id, NEW.old_values,
          NEW.new_values)
         IS NOT DISTINCT FROM
         (OLD.id, OLD.at, OLD.actor, OLD.action, OLD.subscriber_id, OLD.old_values,
          OLD.new_values) THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_log is append-only';
END
$$ LANGUAGE plpgsql
"""


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.execute(sa.text("DELETE FROM meta WHERE key = 'audit_started'"))
    op.drop_index("ix_subscribers_status_cadence", "subscribers")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("confirmed_at")
    op.drop_index("ix_audit_log_email", "audit_log")
    op.drop_index("ix_audit_log_action_at", "audit_log")
    op.drop_table("audit_log")
