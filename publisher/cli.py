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
from typing import Any

import click

from .config import Config, load_config
from .digest import parse_file
from .errors import PublisherError


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
    from .site import build_site  # feedgen and lxml load only for this command

    cfg = get_config(config_path)
    started = time.perf_counter()
    report = build_site(cfg)
    elapsed = time.perf_counter() - started
    for problem in report.problems:
        click.echo(str(problem), err=True)
    click.echo(
        f"built {report.days} days in {report.output}: {len(report.written)} files written, "
        f"{report.unchanged} unchanged, {report.parsed} digests parsed; "
        f"feeds {report.rss} and {report.atom}; {elapsed:.2f} s"
        + (f"; {len(report.problems)} digests skipped" if report.problems else "")
    )
    if report.problems:
        sys.exit(1)


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
@click.option("--retry-failed", is_flag=True, help="Send again to the failed recipients.")
def send(
    config_path: Path,
    dry_run: bool,
    digest_path: Path | None,
    to: tuple[str, ...],
    out: Path,
    retry_failed: bool,
) -> None:
    """Send the newsletter; with --dry-run, write what would be sent to files instead.

    The dry run renders the newest digest in the inbox (or --digest FILE) exactly as it would be
    sent and writes OUT/preview.html and one .eml per sample recipient (the first three
    subscribers, or each --to). Open preview.html in a browser, the .eml files in a mail client.

    \b
    Examples:
      publisher send --dry-run
      publisher send --dry-run --digest digests/2024/05/15.md --to me@example.org --out /tmp/p
    """
    from .preview import dry_run as run_dry_run  # keeps `publisher --help` fast

    cfg = get_config(config_path)
    if not dry_run:
        raise PublisherError("real sending is not available yet; use --dry-run")
    report = run_dry_run(cfg, digest_path=digest_path, to=to, out=out)
    nl = report.newsletter
    click.echo(
        f"digest:     {report.digest.source} ({report.digest.date}, "
        f"{len(report.digest.papers)} papers)"
    )
    click.echo(f"subject:    {report.subject}")
    click.echo(f"recipients: {report.recipients} in {cfg.subscribers.file}")
    click.echo(
        f"html part:  {report.html_bytes:,} bytes (budget {cfg.email.max_html_bytes:,}); "
        f"text part: {len(nl.text.encode()):,} bytes"
    )
    click.echo(
        f"papers:     {len(nl.full)} in full, {len(nl.shortened)} shortened, "
        f"{len(nl.linked)} as linked titles, {nl.more_count} only on the web page"
    )
    click.echo(f"preview:    {report.html_path}")
    for path, size in zip(report.eml_paths, report.message_bytes, strict=True):
        click.echo(f"message:    {path} ({size:,} bytes)")
    if report.preview_secret:
        click.echo(
            f"note: ${cfg.web.secret_env} is not set; unsubscribe links use the preview "
            "secret and will be refused by the real server"
        )
    click.echo("dry run: no server contacted, nothing recorded")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except PublisherError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
