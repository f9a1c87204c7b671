"""Create or upgrade the state database's schema with Alembic, one process at a time.

Every process that opens the database calls `upgrade` (so does `publisher db upgrade`). It takes
a database-wide lock first (an advisory lock on PostgreSQL, the write lock of a BEGIN IMMEDIATE
on SQLite), so ten processes starting together on an empty database all start: the first
creates the tables, the others find them at the head revision. A database written by release
0.1.0 (tables, no `alembic_version`) is stamped as the baseline and upgraded in place.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("publisher.state")


class _AlembicSetupLines(logging.Filter):
    """Drop Alembic's INFO lines about its own setup ("Context impl SQLiteImpl.", "Will assume
    non-transactional DDL.", "setup plugin ..."): every process opening the database says them,
    `publisher run` on every tick (about 2,900 lines a day). "Running upgrade A -> B" stays: a
    migration is logged when one runs."""

    NOISE = ("Context impl ", "Will assume ", "setup plugin ")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not record.getMessage().startswith(self.NOISE)


# Before Alembic is imported: importing it is what says "setup plugin ...".
_QUIET = _AlembicSetupLines()
for _name in ("alembic.runtime.migration", "alembic.runtime.plugins"):
    logging.getLogger(_name).addFilter(_QUIET)


import sqlalchemy as sa  # noqa: E402
from alembic import command  # noqa: E402
from alembic.config import Config as AlembicConfig  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

from ..errors import PublisherError  # noqa: E402

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema of release 0.1.0, which created its tables without Alembic
# Any fixed 64-bit number: the key of the PostgreSQL advisory lock around migrations.
_PG_LOCK = 0x7075626C_6D696772  # "publmigr"


class SchemaTooNew(PublisherError):
    """The database was upgraded by a newer publisher than this one."""


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or BASELINE


def current(engine: sa.Engine) -> str | None:
    """The database's revision (None: empty, or written before migrations existed)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> tuple[str | None, str]:
    """Bring the schema to the head revision; return (revision before, revision after)."""
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    target = script.get_current_head() or BASELINE
    with engine.connect() as conn:
        conn.execution_options(write=True)  # SQLite: BEGIN IMMEDIATE
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            ctx = MigrationContext.configure(conn)
            before = ctx.get_current_revision()
            if before == target:
                return before, target
            if before is not None and before not in {r.revision for r in script.walk_revisions()}:
                raise SchemaTooNew(
                    f"{engine.url.render_as_string(hide_password=True)}: the state database is at "
                    f"revision {before}, newer than this publisher knows (head {target}); "
                    "upgrade publisher on this machine"
                )
            if before is None and sa.inspect(conn).has_table("subscribers"):
                ctx.stamp(script, BASELINE)  # release 0.1.0's tables, made by create_all
                before = BASELINE
            # Alembic runs inside this transaction (it does not begin its own when one is open).
            cfg.attributes["connection"] = conn
            log.info("state database: upgrading the schema from %s to %s", before, target)
            command.upgrade(cfg, "head")
            return before, target
