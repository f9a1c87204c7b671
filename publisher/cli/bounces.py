"""`publisher bounces ...`: the inbound side (files, Maildir, mbox, stdin, IMAP) and its events."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import PublisherError
from .base import _act_as_operator, cli, config_option, get_config

if TYPE_CHECKING:
    pass


@cli.group()
def bounces() -> None:
    """Read bounces, complaints and mailto unsubscribes, and act on them.

    \b
    Mail comes back to the VERP return path ([email] return_path) and to the List-Unsubscribe
    mailto address; read it from files, a Maildir, an mbox, standard input (an MTA pipe) or an
    IMAP mailbox ([bounces] imap_*). Complaints suppress at once, hard bounces count toward
    [subscribers] bounce_limit, soft ones after [bounces] soft_limit distinct days, refusals
    about us (block lists, policy) and auto-replies never suppress anyone.

    \b
    Examples:
      publisher bounces import /var/mail/bounces/          a Maildir (or files, or an mbox)
      publisher bounces import -                           one message on stdin (MTA pipe)
      publisher bounces fetch                              the IMAP mailbox in [bounces]
      publisher bounces list --kind hard --json
      publisher bounces show 42                            the message event 42 came from
    """
    _act_as_operator()


def _print_intake(outcomes: Any, quiet: bool) -> Any:
    from ..bounces.intake import Summary
    from ..terminal import shown

    summary = Summary()
    for outcome in outcomes:
        summary.add(outcome)
        routine = outcome.status == "duplicate" or (
            outcome.status == "recorded" and not outcome.suppressed
        )
        if not (quiet and routine):
            click.echo(shown(outcome.line))  # a report's text: no control character
    click.echo(summary.line())
    return summary


EX_TEMPFAIL = 75  # sysexits.h: a temporary failure; an MTA pipe retries the message later


@bounces.command("import")
@config_option
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--quiet", "-q", is_flag=True, help="Print only problems, suppressions and the total."
)
def bounces_import(config_path: Path, paths: tuple[str, ...], quiet: bool) -> None:
    """Read the messages in PATHS (files, Maildir folders, mbox files, `-` for stdin).

    One line per message, then a summary. A bad message (malformed, too big, forged or expired
    token) is one line and the rest go on; the same message imported twice counts once. The
    exit status is 1 only when a PATH cannot be read at all, and 75 (EX_TEMPFAIL) when the
    state database cannot be used now (unreachable, locked, full disk): an MTA pipe then keeps
    the message and tries again later instead of bouncing the bounce.
    """
    from ..bounces.intake import Intake, read_paths
    from ..state import Store
    from ..state.health import StorageError

    cfg = get_config(config_path)
    try:
        with Store.open(cfg) as store:
            intake = Intake(cfg, store)
            _print_intake(intake.run(read_paths(paths, intake.max_bytes)), quiet)
    except StorageError as exc:
        click.echo(f"error: {exc} (exit 75: the mail system will try again)", err=True)
        sys.exit(EX_TEMPFAIL)


@bounces.command("fetch")
@config_option
@click.option(
    "--quiet", "-q", is_flag=True, help="Print only problems, suppressions and the total."
)
def bounces_fetch(config_path: Path, quiet: bool) -> None:
    """Read the IMAP mailbox in [bounces] (TLS, certificate verified, password from the
    variable imap_password_env names); move the messages it dealt with to
    imap_processed_folder (or delete them when that is empty). Other mail stays where it is.
    """
    from ..bounces.imap import fetch
    from ..bounces.intake import Intake
    from ..state import Store

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        intake = Intake(cfg, store)
        _print_intake(fetch(cfg, intake), quiet)


@bounces.command("list")
@config_option
@click.option(
    "--kind",
    type=click.Choice(
        ["hard", "soft", "blocked", "complaint", "ignored", "unsubscribe", "unverified"]
    ),
    default=None,
    help="Only events of this kind.",
)
@click.option("--email", default=None, help="Only events about this address.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def bounces_list(config_path: Path, kind: str | None, email: str | None, as_json: bool) -> None:
    """Every event recorded: bounces and refusals (also those during the send), complaints,
    unsubscribe requests, ignored auto-replies; with what was done about each. Text from the
    reports is shown with its control characters escaped (also in --json)."""
    from ..state import Store
    from ..terminal import shown, shown_json

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        for e in store.iter_bounce_events(kind, email):
            if as_json:
                obj = {
                    "id": e.id,
                    "email": e.email,
                    "kind": e.kind,
                    "reported_kind": e.reported_kind or None,
                    "cause": e.cause or None,
                    "status": e.status,
                    "reason": e.reason,
                    "action": e.action,
                    "digest": e.digest_date.isoformat() if e.digest_date else None,
                    "source": e.source,
                    "message_id": e.message_id,
                    "at": e.created_at.isoformat(timespec="seconds"),
                }
                click.echo(shown_json(json.dumps(obj, ensure_ascii=False)))
            else:
                kind = f"{e.kind}:{e.reported_kind}" if e.reported_kind else e.kind
                fields = [str(e.id), f"{e.created_at:%Y-%m-%d %H:%M}", kind, e.cause or "-"]
                fields += [e.email or "-", e.status or "-", e.action, e.reason[:120], e.source]
                click.echo("\t".join(shown(f) for f in fields))


@bounces.command("show")
@config_option
@click.argument("event_id", type=int)
@click.option(
    "--raw", is_flag=True, help="Write the bytes as kept, even to a terminal (e.g. to save them)."
)
def bounces_show(config_path: Path, event_id: int, raw: bool) -> None:
    """Print the kept message that event EVENT_ID (from `bounces list`) came from.

    Piped or redirected, the bytes are written as kept (up to [bounces] keep_raw_bytes). On a
    terminal its control characters (ESC sequences, C1 and bidi controls) are escaped, since
    anyone can write them into a bounce; --raw writes the bytes there too."""
    from ..state import Store
    from ..terminal import shown_lines

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        event = next(store.iter_bounce_events(event_id=event_id), None)
        if event is None:
            raise PublisherError(f"no bounce event {event_id} (see `publisher bounces list`)")
        if event.message_id is None:
            raise PublisherError(
                f"event {event_id} is a refusal during the send, not a message: {event.reason}"
            )
        kept = store.bounce_message(event.message_id)
    assert kept is not None
    if raw or not sys.stdout.isatty():
        sys.stdout.buffer.write(kept[1])
        sys.stdout.buffer.flush()
        return
    text = kept[1].decode("utf-8", "backslashreplace")
    click.echo(shown_lines(text), nl=False)
