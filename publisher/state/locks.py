"""Named locks across processes and machines, for the duties that must run one at a time
(the subscriber CSV sync, a scheduler tick's build and bookkeeping).

PostgreSQL: a session advisory lock on a connection held for the duration, so it spans
machines and dies with its holder's connection. SQLite: `flock` on a file beside the database
(SQLite itself lives on one machine), released by the kernel if the holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from .files import open_private

_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


def advisory_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for `name` (also taken per transaction,
    with pg_advisory_xact_lock: the ledger's queueing)."""
    return int.from_bytes(
        hashlib.sha256(f"publisher:{name}".encode()).digest()[:8], "big", signed=True
    )


class LocksMixin:
    engine: sa.Engine

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the lock `name` (blocking until it is free) for the `with` block."""
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                key = advisory_key(name)
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not database or database == ":memory:":
            with _local_guard:
                local = _local_locks.setdefault(f"{self.engine.url}:{name}", threading.Lock())
            with local:
                yield
            return
        path = Path(f"{database}.{name}.lock")
        with open_private(path) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
