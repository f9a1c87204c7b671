"""What can go wrong with the state database itself, said in one line.

A full disk, a read-only or missing folder, a damaged file, a lock held too long, an unreachable
PostgreSQL server: the driver's error becomes a `StorageError` naming the database and what to
do (`translate`, installed on every engine as a `handle_error` hook), which the CLI prints as
one line with a non-zero exit. Nothing is lost by stopping there: every `sent` row was
committed before its next message could be accepted, so the same command resumes.

`check_integrity` runs before a send: on SQLite, `PRAGMA quick_check` (0.45 s on a 64 MB
database of 100,000 subscribers and 300,000 ledger rows; it finds damaged b-tree pages, such as
a garbled page of the subscriber-status index, which would otherwise make a send skip readers
silently). PostgreSQL checks its own pages as it reads them.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..errors import PublisherError


class StorageError(PublisherError):
    """The state database cannot be used: the message names it and what to do."""


# (substring of the driver's message, what it means and what to do)
_SQLITE = (
    (
        "database or disk is full",
        "the disk holding it is full: free space, then run the same "
        "command again (what was sent is recorded; the send resumes)",
    ),
    (
        "readonly database",
        "it is read-only here: make the file and its folder writable by "
        "this user (SQLite also writes -wal and -shm files beside it)",
    ),
    (
        "unable to open database file",
        "cannot open it: check that its folder exists and is writable by this user",
    ),
    ("disk i/o error", "the disk reported an I/O error: check the disk, then run again"),
    (
        "database disk image is malformed",
        "it is damaged: restore it from a backup (or "
        "`sqlite3 FILE .recover`); nothing is sent from a damaged database",
    ),
    (
        "file is not a database",
        "it is not a SQLite database (damaged or another file): restore it from a backup",
    ),
    (
        "database is locked",
        "another process held it for more than 30 s: look for a stuck "
        "`publisher` process, then run again",
    ),
)


def where(url: sa.URL) -> str:
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def describe(url: sa.URL, exc: BaseException) -> str | None:
    """One line for a driver error that is about the database itself, else None (a bug)."""
    text = str(exc).strip()
    lowered = text.lower()
    if url.get_backend_name() == "sqlite":
        for needle, meaning in _SQLITE:
            if needle in lowered:
                return f"{where(url)}: state database: {meaning}"
        return None
    first = text.splitlines()[0] if text else type(exc).__name__
    if "no space left on device" in lowered or "could not extend file" in lowered:
        return f"{where(url)}: the database server's disk is full: {first}"
    # The driver's base classes are what it raises when it cannot connect or lost the
    # connection, and the SQLSTATE classes below say the same of a server that answered: 08
    # (connection exception), 53 (insufficient resources: out of memory, too many
    # connections), 57P (the server is shutting down or restarting, or the database was
    # dropped; psycopg raises AdminShutdown when a failover or `pg_ctl restart` ends the
    # session). Other subclasses (deadlock, serialization failure...) are not the server's
    # state and keep their own traceback.
    sqlstate = str(getattr(exc, "sqlstate", None) or "")
    if type(exc).__name__ in ("OperationalError", "InterfaceError") or (
        sqlstate[:2] in ("08", "53") or sqlstate[:3] == "57P"
    ):
        hint = ""
        if "no password supplied" in lowered or "password authentication failed" in lowered:
            hint = (
                " (the password goes in ~/.pgpass of the user running publisher, a line "
                "host:port:database:user:password with mode 600, or in $PGPASSWORD; README: "
                '"Several processes and machines")'
            )
        return f"{where(url)}: cannot use the PostgreSQL server: {first}{hint}"
    return None


def translate(context: Any) -> None:
    """SQLAlchemy `handle_error` hook: raise a StorageError instead of a driver traceback."""
    exc = context.original_exception
    engine = context.engine
    if engine is None or not isinstance(exc, Exception):
        return
    line = describe(engine.url, exc)
    if line is not None:
        raise StorageError(line) from exc


def check_integrity(engine: sa.Engine) -> None:
    """Raise StorageError if the database can tell it is damaged (SQLite quick_check)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        rows = [r[0] for r in conn.exec_driver_sql("PRAGMA quick_check").fetchall()]
    if rows != ["ok"]:
        detail = " ".join(" ".join(rows).split())[:160]
        raise StorageError(
            f"{where(engine.url)}: state database is damaged ({detail}); nothing was sent. "
            "Restore it from a backup (or `sqlite3 FILE .recover`), then run again"
        )
