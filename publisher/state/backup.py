"""`publisher db backup`: a consistent copy of a SQLite state database while it is in use.

SQLite's online backup API copies the database page by page and starts over if another
connection writes meanwhile, so the copy is the database as of one moment, with the WAL's
committed transactions in it. The copy is written beside DEST first and renamed into place, so
a backup that fails half-way never leaves a truncated file under DEST's name; it is made
readable by its owner only, like the database (it holds every address).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..config import Config
from ..errors import PublisherError


def backup(cfg: Config, dest: Path) -> int:
    """Copy the configured SQLite database to `dest`; return the copy's size in bytes."""
    url = cfg.database_url
    if not url.startswith("sqlite:///"):
        raise PublisherError(
            "'state.database' is not a SQLite file: back PostgreSQL up with pg_dump "
            '(pg_dump -Fc -f publisher.dump DBNAME; README: "Backups")'
        )
    source = Path(url.removeprefix("sqlite:///"))
    if not source.is_file():
        raise PublisherError(f"{source}: no state database here to back up ('state.database')")
    dest = dest.resolve()
    if dest == source.resolve():
        raise PublisherError(f"{dest}: the backup cannot replace the database itself")
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(source, timeout=30)
        try:
            out = sqlite3.connect(partial)
            try:
                src.backup(out)
            finally:
                out.close()
        finally:
            src.close()
        os.chmod(partial, 0o600)
        os.replace(partial, dest)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise PublisherError(f"{source}: backup to {dest} failed: {exc}") from None
    return dest.stat().st_size
