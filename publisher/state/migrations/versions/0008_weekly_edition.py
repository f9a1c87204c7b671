"""The weekly edition: the ledger and the publications hold a weekly edition beside the daily
ones. Each row says its `edition` (`daily`, every existing row, or `weekly`); a weekly
edition's `digest_date` is the Monday of its ISO week. The ledger's unique key becomes
(edition, digest_date, email) and the publications' primary key (edition, digest_date).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("ledger", "publications"):
        op.add_column(
            table, sa.Column("edition", sa.String(8), nullable=False, server_default="daily")
        )
    # SQLite cannot change a key in place: batch mode copies the table (every row kept).
    with op.batch_alter_table("ledger", recreate="auto") as batch:
        batch.drop_constraint("uq_ledger_digest_email", type_="unique")
        batch.create_unique_constraint(
            "uq_ledger_edition_digest_email", ["edition", "digest_date", "email"]
        )
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_publications_key(["edition", "digest_date"])
    else:
        op.drop_constraint("publications_pkey", "publications", type_="primary")
        op.create_primary_key("publications_pkey", "publications", ["edition", "digest_date"])


def downgrade() -> None:
    op.execute("DELETE FROM ledger WHERE edition <> 'daily'")
    op.execute("DELETE FROM publications WHERE edition <> 'daily'")
    with op.batch_alter_table("ledger", recreate="auto") as batch:
        batch.drop_constraint("uq_ledger_edition_digest_email", type_="unique")
        batch.create_unique_constraint("uq_ledger_digest_email", ["digest_date", "email"])
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_publications_key(["digest_date"])
    else:
        op.drop_constraint("publications_pkey", "publications", type_="primary")
        op.create_primary_key("publications_pkey", "publications", ["digest_date"])
    for table in ("ledger", "publications"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("edition")


def _sqlite_publications_key(key: list[str]) -> None:
    """Recreate SQLite's publications table with `key` as its primary key, rows kept."""
    bind = op.get_bind()
    table = sa.Table("publications", sa.MetaData(), autoload_with=bind)
    columns = [
        sa.Column(
            c.name,
            c.type,
            nullable=c.nullable if c.name not in key else False,
            server_default=c.server_default,
            primary_key=c.name in key,
        )
        for c in table.columns
    ]
    with op.batch_alter_table(
        "publications",
        recreate="always",
        copy_from=sa.Table("publications", sa.MetaData(), *columns),
    ):
        pass
