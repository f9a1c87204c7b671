"""`publisher send`: an edition to its readers, or its preview (`--dry-run`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..config import Config
from .base import cli, config_option, get_config

if TYPE_CHECKING:
    from ..editions import Week


@cli.command()
@config_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Render and write files only: no server is contacted, no state is written.",
)
@click.option(
    "--digest",
    "digest_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The digest to render (default: the newest in the inbox, by date).",
)
@click.option(
    "--to",
    "to",
    multiple=True,
    metavar="ADDRESS",
    help="Preview for this address instead of the first subscribers (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("preview"),
    show_default=True,
    help="Folder for preview.html and the .eml files (--dry-run).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also retry messages that failed for a temporary reason (4xx, timeouts) last time.",
)
@click.option(
    "--include-final",
    is_flag=True,
    help="With --retry-failed: also retry messages refused for good (5xx, e.g. content "
    "rejected), say after fixing what the server objected to.",
)
@click.option(
    "--weekly",
    is_flag=True,
    help="Send the weekly edition to the weekly readers (default: the last complete week).",
)
@click.option(
    "--week",
    "week_name",
    metavar="YYYY-Www",
    help="With --weekly: the ISO week to send, e.g. 2026-W49 (implies --weekly).",
)
def send(
    config_path: Path,
    dry_run: bool,
    digest_path: Path | None,
    to: tuple[str, ...],
    out: Path,
    retry_failed: bool,
    include_final: bool,
    weekly: bool,
    week_name: str | None,
) -> None:
    """Email a digest to every active subscriber who does not have it yet.

    Imports the subscriber CSV first, then sends the newest digest in the inbox (or --digest
    FILE) over SMTP ([smtp] host), or into the Maildir outbox when no host is set. Safe to
    interrupt and run again: the ledger in the state database records each accepted message, so
    a re-run mails only those not yet sent. The unsubscribe links are signed with the secret in
    $PUBLISHER_SECRET (the variable [web] secret_env names).

    \b
    Exit status:
      0    every active subscriber has it, or was refused it for good (5xx)
      1    an error stopped the send (one line: an outage, a 421, TLS, login),
           or some still lack it after temporary failures (--retry-failed)
      130  stopped by SIGTERM or Ctrl-C: the messages in flight were finished and
           recorded; run it again to finish

    With --dry-run nothing is sent or recorded: the digest is rendered exactly as it would be
    sent and OUT/preview.html and one .eml per sample recipient (the first three subscribers, or
    each --to) are written. Open preview.html in a browser, the .eml files in a mail client.

    \b
    Examples:
      publisher send --dry-run                the preview, on the shipped defaults
      publisher send --dry-run --digest digests/2024/05/15.md --to me@example.org --out /tmp/p
      publisher send                          the newest digest in the inbox, for real
      publisher send --retry-failed           after a temporary outage
      publisher send --retry-failed --include-final   also the ones refused with a 5xx
      publisher send --weekly                 last week's weekly edition, to weekly readers
      publisher send --weekly --week 2026-W49 --dry-run

    The daily edition goes to the readers whose cadence is daily, the weekly edition (--weekly:
    every digest dated in one ISO week, one entry per paper, ranked by votes) to the weekly
    ones; each reader gets the papers of their topics, up to their cap, at most once.
    """
    if include_final and not retry_failed:
        raise click.UsageError("--include-final goes with --retry-failed")
    week = None
    if weekly or week_name:
        if digest_path is not None:
            raise click.UsageError("--digest is for the daily edition, not --weekly")
        from ..editions import Week

        try:
            week = Week.parse(week_name) if week_name else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--week'") from None
    cfg = get_config(config_path)
    if (weekly or week_name) and week is None:
        from ..publish import last_complete_week

        week = last_complete_week(cfg)
    if not dry_run:
        _send_for_real(cfg, digest_path, retry_failed, include_final, week)
        return
    from ..preview import dry_run as run_dry_run  # keeps `publisher --help` fast

    report = run_dry_run(cfg, digest_path=digest_path, to=to, out=out, week=week)
    nl = report.newsletter
    if week is None:
        click.echo(
            f"digest:     {report.digest.source} ({report.digest.date}, "
            f"{len(report.digest.papers)} papers)"
        )
    else:
        click.echo(
            f"edition:    weekly, week {week} ({week.monday} to {week.sunday}, "
            f"{len(report.digest.papers)} papers)"
        )
    click.echo(f"subject:    {report.subject}")
    click.echo(f"recipients: {report.recipients} in {cfg.subscribers.file}")
    click.echo(
        f"html part:  {report.html_wire_bytes:,} bytes as sent, {report.html_bytes:,} decoded "
        f"(budget {cfg.email.max_html_bytes:,} as sent); "
        f"text part: {len(nl.text.encode()):,} bytes"
    )
    click.echo(
        f"papers:     {len(nl.full)} in full, {len(nl.shortened)} shortened, "
        f"{len(nl.linked)} as linked titles, {nl.more_count} only on the web page"
    )
    for line, readers, papers in report.segments:
        what = f"{papers} papers" if papers else "nothing matched, no email"
        click.echo(f"segment:    {line}: {readers} readers, {what}")
    click.echo(f"preview:    {report.html_path}")
    for path, size in zip(report.eml_paths, report.message_bytes, strict=True):
        click.echo(f"message:    {path} ({size:,} bytes)")
    if report.dkim is None:
        click.echo("dkim:       not signed ([email.dkim] selector, domain and key_file unset)")
    else:
        selector, domain = report.dkim
        ok, what = report.dkim_check or (False, "not checked")
        click.echo(f"dkim:       signed, selector {selector}, domain (d=) {domain}")
        click.echo(f"dkim check: {'ok' if ok else 'FAILED'}: {what}")
    if report.preview_secret:
        click.echo(
            f"note: ${cfg.web.secret_env} is not set; unsubscribe links use the preview "
            "secret and will be refused by the real server"
        )
    if not cfg.email.return_path:
        click.echo(
            "warning: [email] return_path is not set: bounces are matched by the address they "
            "name, which anyone can forge by mailing the bounce address; set a VERP return path "
            '(e.g. "bounces+{token}@your-domain") so only signed tokens count'
        )
    click.echo("dry run: no server contacted, nothing recorded")
    if report.dkim_check is not None and not report.dkim_check[0]:
        sys.exit(1)


EXIT_INTERRUPTED = 130  # `publisher send` stopped by SIGTERM or SIGINT before the end


def _send_for_real(
    cfg: Config,
    digest_path: Path | None,
    retry_failed: bool,
    include_final: bool,
    week: Week | None = None,
) -> None:
    import signal
    import threading

    from ..digest import parse_file
    from ..progress import default_progress
    from ..publish import newest_digest, send_digest, send_weekly
    from ..state import Store
    from ..tokens import secret_from_env

    secret = secret_from_env(cfg)  # before anything is opened or written: no secret, no send
    # SIGTERM (systemd, kill) is as graceful as Ctrl-C: the connections finish and record the
    # message they are sending, the claims are given back, then exit 130.
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: object) -> None:
        if not received:
            name = signal.Signals(signum).name
            received.append(name)
            click.echo(f"{name}: finishing the messages in flight, then stopping", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Store.open(cfg) as store:
            if week is not None:
                result = send_weekly(
                    cfg,
                    store,
                    week,
                    retry_failed=retry_failed,
                    include_final=include_final,
                    progress=default_progress(),
                    stop=stop,
                    secret=secret,
                    log=lambda line: click.echo(line, err=True),
                )
            else:
                result = send_digest(
                    cfg,
                    store,
                    parse_file(digest_path or newest_digest(cfg)),
                    retry_failed=retry_failed,
                    include_final=include_final,
                    progress=default_progress(),
                    stop=stop,
                    secret=secret,
                    log=lambda line: click.echo(line, err=True),
                )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(result.summary())
    if received and not result.ok:
        click.echo(
            f"stopped by {received[0]}: every accepted message is recorded; run the same "
            "`publisher send` again to finish",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    if not result.ok:
        sys.exit(1)
