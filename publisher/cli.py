"""The command line: thin click commands over the library.

Every command takes --config PATH (default ./config.toml). A PublisherError (bad digest, bad
config key, refused SMTP login...) becomes one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .config import Config, load_config
from .digest import parse_file
from .errors import PublisherError

if TYPE_CHECKING:
    from .editions import Week


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


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per file.")
def parse(files: tuple[Path, ...], as_json: bool) -> None:
    """Parse digest FILES and report each one (date, papers, warnings).

    Every file is reported; the exit status is 1 if any file failed to parse.

    \b
    Example:
      publisher parse digests/2024/05/15.md
      publisher parse --json digests/**/*.md > digests.json
    """
    failed = 0
    results: list[dict[str, object]] = []
    for path in files:
        try:
            digest = parse_file(path)
        except PublisherError as exc:
            failed += 1
            click.echo(f"error: {exc}", err=True)
            if as_json:
                results.append({"file": str(path), "error": str(exc)})
            continue
        if as_json:
            results.append(digest.to_dict())
        else:
            click.echo(
                f"{digest.date.isoformat()}  {len(digest.papers):3d} papers  "
                f"{len(digest.warnings)} warnings  {path}"
            )
            for w in digest.warnings:
                click.echo(f"  warning: {path}: {w}")
    if as_json:
        click.echo(json.dumps(results, ensure_ascii=False, indent=2))
    if failed:
        sys.exit(1)


@cli.command()
@config_option
def build(config_path: Path) -> None:
    """Build the feeds (feed.xml, atom.xml) and the web archive into [feed] output.

    Reads every digest in [digests] inbox. A digest that cannot be read is reported as
    `path:line: reason` and skipped; the rest is still built, and the exit status is 1.
    Only files whose bytes change are written, so a rebuild is cheap.

    \b
    Example:
      publisher build
      publisher build --config /etc/publisher/config.toml
    """
    from .site import build_site  # deferred like every command's imports: `--help` stays fast

    cfg = get_config(config_path)
    started = time.perf_counter()
    report = build_site(cfg)
    elapsed = time.perf_counter() - started
    for problem in report.problems:
        click.echo(str(problem), err=True)
    click.echo(
        f"built {report.days} days in {report.output}: {len(report.written)} files written, "
        f"{report.unchanged} unchanged, {report.parsed} digests parsed; "
        + (f"{len(report.removed)} pages removed; " if report.removed else "")
        + f"feeds {report.rss} and {report.atom}; {elapsed:.2f} s"
        + (f"; {len(report.problems)} digests skipped" if report.problems else "")
    )
    if report.problems:
        sys.exit(1)


@cli.command()
@config_option
def pull(config_path: Path) -> None:
    """Fetch the digests from [digests] git into the inbox (a clone publisher manages).

    Clones the repository the first time; then fetches [digests] git_branch and resets the
    clone to it, so a force-push upstream is followed too. `publisher run` does this on every
    poll. Exit 1, with one line, when git fails; the inbox is then left as it was.

    \b
    Example:
      publisher pull && publisher build
    """
    from .pull import pull as pull_digests

    cfg = get_config(config_path)
    click.echo(pull_digests(cfg).summary())


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per topic, in an array.")
def topics(config_path: Path, as_json: bool) -> None:
    """Each [topics.NAME] with its number of matching papers over the inbox.

    Then the share of papers that match no topic (they still go to readers who want all
    topics), so the patterns can be tuned. Digests that do not parse are skipped.

    \b
    Examples:
      publisher topics
      publisher topics --json | jq '.[] | select(.papers < 10)'
    """
    from .digest import find_digests
    from .topics import TopicMatcher

    cfg = get_config(config_path)
    matcher = TopicMatcher.from_config(cfg)
    counts = dict.fromkeys(matcher.names, 0)
    papers = unmatched = 0
    for path in find_digests(cfg.digests.inbox):
        try:
            digest = parse_file(path)
        except PublisherError:
            continue
        for paper in digest.papers:
            papers += 1
            found = matcher.topics_of(paper)
            unmatched += not found
            for name in found:
                counts[name] += 1
    if as_json:
        rows = [
            {"name": t.name, "label": t.label, "match": list(t.match), "papers": counts[t.name]}
            for t in matcher.topics
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not matcher.topics:
        click.echo(f"no topics in {cfg.path} (add [topics.NAME] tables)")
    width = max((len(n) for n in matcher.names), default=0)
    for t in matcher.topics:
        share = counts[t.name] / papers if papers else 0.0
        click.echo(f"{t.name:<{width}}  {counts[t.name]:6d} papers  {share:6.1%}  {t.label}")
    share = unmatched / papers if papers else 0.0
    click.echo(f"{papers} papers in {cfg.digests.inbox}; {unmatched} ({share:.1%}) match no topic")


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
        from .editions import Week

        try:
            week = Week.parse(week_name) if week_name else None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--week'") from None
    cfg = get_config(config_path)
    if (weekly or week_name) and week is None:
        from .publish import last_complete_week

        week = last_complete_week(cfg)
    if not dry_run:
        _send_for_real(cfg, digest_path, retry_failed, include_final, week)
        return
    from .preview import dry_run as run_dry_run  # keeps `publisher --help` fast

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


@cli.group()
def db() -> None:
    """The state database ([state] database: a SQLite file or a PostgreSQL URL)."""


@db.command("upgrade")
@config_option
def db_upgrade(config_path: Path) -> None:
    """Create the state database's tables, or upgrade them to this release's schema.

    Every command does this by itself when it finds an empty or older database (one process
    at a time: the others wait); run it by hand to upgrade before starting the services, e.g.
    after installing a new release on several machines.

    \b
    Example:
      publisher db upgrade --config /etc/publisher/config.toml
    """
    from .state.migrate import upgrade
    from .state.schema import make_engine

    cfg = get_config(config_path)
    engine = make_engine(cfg.database_url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"{where}: already at revision {after} (the newest)")
    else:
        click.echo(f"{where}: upgraded from {before or 'an empty database'} to revision {after}")


@db.command("backup")
@config_option
@click.argument("dest", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(config_path: Path, dest: Path) -> None:
    """Copy a SQLite state database to DEST, consistent, while `run` and `serve` go on.

    SQLite's online backup: every page as of one moment, whatever the other processes write
    meanwhile. To restore, stop the services, put the copy in place of the database (and
    delete its -wal and -shm files), start them again. For PostgreSQL use pg_dump (README,
    "Backups").

    \b
    Example:
      publisher db backup /var/backups/publisher-$(date +%F).sqlite3
    """
    from .state.backup import backup

    cfg = get_config(config_path)
    size = backup(cfg, dest)
    click.echo(
        f"backed up {cfg.database_url.removeprefix('sqlite:///')} to {dest} ({size:,} bytes)"
    )


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
    from .state import ACTIVE, Store

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
    from .state import CADENCES, ChoiceUpdate, Store
    from .topics import parse_topics

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
    from .topics import describe_choice

    click.echo(f"{sub.email}: {describe_choice(cfg, sub.cadence, sub.topics, sub.max_papers)}")


@subscribers.command("remove")
@config_option
@click.argument("email")
def subscribers_remove(config_path: Path, email: str) -> None:
    """Unsubscribe EMAIL for good: it is not mailed again, even if the CSV still lists it."""
    from .state import Store

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
    from .state import Store
    from .subscribers import import_csv

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
    from .state import Store
    from .subscribers import export_csv

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
    from .state import Store
    from .terminal import shown

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


def _act_as_operator() -> None:
    """The changes this command makes are the operator's (`user@host`) on the audit trail."""
    from .audit import operator_actor
    from .state.lifecycle import acting_as

    # Until the command ends (the group's context closes after its subcommand).
    click.get_current_context().with_resource(acting_as(operator_actor()))


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
    from .bounces.intake import Summary
    from .terminal import shown

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
    from .bounces.intake import Intake, read_paths
    from .state import Store
    from .state.health import StorageError

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
    from .bounces.imap import fetch
    from .bounces.intake import Intake
    from .state import Store

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
    from .state import Store
    from .terminal import shown, shown_json

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
    from .state import Store
    from .terminal import shown_lines

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


@cli.command()
@config_option
def run(config_path: Path) -> None:
    """Run the scheduler: publish each new digest once, with no manual step.

    Every [schedule] poll_seconds it looks for new or changed digests in [digests] inbox and
    rebuilds the feeds and the archive; each digest's email goes out once, ever, at the next
    [schedule] send_at (in site.timezone), or at once with send_on_arrival = true. Digests
    older than [schedule] max_age_days are never emailed automatically (use `publisher send
    --digest FILE`). SIGTERM or Ctrl-C: the messages in flight are finished, then it exits 0.

    \b
    Example:
      PUBLISHER_SECRET=... publisher run --config /srv/publisher/config.toml
    """
    import logging

    from .scheduler import run_forever
    from .tokens import secret_from_env

    cfg = get_config(config_path)
    secret = secret_from_env(cfg)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    sys.exit(run_forever(cfg, secret=secret))


@cli.command()
@config_option
@click.option(
    "--dry-run", is_flag=True, help="Print what would be folded and emptied; change nothing."
)
def compact(config_path: Path, dry_run: bool) -> None:
    """Fold the ledger of editions older than [state] keep_ledger_days into per-edition counts.

    Each such edition (daily by its date, weekly by its weekly_day, in site.timezone) whose
    email is sent or final and that no send holds a claim on has its per-reader rows counted
    per segment (sent, failed, nomatch, bounced, complained) into the totals that status, the
    report and /metrics read, then deleted, 5,000 rows a transaction; the raw bytes of inbound
    mail received before the same day are emptied (the events stay). Publications, bounce
    events and suppressions stay forever. `publisher run` does this once a day by itself.

    \b
    Examples:
      publisher compact --dry-run        what would go: editions, rows, raw bytes
      publisher compact
    """
    from .state import Store
    from .state.compaction import compact as run_compact

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        report = run_compact(cfg, store, dry_run=dry_run)
    for line in report.lines():
        click.echo(line)


@cli.command()
@config_option
@click.option("--limit", default=10, show_default=True, help="How many recent digests to show.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for machines.")
def status(config_path: Path, limit: int, as_json: bool) -> None:
    """Show the latest digests seen, what was published and emailed, what is pending, the
    next scheduled send, and what is wrong (late digest, failed or stuck send, bounce rates,
    failing pulls).

    Exits 0 when healthy, 1 on warnings, 2 on errors, so cron and monitoring can use it.

    \b
    Example:
      publisher status --config /srv/publisher/config.toml
      publisher status --json | jq .findings
    """
    import json

    from .health import exit_code, findings
    from .state import Store
    from .state.health import check_integrity
    from .status import status_json, status_lines

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        check_integrity(store.engine)
        if as_json:
            report = status_json(cfg, store, limit=limit)
            click.echo(json.dumps(report, ensure_ascii=False, indent=2))
            sys.exit(report["exit"])
        for line in status_lines(cfg, store, limit=limit):
            click.echo(line)
        code = exit_code(findings(cfg, store))
    sys.exit(code)


@cli.command()
@config_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("report"),
    show_default=True,
    help="The folder report.html is written into (never the public archive).",
)
@click.option("--days", default=30, show_default=True, help="How many days the charts cover.")
def report(config_path: Path, out_dir: Path, days: int) -> None:
    """Write a self-contained report.html of charts for the operator: readers by status, new
    readers per day, each digest's delivered, failed, bounced, complained and unsubscribed,
    the bounce and complaint rates against 2% and 0.3%, send durations and speeds, and the
    inbound reports by kind.

    No script and no external file: open it from disk or serve it privately. It is never
    written into [feed] output.

    \b
    Example:
      publisher report --out /srv/private --days 90
    """
    from .report import write_report
    from .state import Store

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        path = write_report(cfg, store, out_dir, days=days)
    click.echo(f"wrote {path}")


def _date_option(name: str, value: str | None) -> Any:
    """A YYYY-MM-DD option as the naive UTC midnight it starts (None: not given)."""
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name) from None


@cli.command("audit")
@config_option
@click.option("--email", default=None, help="Only entries about this address.")
@click.option("--since", default=None, metavar="DATE", help="Only entries on or after DATE (UTC).")
@click.option("--action", default=None, help="Only this action (signup, confirm, unsubscribe...).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit_cmd(
    config_path: Path, email: str | None, since: str | None, action: str | None, as_json: bool
) -> None:
    """Show the audit trail: every change of a subscriber's status, suppression, hard bounces
    or reader choice, and every send started and finished, with the time, who did it
    (user@host for the CLI, web:HASH for a web client, system for what runs by itself), and
    the values before and after. Oldest first.

    \b
    Examples:
      publisher audit --email ada@example.com
      publisher audit --since 2024-05-01 --action unsubscribe --json
    """
    import json

    from .audit import entries
    from .state import Store
    from .state.lifecycle import Action
    from .terminal import shown

    start = _date_option("--since", since)
    if action is not None and action not in set(Action):
        known = ", ".join(Action)
        raise click.BadParameter(f"unknown action {action!r} ({known})", param_hint="--action")
    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        for e in entries(store, email=email, since=start, action=action):
            if as_json:
                click.echo(json.dumps(e.as_json(), ensure_ascii=False, sort_keys=True))
            else:
                click.echo(shown(e.line()))


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

    from .progress import default_progress
    from .publish import newest_digest, send_digest, send_weekly
    from .state import Store
    from .tokens import secret_from_env

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


@cli.command()
@config_option
@click.option("--host", default=None, help="Address to listen on (default: [web] host).")
@click.option("--port", default=None, type=int, help="Port to listen on (default: [web] port).")
def serve(config_path: Path, host: str | None, port: int | None) -> None:
    """Serve the web archive, the feeds, signup (double opt-in) and one-click unsubscribe.

    Needs the token secret in the environment variable named by [web] secret_env. Put it
    behind a reverse proxy that terminates https; site.base_url is the public address.

    \b
    Example:
      export PUBLISHER_SECRET=$(publisher secret)
      publisher serve --port 8000
    """
    import uvicorn

    from .web import create_app, log_config

    cfg = get_config(config_path)
    app = create_app(cfg)  # the secrets from the environment; weak ones refused
    host = host or cfg.web.host
    port = cfg.web.port if port is None else port
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"Serving {cfg.feed.output} and the signup pages at http://{shown}:{port}/ "
        f"(public address {cfg.site.base_url}); Ctrl-C stops"
    )
    # proxy_headers: behind a reverse proxy on this machine the client address (for the signup
    # rate limit) comes from X-Forwarded-For; FORWARDED_ALLOW_IPS widens the trusted proxies.
    # log_config: uvicorn's own, with the tokens of /unsubscribe/, /confirm/ and /preferences/
    # paths redacted from the access log.
    uvicorn.run(
        app, host=host, port=port, proxy_headers=True, log_level="info", log_config=log_config()
    )


@cli.command()
def secret() -> None:
    """Print a fresh signing secret for [web] secret_env (32 random bytes, URL-safe base64).

    \b
    Examples:
      export PUBLISHER_SECRET=$(publisher secret)
      publisher secret > /etc/publisher/secret && chmod 600 /etc/publisher/secret
    """
    from .tokens import make_secret

    click.echo(make_secret())


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


if __name__ == "__main__":
    main()
