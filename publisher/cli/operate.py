"""Commands that run and watch the service: `run`, `serve`, `status`, `report`, `audit`,
`compact`, `db`, `secret`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .base import _date_option, cli, config_option, get_config

if TYPE_CHECKING:
    pass


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
    from ..state.migrate import upgrade
    from ..state.schema import make_engine

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
    from ..state.backup import backup

    cfg = get_config(config_path)
    size = backup(cfg, dest)
    click.echo(
        f"backed up {cfg.database_url.removeprefix('sqlite:///')} to {dest} ({size:,} bytes)"
    )


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

    from ..scheduler import run_forever
    from ..tokens import secret_from_env

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
    from ..state import Store
    from ..state.compaction import compact as run_compact

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

    from ..health import exit_code, findings
    from ..state import Store
    from ..state.health import check_integrity
    from ..status import status_json, status_lines

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
    from ..report import write_report
    from ..state import Store

    cfg = get_config(config_path)
    with Store.open(cfg) as store:
        path = write_report(cfg, store, out_dir, days=days)
    click.echo(f"wrote {path}")


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

    from ..audit import entries
    from ..state import Store
    from ..state.lifecycle import Action
    from ..terminal import shown

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

    from ..web import create_app, log_config

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
    from ..tokens import make_secret

    click.echo(make_secret())
