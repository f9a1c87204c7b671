"""The command line: thin click commands over the library.

Every command takes --config PATH (default ./config.toml). A PublisherError (bad digest, bad
config key, refused SMTP login...) becomes one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from typing import NoReturn

import click

from ..errors import PublisherError
from . import bounces, content, operate, send, subscribers  # noqa: F401 - each registers its commands
from .base import cli

__all__ = ["cli", "main"]


# The collector's first generation holds this many new objects before a collection (Python's
# default: 700). A command's start-up creates ~45,000 objects that live as long as it does
# (modules, classes, functions, compiled SQL); at 700 each was traversed up to three times and
# a one-reader `publisher send` spent 37 ms of its 0.4 s collecting nothing. At 100,000 the
# start-up runs no collection, a long command (a send, `run`, `serve`) collects every 100,000
# allocations, and cyclic garbage stays bounded by that: memory stays flat.
GC_THRESHOLD = (100_000, 50, 100)


def main() -> NoReturn:
    gc.set_threshold(*GC_THRESHOLD)
    _exit(_run())


def _run() -> int:
    """The command's exit status."""
    try:
        cli(standalone_mode=True)  # always ends in SystemExit (click's standalone mode)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        click.echo(exc.code, err=True)  # sys.exit("message"), as the interpreter would print it
        return 1
    except PublisherError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except OSError as exc:
        # A file the command writes or reads outside the database (the Maildir outbox, the
        # archive, a lock file): full disk, read-only folder, permissions. One line, exit 1.
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        return 1
    return 0


def _exit(code: int) -> NoReturn:
    """Exit with `code` without tearing the interpreter down. Freeing every module and object
    one by one costs ~0.1 s after a send (a tenth of a `publisher send`'s start-up, on every
    command) and does nothing a finished command needs: its files, connections and threads are
    closed by then. What exit must still do is done here: the atexit handlers (logging's flush
    among them) and the flush of stdout and stderr. The ordinary exit is taken instead while a
    non-daemon thread still runs (it waits for it), and under a profiler or a tracer (`python
    -m cProfile`, `-m trace`: they write their results after the command returns)."""
    main_thread = threading.main_thread()
    if (
        sys.getprofile() is not None
        or sys.gettrace() is not None
        or any(t is not main_thread and not t.daemon for t in threading.enumerate())
    ):
        sys.exit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - what Py_Finalize runs first, run here
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a closed pipe: nothing more to write
            code = code or 1
    os._exit(code)
