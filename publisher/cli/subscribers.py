"""`publisher subscribers ...`: the subscriber list by hand and from the CSV."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import PublisherError
from .base import _act_as_operator, _date_option, cli, config_option, get_config

if TYPE_CHECKING:
    pass


@cli.group()
def subscribers() -> None:
    """Manage subscribers: the CSV list, the state database, statuses.

    \b
    The configured CSV ([subscribers] file) is imported before every send: new rows become
    active, known addresses keep their status (an unsubscribed address stays unsubscribed),
    and CSV addresses whose row is deleted become "removed" (not mailed, history kept).

    \b
    Examples:
      publisher subscribers import                 sync the configured CSV now
      publisher subscribers add ada@example.com --name "Ada Lovelace"
      publisher subscribers remove ada@example.com
      publisher subscribers list --counts
      publisher subscribers export > backup.csv

    Every change is on the audit trail as yours (user@host): see `publisher audit`.
    """
    _act_as_operator()


@subscribers.command("add")
@config_option
@click.argument("email")
@click.option("--name", default="", help="The subscriber's name (used in the greeting).")
@click.option(
    "--resubscribe",
    is_flag=True,
    help="The address was unsubscribed or bounced and has asked to come back: lift that.",
)
def subscribers_add(config_path: Path, email: str, name: str, resubscribe: bool) -> None:
    """Add EMAIL as an active subscriber (not touched by later CSV imports)."""
    from ..state import ACTIVE, Store

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        if resubscribe:
            sub = store.resubscribe(email, name, source="cli")
            click.echo(f"{sub.email}: active (resubscribed)")
            return
        sub, created = store.add_subscriber(email, name, status=ACTIVE, source="cli")
        if sub.status != ACTIVE:
            raise PublisherError(
                f"{sub.email} is {sub.status}; it is not mailed. If the person asked to come "
                "back, use --resubscribe"
            )
        click.echo(f"{sub.email}: {'added' if created else 'already subscribed'}")


@subscribers.command("set")
@config_option
@click.argument("email")
@click.option("--cadence", default=None, help="daily, weekly or paused (nothing is sent).")
@click.option("--topics", "topic_list", default=None, help="Topic names, comma-separated.")
@click.option("--all-topics", is_flag=True, help="Every paper, whatever its topics.")
@click.option("--max", "max_papers", default=None, type=int, help="At most N papers (0: all).")
def subscribers_set(
    config_path: Path,
    email: str,
    cadence: str | None,
    topic_list: str | None,
    all_topics: bool,
    max_papers: int | None,
) -> None:
    """Set what EMAIL gets: cadence, topics (see `publisher topics`) and a cap.

    Options left out keep their value. This is the operator's change: it also replaces a
    choice the reader made on the web (a CSV import never does). It applies from the next
    edition.

    \b
    Examples:
      publisher subscribers set ada@example.com --cadence weekly --topics agents,rl --max 10
      publisher subscribers set ada@example.com --all-topics --max 0
    """
    from ..state import CADENCES, ChoiceUpdate, Store
    from ..topics import parse_topics

    if topic_list is not None and all_topics:
        raise click.UsageError("--topics and --all-topics exclude each other")
    cfg = get_config(config_path)
    if cadence is not None and cadence not in CADENCES:
        raise PublisherError(f"unknown cadence {cadence!r} (daily, weekly or paused)")
    if max_papers is not None and max_papers < 0:
        raise PublisherError(f"--max must be 0 (all) or more, not {max_papers}")
    chosen = None
    if all_topics:
        chosen = frozenset()
    elif topic_list is not None:
        try:
            chosen = parse_topics(topic_list, cfg.topic_names)
        except ValueError as exc:
            raise PublisherError(f"{exc} ({cfg.path})") from None
        if not chosen:
            raise PublisherError("--topics needs at least one name (or use --all-topics)")
    update = ChoiceUpdate(cadence=cadence, topics=chosen, max_papers=max_papers)
    with Store.open(cfg) as store:
        sub = store.set_choice(email, update, source="cli")
    from ..topics import describe_choice

    click.echo(f"{sub.email}: {describe_choice(cfg, sub.cadence, sub.topics, sub.max_papers)}")


@subscribers.command("remove")
@config_option
@click.argument("email")
def subscribers_remove(config_path: Path, email: str) -> None:
    """Unsubscribe EMAIL for good: it is not mailed again, even if the CSV still lists it."""
    from ..state import Store

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        known = store.get(email) is not None
        store.unsubscribe(email, reason="removed by operator")
        sub = store.get(email)
    shown = sub.email if sub else email
    click.echo(f"{shown}: unsubscribed" + ("" if known else " (was not a subscriber; suppressed)"))


@subscribers.command("import")
@config_option
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
def subscribers_import(config_path: Path, file: Path | None) -> None:
    """Import a CSV with an `email` column (and optionally `name`; others are ignored).

    Without FILE, syncs the configured list ([subscribers] file), as a send does: rows deleted
    from it become "removed". Another FILE only adds. Invalid rows are reported as file:line
    and skipped; the exit status is 1 if there were any.
    """
    from ..state import Store
    from ..subscribers import import_csv

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        report = import_csv(cfg, store, file, force=True)
    for problem in report.invalid:
        click.echo(f"invalid: {problem}", err=True)
    click.echo(report.summary())
    if report.invalid:
        sys.exit(1)


@subscribers.command("export")
@config_option
@click.option("--status", default=None, help="Only subscribers with this status.")
def subscribers_export(config_path: Path, status: str | None) -> None:
    """Write every subscriber as CSV to stdout (email, name, status, source, ...)."""
    from ..state import Store
    from ..subscribers import export_csv

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        export_csv(store, sys.stdout, status)


@subscribers.command("list")
@config_option
@click.option("--status", default=None, help="Only subscribers with this status.")
@click.option("--counts", "counts_only", is_flag=True, help="Only the counts by status.")
@click.option(
    "--since",
    default=None,
    metavar="DATE",
    help="Only subscribers created on or after DATE (YYYY-MM-DD, UTC).",
)
def subscribers_list(
    config_path: Path, status: str | None, counts_only: bool, since: str | None
) -> None:
    """List subscribers (address, status, source, name; for a suppressed address, why, and the
    bounce event that did it: see `bounces list`), then the counts by status."""
    from ..state import Store
    from ..terminal import shown

    start = _date_option("--since", since)
    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        if not counts_only:
            page: list[Any] = []

            def flush() -> None:
                # Why a suppressed address is suppressed, and the bounce event that did it.
                notes = store.suppression_notes([s.email for s in page])
                for sub in page:
                    note = notes.get(sub.email)
                    fields = [sub.email, sub.status, sub.source, sub.name]
                    fields += [f"suppressed: {note}"] if note else []
                    click.echo("\t".join(shown(f) for f in fields))
                page.clear()

            for sub in store.iter_subscribers(status):
                if start is not None and sub.created_at < start:
                    continue
                page.append(sub)
                if len(page) >= 1000:
                    flush()
            flush()
        counts = store.counts_by_status()
    total = sum(counts.values())
    click.echo(", ".join(f"{k}: {v}" for k, v in counts.items()) + f" (total {total})")
