"""Commands on digests and the site: `parse`, `build`, `pull`, `topics`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import PublisherError
from .base import cli, config_option, get_config

if TYPE_CHECKING:
    pass


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
    from ..digest import parse_file  # markdown-it loads only for the commands that parse

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
    from ..site import build_site  # deferred like every command's imports: `--help` stays fast

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
    from ..pull import pull as pull_digests

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
    from ..digest import find_digests, parse_file
    from ..topics import TopicMatcher

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
