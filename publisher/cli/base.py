"""The `publisher` command group and what its commands share: `--config`, the operator's
actor on the audit trail, a date option."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import Config, load_config

if TYPE_CHECKING:
    pass


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        default="config.toml",
        show_default=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="The config.toml to use; relative paths in it are relative to its folder.",
    )(f)


def get_config(config_path: Path) -> Config:
    return load_config(config_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="publisher")
def cli() -> None:
    """Publish a daily Markdown research digest as RSS/Atom feeds, a web archive and an email.

    \b
    Quick start (uses ./config.toml):
      publisher send --dry-run                preview the newest digest's email in ./preview
      publisher parse digests/2024/05/15.md   check that a digest parses
      publisher build                         write the feeds and the web archive
      publisher run                           publish each new digest once, on schedule
      publisher serve                         the archive, signup and one-click unsubscribe
      publisher status                        what was published, what is pending
      publisher compact --dry-run             what the ledger's compaction would fold
      publisher db upgrade                    create or upgrade the state database
    """


def _act_as_operator() -> None:
    """The changes this command makes are the operator's (`user@host`) on the audit trail."""
    from ..audit import operator_actor
    from ..state.lifecycle import acting_as

    # Until the command ends (the group's context closes after its subcommand).
    click.get_current_context().with_resource(acting_as(operator_actor()))


def _date_option(name: str, value: str | None) -> Any:
    """A YYYY-MM-DD option as the naive UTC midnight it starts (None: not given)."""
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name) from None
