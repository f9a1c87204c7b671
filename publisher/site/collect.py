"""Collect: the inbox read into days (a file whose stat is unchanged is not read), one digest
per date, the build manifest and the fingerprint of everything else that shapes the output, and
each day's `updated` time. No rendering here: this is the first of Pelican's two phases."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..config import Config
from ..digest import Digest, Paper, digest_sha, find_digests, parse_file
from ..errors import DigestError
from ..templating import templates_dir
from ..topics import TopicMatcher
from ..urls import paper_anchors

MANIFEST = ".build-manifest.json"

# Bump when the manifest's shape or the meaning of its caches changes.
MANIFEST_VERSION = 3

_PACKAGE = Path(__file__).resolve().parent.parent  # publisher/


@dataclass(frozen=True, slots=True)
class BuildProblem:
    """A digest that was skipped, with where and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class BuiltDay:
    """One day in the archive: what the scheduler needs to decide about its email."""

    date: dt.date
    source: str
    sha: str


@dataclass(frozen=True, slots=True)
class Day:
    """What the build knows about one digest day; `digest` is loaded only when needed."""

    date: dt.date
    source: str
    sha: str
    papers: int
    titles: tuple[str, ...]
    mtime: int | None  # seconds, of the source file, for `updated` after an edit
    digest: Digest | None = None


@dataclass(frozen=True, slots=True)
class Card:
    """What the topic and weekly pages need of one paper, cached in the manifest so that adding
    a day parses only that day: its anchor on the day page, its title, its identity and votes,
    and the names of its topics (config order)."""

    anchor: str
    title: str
    url: str
    arxiv_id: str | None
    votes: int | None
    topics: tuple[str, ...]

    def paper(self) -> Paper:
        """A Paper with what ranking needs (editions.weekly_papers, topics.select)."""
        return Paper(title=self.title, url=self.url, arxiv_id=self.arxiv_id, votes=self.votes)

    def to_json(self) -> list[Any]:
        return [self.anchor, self.title, self.url, self.arxiv_id, self.votes, list(self.topics)]

    @classmethod
    def from_json(cls, row: list[Any]) -> Card:
        anchor, title, url, arxiv_id, votes, topics = row
        return cls(anchor, title, url, arxiv_id, votes, tuple(topics))


def cards_key(cfg: Config) -> str:
    """What Cards depend on besides their digest: the topics, and the code that matches them."""
    h = hashlib.sha256(repr((MANIFEST_VERSION, cfg.topics)).encode())
    for name in ("topics.py", "urls.py", "site/collect.py"):
        h.update((_PACKAGE / name).read_bytes())
    return h.hexdigest()


def make_cards(digest: Digest, matcher: TopicMatcher) -> list[Card]:
    """Each paper of a digest as a Card (its topics matched here, once)."""
    order = matcher.names
    cards = []
    for anchor, paper in zip(paper_anchors(digest), digest.papers, strict=True):
        found = matcher.topics_of(paper)
        cards.append(
            Card(
                anchor,
                paper.title,
                paper.url,
                paper.arxiv_id,
                paper.votes,
                tuple(n for n in order if n in found),
            )
        )
    return cards


def published_at(cfg: Config, date: dt.date) -> dt.datetime:
    """A digest's time in the feeds: its date at feed.publish_hour in site.timezone."""
    return dt.datetime.combine(date, dt.time(cfg.feed.publish_hour), tzinfo=cfg.tz)


def epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def from_epoch(cfg: Config, seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=cfg.tz)


def day_from_digest(digest: Digest, mtime: int | None) -> Day:
    return Day(
        date=digest.date,
        source=digest.source,
        sha=digest_sha(digest),
        papers=len(digest.papers),
        titles=tuple(p.title for p in digest.papers[:3]),
        mtime=mtime,
        digest=digest,
    )


def read_inbox(
    cfg: Config, file_cache: dict[str, Any], problems: list[BuildProblem]
) -> tuple[list[Day], dict[str, Any], int]:
    """Every digest in the inbox; files whose (mtime_ns, size) match the cache are not read."""
    days: list[Day] = []
    new_cache: dict[str, Any] = {}
    parsed = 0
    for path in find_digests(cfg.digests.folder, dated_only=cfg.digests.managed):
        key = str(path)
        try:
            st = path.stat()
        except OSError as exc:
            problems.append(BuildProblem(key, 0, f"cannot read file: {exc.strerror or exc}"))
            continue
        hit = file_cache.get(key)
        if hit and hit.get("mtime_ns") == st.st_mtime_ns and hit.get("size") == st.st_size:
            new_cache[key] = hit
            days.append(
                Day(
                    date=dt.date.fromisoformat(hit["date"]),
                    source=key,
                    sha=hit["sha"],
                    papers=hit["papers"],
                    titles=tuple(hit["titles"]),
                    mtime=int(st.st_mtime),
                )
            )
            continue
        try:
            digest = parse_file(path)
        except DigestError as exc:
            problems.append(BuildProblem(exc.path, exc.line, exc.problem))
            continue
        parsed += 1
        day = day_from_digest(digest, int(st.st_mtime))
        new_cache[key] = {
            "mtime_ns": st.st_mtime_ns,
            "size": st.st_size,
            "date": day.date.isoformat(),
            "sha": day.sha,
            "papers": day.papers,
            "titles": list(day.titles),
        }
        days.append(day)
    return days, new_cache, parsed


def one_per_date(days: Iterable[Day], problems: list[BuildProblem]) -> list[Day]:
    """Newest first; a second digest for a date already taken is reported and skipped."""
    by_date: dict[dt.date, Day] = {}
    for day in days:
        if day.date in by_date:
            other = by_date[day.date].source
            reason = f"another digest for {day.date} is already in the archive ({other}); skipped"
            problems.append(BuildProblem(day.source, 1, reason))
            continue
        by_date[day.date] = day
    return [by_date[d] for d in sorted(by_date, reverse=True)]


def load_digest(day: Day) -> Day:
    if day.digest is not None:
        return day
    return dataclasses.replace(day, digest=parse_file(day.source))


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        return {}
    return data


def config_fingerprint(cfg: Config) -> str:
    """Everything besides a digest that shapes a page or a feed entry."""
    h = hashlib.sha256()
    # Not the output folder: the same inputs built elsewhere give the same bytes.
    feed = dataclasses.replace(cfg.feed, output=Path())
    h.update(repr((MANIFEST_VERSION, cfg.site, feed, cfg.topics)).encode())
    folder = templates_dir(cfg)
    # The site's templates and what they import or include from the top (templates/_macros.html).
    templates = sorted(folder.glob("*.html")) + sorted((folder / "site").rglob("*"))
    for path in templates:
        if path.is_file():
            h.update(str(path.name).encode() + b"\0" + path.read_bytes() + b"\0")
    for path in _code_files():
        h.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=1)
def _code_files() -> tuple[Path, ...]:
    """Every module of the package. The pages depend on the site package and what it imports,
    directly or not (templating, i18n, digest, markdown, config...); hashing the whole package
    (a few hundred kB, about a millisecond) never leaves one out, at the price of one full
    re-render after any code change."""
    found = []
    for root, dirs, files in os.walk(_PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found += [Path(root, name) for name in files if name.endswith(".py")]
    return tuple(sorted(found))


def updated_times(
    cfg: Config, days: list[Day], history: dict[str, Any]
) -> tuple[dict[dt.date, int], dict[str, Any]]:
    """Each day's `updated` (epoch seconds) and the new history to store.

    First seen: updated = published. Changed content: max(file mtime, previous + 1 s). Then
    made distinct (the W3C validator warns on equal updated times) by moving later by 1 s.
    """
    times: dict[dt.date, int] = {}
    for day in sorted(days, key=lambda d: d.date):
        published = epoch(published_at(cfg, day.date))
        prev = history.get(day.date.isoformat())
        if prev is None:
            updated = published
        elif prev["sha"] == day.sha:
            updated = prev["updated"]
        else:
            updated = max(day.mtime or 0, prev["updated"] + 1)
        times[day.date] = max(updated, published)
    taken: set[int] = set()
    for date in sorted(times):
        while times[date] in taken:
            times[date] += 1
        taken.add(times[date])
    new_history = dict(history)
    for day in days:
        new_history[day.date.isoformat()] = {"sha": day.sha, "updated": times[day.date]}
    return times, new_history


_DATE_IN_PATH = re.compile(r"(\d{4})[/-]?(\d{2})[/-]?(\d{2})(?:\.md)?$")


def dates_of(problems: Iterable[BuildProblem]) -> set[str]:
    """The days (YYYY-MM-DD) that bad files are named for, as far as their names tell."""
    dates = set()
    for problem in problems:
        m = _DATE_IN_PATH.search(Path(problem.path).as_posix())
        if m:
            dates.add("-".join(m.groups()))
    return dates


def iso(date: dt.date | None) -> str | None:
    return date.isoformat() if date else None


def mtime_of(source: str) -> int | None:
    try:
        return int(os.stat(source).st_mtime)
    except (OSError, ValueError):
        return None
