"""PostgreSQL: the ledger becomes a table partitioned by month of `digest_date`
(publisher/state/partitions.py), so compaction drops a month whole instead of deleting its rows
one by one. SQLite is left as it is.

The rows are copied into a new partitioned table (one partition per month they cover), which
then takes the old one's name, sequence, keys and indexes. A partitioned table's primary key
must hold the partition key: it becomes (id, digest_date); `id` stays unique, from the same
sequence. Downgrade copies the rows back into a plain table.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_KEYS = (
    "ALTER TABLE ledger ADD CONSTRAINT ledger_pkey PRIMARY KEY ({pk})",
    "ALTER TABLE ledger ADD CONSTRAINT uq_ledger_edition_digest_subscriber "
    "UNIQUE (edition, digest_date, subscriber_id)",
    "ALTER TABLE ledger ADD CONSTRAINT ledger_subscriber_id_fkey "
    "FOREIGN KEY (subscriber_id) REFERENCES subscribers (id)",
    "CREATE INDEX ix_ledger_digest_status ON ledger (digest_date, status)",
)


def _rebuild(partitioned: bool) -> None:
    """Copy the ledger into a new table (partitioned by month or plain) that takes its place."""
    op.execute("ALTER SEQUENCE ledger_id_seq OWNED BY NONE")
    op.execute("ALTER TABLE ledger RENAME TO ledger_old")
    for index in ("ledger_pkey", "uq_ledger_edition_digest_subscriber", "ix_ledger_digest_status"):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_old")
    by = " PARTITION BY RANGE (digest_date)" if partitioned else ""
    op.execute(f"CREATE TABLE ledger (LIKE ledger_old INCLUDING DEFAULTS){by}")
    if partitioned:
        # one partition per month the rows cover (partitions.name and partitions.month)
        op.execute(
            """
            DO $$
            DECLARE m date;
            BEGIN
              FOR m IN SELECT DISTINCT date_trunc('month', digest_date)::date FROM ledger_old
              LOOP
                EXECUTE format(
                  'CREATE TABLE %I PARTITION OF ledger FOR VALUES FROM (%L) TO (%L)',
                  'ledger_y' || to_char(m, 'YYYY') || 'm' || to_char(m, 'MM'),
                  m, (m + interval '1 month')::date);
              END LOOP;
            END $$
            """
        )
    op.execute("INSERT INTO ledger SELECT * FROM ledger_old")
    op.execute("DROP TABLE ledger_old")
    op.execute("ALTER SEQUENCE ledger_id_seq OWNED BY ledger.id")
    for sql in _KEYS:
        op.execute(sql.format(pk="id, digest_date" if partitioned else "id"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(partitioned=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(partitioned=False)
