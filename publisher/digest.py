"""Markdown digest text -> Digest(date, papers). Pure: no I/O beyond reading the file.

The format (see ../shared/corpus/README.md) is a cron job's output, so it drifts: optional
image/Vote/Authors lines, videos in three spellings, a repeated day header, authors as a Python
list, `+` for elided authors, bold labels on bullets. The parser is line-based and forgiving
inside a paper; it only refuses a file that has no day header or no paper at all.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DigestError
from .markdown import render_inline


@dataclass(frozen=True, slots=True)
class Bullet:
    """One summary line. `label` is a bold lead-in such as "What's New" (without the colon)."""

    text: str
    label: str | None = None
    children: tuple[Bullet, ...] = ()

    @property
    def html(self) -> str:
        """The bullet's inline Markdown as safe HTML (no raw HTML passes through)."""
        return render_inline(self.text)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"text": self.text}
        if self.label:
            d["label"] = self.label
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d


@dataclass(frozen=True, slots=True)
class Paper:
    title: str
    url: str
    arxiv_id: str | None
    image: str | None = None
    video: str | None = None
    votes: int | None = None
    authors: tuple[str, ...] = ()
    elided_authors: bool = False
    summary: tuple[Bullet, ...] = ()
    line: int = 0  # where the paper's heading is, for messages

    @property
    def key(self) -> str:
        """Identity within a day: the arXiv id, else the URL."""
        return self.arxiv_id or self.url

    def to_dict(self) -> dict[str, object]:
        return {
            "title": self.title,
            "url": self.url,
            "arxiv_id": self.arxiv_id,
            "image": self.image,
            "video": self.video,
            "votes": self.votes,
            "authors": list(self.authors),
            "elided_authors": self.elided_authors,
            "bullets": [b.to_dict() for b in self.summary],
        }


@dataclass(frozen=True, slots=True)
class Digest:
    date: dt.date
    papers: tuple[Paper, ...]
    source: str = ""
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.source,
            "date": self.date.isoformat(),
            "papers": [p.to_dict() for p in self.papers],
            "warnings": list(self.warnings),
        }


_HEADER = re.compile(r"^##\s+Daily Papers\s*\((\d{4})-(\d{2})-(\d{2})\)\s*$")
_TITLE = re.compile(r"^###\s+\[(.*)\]\((.*)\)\s*$")
_ARXIV = re.compile(
    r"arxiv\.org/(?:abs|pdf|html)/([0-9]{4}\.[0-9]{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/[0-9]{7})",
    re.IGNORECASE,
)
_IMAGE = re.compile(r"^!\[[^\]]*\]\((\S+?)\)\s*$")
_VIDEO_TAG = re.compile(r"""<video\b[^>]*\bsrc\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_WATCH = re.compile(r"^\[Watch Video\]\(?(\S+?)\)?\s*$", re.IGNORECASE)
_VOTE = re.compile(r"^Vote:\s*(.*?)\s*$", re.IGNORECASE)
_AUTHORS = re.compile(r"^Authors:\s*(.*?)\s*$", re.IGNORECASE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^(\s*)(\d+)[.)]\s+(.*)$")
_LABEL = re.compile(
    r"^\*{2,3}([^*]{1,60}?)\*{2,3}\s*:\s*(.*)$|^\*{2,3}([^*]{1,60}?):\*{2,3}\s*(.*)$"
)

# Characters XML 1.0 forbids (C0 controls but tab/newline/CR, and the non-characters U+FFFE/F)
# and lone surrogates: dropped here, once, so no later stage (lxml, SMTP) trips on them.
_CONTROL = dict.fromkeys(
    [
        *range(0x00, 0x09),
        0x0B,
        0x0C,
        *range(0x0E, 0x20),
        0x7F,
        0xFFFE,
        0xFFFF,
        *range(0xD800, 0xE000),
    ]
)


def clean_text(text: str) -> str:
    """Normalise newlines and drop characters that cannot appear in XML or a mail header."""
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_CONTROL)


def parse_file(path: str | Path) -> Digest:
    """Read and parse one digest file; DigestError names the file and line on bad input."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DigestError(p, 0, f"cannot read file: {exc.strerror or exc}") from None
    return parse(raw.decode("utf-8", errors="replace"), source=str(p))


def parse(text: str, source: str = "<string>") -> Digest:
    """Parse digest text. Raises DigestError (and nothing else) for input that is not a digest."""
    lines = clean_text(text).split("\n")
    warnings: list[str] = []
    date: dt.date | None = None
    header_line = 0
    papers: list[Paper] = []
    seen: set[str] = set()
    current: _PaperBuilder | None = None

    def finish() -> None:
        nonlocal current
        if current is not None:
            paper = current.build()
            if paper.key in seen:
                warnings.append(f"line {paper.line}: repeated paper {paper.key} skipped")
            else:
                seen.add(paper.key)
                papers.append(paper)
        current = None

    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            finish()
            try:
                day = dt.date(*(int(g) for g in header.groups()))
            except ValueError:
                problem = f"invalid date in header: {line.strip()!r}"
                raise DigestError(source, number, problem) from None
            if date is None:
                date, header_line = day, number
            elif day != date:
                warnings.append(f"line {number}: second header for {day} in a digest of {date}")
            continue
        if line.startswith("### "):
            if date is None:
                raise DigestError(
                    source, number, "paper before the '## Daily Papers (YYYY-MM-DD)' header"
                )
            finish()
            title = _parse_title(line)
            if title is None:
                warnings.append(f"line {number}: heading without a [title](url) link ignored")
                continue
            current = _PaperBuilder(title[0], title[1], number)
            continue
        if current is not None:
            current.feed(line)

    finish()
    if date is None:
        raise DigestError(source, 1, "not a digest: no '## Daily Papers (YYYY-MM-DD)' header")
    if not papers:
        raise DigestError(source, header_line, "digest has no paper ('### [title](url)' heading)")
    return Digest(date=date, papers=tuple(papers), source=source, warnings=tuple(warnings))


def _parse_title(line: str) -> tuple[str, str] | None:
    """`### [title](url)`: titles may hold brackets, so the target starts at the last `](`."""
    body = line[4:].strip()
    if not (body.startswith("[") and body.endswith(")")):
        return None
    cut = body.rfind("](")
    if cut <= 0:
        return None
    title = body[1:cut].strip()
    url = body[cut + 2 : -1].strip()
    if not title or not url or any(c.isspace() for c in url):
        return None
    return title, url


def _arxiv_id(url: str) -> str | None:
    m = _ARXIV.search(url)
    return m.group(1) if m else None


def parse_authors(value: str) -> tuple[tuple[str, ...], bool]:
    """Authors as 'A, B, +, C' or a Python list literal; '+' marks elided names."""
    items: Iterable[object]
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, list | tuple):
            items = parsed
        else:
            items = [s.strip().strip("'\"") for s in value[1:-1].split(",")]
    else:
        items = value.split(",")
    names: list[str] = []
    elided = False
    for item in items:
        name = " ".join(str(item).split())
        if not name:
            continue
        if name in ("+", "…", "..."):
            elided = True
            continue
        names.append(name)
    return tuple(names), elided


class _PaperBuilder:
    """Collects the lines of one paper between its heading and the next."""

    __slots__ = ("title", "url", "line", "image", "video", "votes", "authors", "elided", "bullets")

    def __init__(self, title: str, url: str, line: int) -> None:
        self.title = title
        self.url = url
        self.line = line
        self.image: str | None = None
        self.video: str | None = None
        self.votes: int | None = None
        self.authors: tuple[str, ...] = ()
        self.elided = False
        # (text, label, [(text, label) of its nested items]) kept mutable until build()
        self.bullets: list[tuple[str, str | None, list]] = []

    def feed(self, line: str) -> None:
        stripped = line.strip()
        if not stripped:
            return
        if not self.bullets:
            if self._meta(stripped):
                return
        elif self.video is None and _VIDEO_TAG.search(stripped) and stripped.startswith("<"):
            self.video = _VIDEO_TAG.search(stripped).group(1)
            return
        bullet = _BULLET.match(line)
        numbered = None if bullet else _NUMBERED.match(line)
        if bullet:
            indent, text = len(bullet.group(1).expandtabs(4)), bullet.group(2)
            self._add(text, nested=indent >= 2)
        elif numbered:
            # "1) ..." lines list the points of the bullet above them.
            self._add(f"{numbered.group(2)}) {numbered.group(3)}", nested=bool(self.bullets))
        else:
            self._add(stripped, nested=False)

    def _meta(self, stripped: str) -> bool:
        m = _IMAGE.match(stripped)
        if m:
            self.image = self.image or m.group(1)
            return True
        m = _WATCH.match(stripped)
        if m:
            self.video = self.video or m.group(1)
            return True
        if stripped.startswith("<"):
            m = _VIDEO_TAG.search(stripped)
            if m:
                self.video = self.video or m.group(1)
                return True
        m = _VOTE.match(stripped)
        if m:
            v = m.group(1)
            self.votes = int(v) if v.isascii() and v.isdigit() else None
            return True
        m = _AUTHORS.match(stripped)
        if m:
            self.authors, self.elided = parse_authors(m.group(1))
            return True
        return False

    def _add(self, text: str, nested: bool) -> None:
        label = None
        m = _LABEL.match(text)
        if m:
            label = (m.group(1) or m.group(3)).strip()
            text = (m.group(2) if m.group(1) is not None else m.group(4)) or ""
        if nested and self.bullets:
            self.bullets[-1][2].append((text, label))
        else:
            self.bullets.append((text, label, []))

    def build(self) -> Paper:
        summary = tuple(
            Bullet(text, label, tuple(Bullet(t, lab) for t, lab in children))
            for text, label, children in self.bullets
        )
        return Paper(
            title=self.title,
            url=self.url,
            arxiv_id=_arxiv_id(self.url),
            image=self.image,
            video=self.video,
            votes=self.votes,
            authors=self.authors,
            elided_authors=self.elided,
            summary=summary,
            line=self.line,
        )


# The names a dated digest file goes by, relative to the folder searched: YYYY/MM/DD.md (the
# upstream's paper_logs/ layout), YYYY/MM/YYYY-MM-DD.md, YYYY-MM-DD.md or YYYYMMDD.md.
_DATED_NAME = re.compile(
    r"^(?:(?:\d{4}/)?\d{2}/\d{2}|(?:\d{4}/(?:\d{2}/)?)?\d{4}-?\d{2}-?\d{2})\.md$"
)


def is_dated_name(relative: str) -> bool:
    """Whether a path (relative to the digests folder, with /) is named like a day's digest."""
    return bool(_DATED_NAME.match(relative))


def find_digests(inbox: Path, *, dated_only: bool = False) -> list[Path]:
    """Every *.md under the inbox, recursively, in a stable order (README.md files skipped).

    `dated_only` keeps only files named like a day (`is_dated_name`): in a git checkout of
    someone else's repository, LICENSE.md or CONTRIBUTING.md are not digests, and must not be
    reported as bad ones."""
    if not inbox.is_dir():
        return []
    found = (p for p in inbox.rglob("*.md") if p.is_file() and p.name.lower() != "readme.md")
    if dated_only:
        found = (p for p in found if is_dated_name(p.relative_to(inbox).as_posix()))
    return sorted(found)


def digest_sha(digest: Digest) -> str:
    """A hash of what a digest says (not where it lives, nor its whitespace): the site's
    manifest and the publications table compare digests by it."""
    data = digest.to_dict()
    data.pop("file", None)
    data.pop("warnings", None)
    text = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
