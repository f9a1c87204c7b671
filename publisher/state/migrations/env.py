"""Alembic environment: run on the connection `publisher.state.migrate.upgrade` passes in.

For development, `alembic -x url=sqlite:///state/publisher.sqlite3 revision --autogenerate -m
"..."` (with an alembic.ini whose script_location points here) compares the tables in
publisher/state/schema.py with a database at head and drafts the next migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from publisher.state.partitions import include_name
from publisher.state.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    engine = sa.create_engine(context.get_x_argument(as_dictionary=True)["url"])
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            render_as_batch=True,
            include_name=include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()
