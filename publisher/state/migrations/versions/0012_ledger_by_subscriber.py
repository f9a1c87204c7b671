"""The ledger is keyed by subscriber id, not by address: its `email` column goes, and its unique
key becomes (edition, digest_date, subscriber_id). A message goes to the reader's address as it
is when the row is claimed (read from `subscribers` through the join every claim already makes).

Why: the address was the biggest part of a row and of the unique index, at every digest for
every reader (issue 25: 277 MB a digest at a million readers, 130 MB of it that index), and
PostgreSQL writes a new entry into every index of the row at each of its updates (the status,
which is indexed, changes at every send). A key by id is also "once per reader": a reader
whose address changed between two queueings of an edition is one reader.

Rows of one reader queued twice under two addresses (only possible if the address changed
between two queueings of one edition) are folded to one: a sent one if there is one, else the
first.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DELETE FROM ledger WHERE id IN (
            SELECT l.id FROM ledger l JOIN ledger o
              ON o.edition = l.edition AND o.digest_date = l.digest_date
             AND o.subscriber_id = l.subscriber_id AND o.id <> l.id
             AND (CASE WHEN o.status = 'sent' THEN 0 ELSE 1 END, o.id)
               < (CASE WHEN l.status = 'sent' THEN 0 ELSE 1 END, l.id)
        )
        """
    )
    # SQLite cannot change a key in place: batch mode copies the table (every row kept).
    with op.batch_alter_table("ledger", recreate="auto") as batch:
        batch.drop_constraint("uq_ledger_edition_digest_email", type_="unique")
        batch.drop_column("email")
        batch.create_unique_constraint(
            "uq_ledger_edition_digest_subscriber", ["edition", "digest_date", "subscriber_id"]
        )


def downgrade() -> None:
    op.add_column("ledger", sa.Column("email", sa.String(320), nullable=True))
    op.execute(
        "UPDATE ledger SET email = "
        "(SELECT s.email FROM subscribers s WHERE s.id = ledger.subscriber_id)"
    )
    with op.batch_alter_table("ledger", recreate="auto") as batch:
        batch.drop_constraint("uq_ledger_edition_digest_subscriber", type_="unique")
        batch.alter_column("email", existing_type=sa.String(320), nullable=False)
        batch.create_unique_constraint(
            "uq_ledger_edition_digest_email", ["edition", "digest_date", "email"]
        )
