"""Private files: what holds addresses (the SQLite database and its -wal, -shm and lock files,
the Maildir outbox) is created for the owner only, whatever the umask, and a start that finds
an existing one (or the DKIM key) readable by others says so in one WARNING.

SQLite gives a database's -wal, -shm and journal files the permissions of the database file
itself, so creating that file 0600 before SQLite opens it covers them too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
import threading
from pathlib import Path

log = logging.getLogger("publisher.state")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_warned: set[str] = set()
_warned_lock = threading.Lock()


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) as 0700 folders; an existing one is left as it is."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(p, PRIVATE_DIR)
            os.chmod(p, PRIVATE_DIR)  # the umask may have taken bits off the owner's too


def private_file(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist (an existing one is left as it is)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def open_private(path: Path, mode: str = "a"):  # noqa: ANN201
    """`open(path, mode)` for a file that must be the owner's only (0600 when created)."""
    private_file(path)
    return path.open(mode)


def warn_if_exposed(path: Path, what: str) -> bool:
    """One WARNING (once per path and process) when `path` exists and other users may read it
    (a group or other read bit, or a folder others may enter). True if it warned."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    exposed = stat.S_IRGRP | stat.S_IROTH
    if stat.S_ISDIR(mode):
        exposed |= stat.S_IXGRP | stat.S_IXOTH
    if not mode & exposed:
        return False
    key = os.path.abspath(path)
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
    fix = "chmod 700" if stat.S_ISDIR(mode) else "chmod 600"
    message = (
        f"{what} {path} is readable by other users (mode {stat.S_IMODE(mode):04o}); "
        f"it should be the owner's only: {fix} {path}"
    )
    if log.hasHandlers():  # `publisher run`'s log (journald)
        log.warning("%s", message)
    else:  # a command before any logging is set up: one line on stderr all the same
        print(f"WARNING: {message}", file=sys.stderr)
    return True


def check_sqlite_files(database: Path) -> None:
    """Warn about the database and its -wal and -shm files if others can read them. (Not its
    folder: one others may list, such as a project folder, shows names, not addresses.)"""
    for suffix in ("", "-wal", "-shm"):
        warn_if_exposed(Path(f"{database}{suffix}"), "state file")
