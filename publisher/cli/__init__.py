"""The command line: thin click commands over the library.

Every command takes --config PATH (default ./config.toml). A PublisherError (bad digest, bad
config key, refused SMTP login...) becomes one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import sys

import click

from ..errors import PublisherError
from . import bounces, content, operate, send, subscribers  # noqa: F401 - each registers its commands
from .base import cli

__all__ = ["cli", "main"]


def main() -> None:
    try:
        cli(standalone_mode=True)
    except PublisherError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        # A file the command writes or reads outside the database (the Maildir outbox, the
        # archive, a lock file): full disk, read-only folder, permissions. One line, exit 1.
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(1)
