"""Digest -> Newsletter: the email's subject, HTML and text, once per segment of readers.

Jinja renders and premailer inlines the CSS ONCE per edition (the expensive part, ~0.3 s on a
68-paper day), every paper in every form (`inline_edition`); each segment of readers (their
topics and cap: publisher/topics.py, publisher/mailer.Segments) keeps the pieces of its papers
and fills its subject, preheader, count and choice line (`render_newsletter`). What differs per
reader (address, name, unsubscribe URL) is left as placeholders that
`publisher.mailer.MessageFactory` substitutes per message, so a 10,000-reader send costs one
inlining, not 10,000.

Size budget: Gmail clips an HTML part over ~102 KB, hiding the footer (and the unsubscribe link),
and it is not settled whether Gmail counts the part as sent (base64) or decoded; the budget is
on the bytes as sent, which are the larger, so both readings are covered. The template renders
every paper in all its forms (full card, short card, linked title) in one document; after the
single premailer pass the document is cut at its `<!--pub:...-->` marks and each paper keeps the
richest form whose base64 fits `[email] max_html_bytes`: first the summaries of the
least-voted papers are shortened, then the least-voted papers become linked titles in a list, and
only then are the last ones left to a "N more papers on the web" link to the day's page (which
lists every paper). No paper is ever dropped without a link to it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from markupsafe import Markup, escape

from . import urls
from .caches import inline_css
from .config import Config
from .digest import Bullet, Digest, Paper
from .errors import ConfigError
from .i18n import strings
from .markdown import plain_inline, render_all
from .mime import one_line
from .templating import jinja_env
from .topics import Choice, describe_choice

if TYPE_CHECKING:
    from .editions import Week

# Placeholders for what differs per reader. Word characters only, so that neither Jinja's
# autoescape, premailer/lxml's serialiser nor a URL rewrite can alter them.
PLACEHOLDER_EMAIL = "__PUBLISHER_READER_EMAIL__"
PLACEHOLDER_UNSUBSCRIBE = "__PUBLISHER_UNSUBSCRIBE_URL__"
PLACEHOLDER_PREFERENCES = "__PUBLISHER_PREFERENCES_URL__"
PLACEHOLDERS = (PLACEHOLDER_EMAIL, PLACEHOLDER_UNSUBSCRIBE, PLACEHOLDER_PREFERENCES)
_MORE_COUNT = "__PUBLISHER_MORE_COUNT__"  # filled once the size budget decided it

# Bytes of the budget kept free for the per-reader values that replace the placeholders
# (an address of up to 254 characters, and the unsubscribe and preferences URLs with a token).
SUBSTITUTION_RESERVE = 2048
SHORT_BULLETS = 2  # a shortened summary keeps its first bullets...
SHORT_CHARS = 160  # ...each cut to this many characters
SUBJECT_TITLE_CHARS = 80
PREHEADER_CHARS = 140

Form = Literal["full", "short", "title", "web"]
_MARK = re.compile(r"<!--pub:([a-z0-9-]+)-->\n?")


@dataclass(frozen=True, slots=True)
class Newsletter:
    """One digest's email, ready for per-reader substitution of the PLACEHOLDERS."""

    date: dt.date
    subject: str  # one line: CR, LF and other whitespace runs already collapsed
    html: str  # CSS inlined; holds PLACEHOLDERS
    text: str  # holds PLACEHOLDERS
    day_url: str
    # The size-budget decision, as paper keys (Paper.key), each in digest order:
    full: tuple[str, ...]  # shown with the whole summary
    shortened: tuple[str, ...]  # shown with a shortened summary
    linked: tuple[str, ...]  # listed as linked titles only
    on_web: tuple[str, ...]  # only behind the "N more papers on the web" link to day_url

    @property
    def more_count(self) -> int:
        return len(self.on_web)

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode())

    @property
    def html_wire_bytes(self) -> int:
        """The HTML part's body as sent, before per-reader substitution (base64, CRLF lines)."""
        return wire_bytes(self.html)


_B64_LINE_IN, _B64_LINE_OUT = 57, 78  # bytes per base64 line: 57 in, 76 out + CRLF (RFC 2045)
_SENTENCE_END = re.compile(r"[.!?。](?=\s)")


def _crlf_bytes(text: str) -> int:
    """UTF-8 bytes of `text` once its LF line breaks are CRLF, as the mailer encodes it."""
    return len(text.encode()) + text.count("\n")


def wire_bytes(text: str) -> int:
    """Bytes of `text` as a base64 body in 76-character lines (what `publisher.mailer` sends)."""
    return -(-_crlf_bytes(text) // _B64_LINE_IN) * _B64_LINE_OUT


def _decoded_budget(wire: int) -> int:
    """The most CRLF bytes whose base64 body stays within `wire` bytes."""
    return wire // _B64_LINE_OUT * _B64_LINE_IN


def _cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, shortened at a sentence end or else between words.

    A sentence end in the second half of the room wins ("... 보입니다. …"); otherwise the cut
    falls at the last space ("... 모델을…"), never inside a word. Only a text with no space at
    all (one long URL) is cut mid-word.
    """
    if len(text) <= limit:
        return text
    room = text[: limit - 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, limit - 1) if m.end() <= limit - 2]
    if ends and ends[-1] >= limit // 2:
        return text[: ends[-1]] + " …"
    space = len(room) if text[limit - 1].isspace() else room.rfind(" ")
    if space > 0:
        return room[:space].rstrip(" ,;:·-–—(") + "…"
    return room.rstrip() + "…"


def _safe_url(url: str | None) -> str | None:
    # A digest is data: only web links become links, never javascript: or data: URLs.
    if url and re.match(r"^https?://", url, re.IGNORECASE):
        return url
    return None


def subject_for(digest: Digest, cfg: Config, week: Week | None = None) -> str:
    """`[email] subject` filled with {date} and {first_title}, on one line; for a weekly
    edition (`week`), `[email] weekly_subject` with {week} and {first_title}."""
    first = digest.papers[0].title if digest.papers else ""
    if week is not None:
        try:
            subject = cfg.email.weekly_subject.format(
                week=str(week), first_title=_cut(one_line(first), SUBJECT_TITLE_CHARS)
            )
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{cfg.path}: 'email.weekly_subject' may use only {{week}} and {{first_title}}: "
                f"{exc}"
            ) from None
        return one_line(subject)
    try:
        subject = cfg.email.subject.format(
            date=digest.date.isoformat(), first_title=_cut(one_line(first), SUBJECT_TITLE_CHARS)
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"{cfg.path}: 'email.subject' may use only {{date}} and {{first_title}}: {exc}"
        ) from None
    return one_line(subject)


def authors_line(paper: Paper, max_authors: int, et_al: str) -> str:
    """Authors joined with commas, shortened with "et al." past max_authors (or if elided)."""
    names = list(paper.authors)
    shortened = paper.elided_authors or len(names) > max_authors
    text = ", ".join(names[: max(1, max_authors)])
    return f"{text} {et_al}" if shortened and text else text


@dataclass(frozen=True, slots=True)
class _Item:
    label: str | None
    html: Markup
    text: str
    children: tuple[_Item, ...] = ()


@dataclass(frozen=True, slots=True)
class _PaperView:
    n: int
    key: str
    title: str
    url: str | None
    authors: str
    votes: int | None
    image: str | None
    video: str | None
    bullets: tuple[_Item, ...]
    short: tuple[_Item, ...]
    # The weekly edition: the paper's card on its day page, and that day ("" in a daily one).
    page: str = ""
    page_day: str = ""


def _full_item(b: Bullet, html: Mapping[str, str]) -> _Item:
    return _Item(
        b.label,
        Markup(html[b.text]),
        plain_inline(b.text),
        tuple(_full_item(c, html) for c in b.children),
    )


def _texts(bullets: Iterable[Bullet]) -> Iterator[str]:
    """The Markdown of these bullets and of all their children."""
    for b in bullets:
        yield b.text
        yield from _texts(b.children)


def _short_item(b: Bullet) -> _Item:
    text = _cut(one_line(plain_inline(b.text)), SHORT_CHARS)
    return _Item(b.label, escape(text), text)


def _view(
    n: int,
    paper: Paper,
    cfg: Config,
    et_al: str,
    html: Mapping[str, str],
    page: tuple[str, str] = ("", ""),
) -> _PaperView:
    """The paper as the templates show it; `html` holds the HTML of each of its bullets'
    Markdown (`markdown.render_all`)."""
    return _PaperView(
        n=n,
        key=paper.key,
        title=paper.title,
        url=_safe_url(paper.url),
        authors=authors_line(paper, cfg.email.max_authors, et_al),
        votes=paper.votes,
        image=_safe_url(paper.image),
        video=_safe_url(paper.video),
        bullets=tuple(_full_item(b, html) for b in paper.summary),
        short=tuple(_short_item(b) for b in paper.summary[:SHORT_BULLETS]),
        page=page[0],
        page_day=page[1],
    )


def _mark(name: str) -> Markup:
    return Markup(f"<!--pub:{name}-->")


def _split(html: str) -> tuple[str, list[tuple[str, str]]]:
    parts = _MARK.split(html)
    return parts[0], list(zip(parts[1::2], parts[2::2], strict=True))


# An email with more papers than this opens with a compact list of its titles (phones: a
# 20-paper email is about 18 screens long).
TOC_MIN = 6


def _keep(name: str, forms: dict[int, Form]) -> bool:
    """Whether the piece after mark `name` belongs in the email, given each paper's form."""
    values = forms.values()
    if name == "footer":
        return True
    # The list of titles: a paper shown as a card links to it, one listed as a linked title
    # links to the paper, one left to the web page is left out of the list too.
    if name in ("toc-head", "toc-tail"):
        return len(forms) >= TOC_MIN and any(f != "web" for f in values)
    if name.endswith(("-toc-card", "-toc-link")):
        n, _, kind = name.partition("-toc-")
        form = forms.get(int(n))
        wanted = ("full", "short") if kind == "card" else ("title",)
        return len(forms) >= TOC_MIN and form in wanted
    if name == "short-note":
        return any(f != "full" for f in values)
    if name in ("more-head", "more-tail"):
        return "title" in values
    if name == "more-web":
        return "web" in values
    n, _, form = name.partition("-")
    return forms.get(int(n)) == form


def _choose(
    views: list[_PaperView], prefix: str, pieces: list[tuple[str, str]], budget: int
) -> dict[int, Form]:
    """Each paper's form: the richest that keeps the whole HTML within `budget` CRLF bytes.

    The total is kept up to date as papers change form (what `_keep` would keep, summed per
    paper and for the shared pieces), not recounted over every piece at each step: a segment
    of a big day is assembled in milliseconds (`_total` is the plain recount, for the tests).
    """
    size = {name: _crlf_bytes(piece) for name, piece in pieces}
    forms: dict[int, Form] = {v.n: "full" for v in views}
    toc = len(forms) >= TOC_MIN
    counts = Counter(forms.values())

    def own(n: int, form: Form) -> int:
        """The bytes of paper n's pieces in `form`: its card or title, its line in the list."""
        mine = size.get(f"{n}-{form}", 0) if form != "web" else 0
        if toc and form in ("full", "short"):
            mine += size.get(f"{n}-toc-card", 0)
        elif toc and form == "title":
            mine += size.get(f"{n}-toc-link", 0)
        return mine

    def shared() -> int:
        kept = {"footer": True}
        kept["short-note"] = counts["full"] < len(forms)
        kept["more-head"] = kept["more-tail"] = counts["title"] > 0
        kept["more-web"] = counts["web"] > 0
        kept["toc-head"] = kept["toc-tail"] = toc and counts["web"] < len(forms)
        return sum(size.get(name, 0) for name, keep in kept.items() if keep)

    papers = _crlf_bytes(prefix) + sum(own(v.n, "full") for v in views)
    # Least important first: fewest votes, then later in the digest (the digest's own order).
    order = sorted(views, key=lambda v: (v.votes if v.votes is not None else -1, -v.n))
    for form in ("short", "title", "web"):
        for v in order:
            if papers + shared() <= budget:
                return forms
            old = forms[v.n]
            papers += own(v.n, form) - own(v.n, old)  # type: ignore[arg-type]
            counts[old] -= 1
            counts[form] += 1
            forms[v.n] = form  # type: ignore[assignment]
    return forms


def _total(prefix: str, pieces: list[tuple[str, str]], forms: dict[int, Form]) -> int:
    """The CRLF bytes of the HTML that `forms` keeps, counted piece by piece."""
    kept = (piece for name, piece in pieces if _keep(name, forms))
    return _crlf_bytes(prefix) + sum(_crlf_bytes(piece) for piece in kept)


def _text_view(v: _PaperView, form: Form) -> dict[str, Any]:
    items = v.bullets if form == "full" else v.short
    return {
        "title": v.title,
        "url": v.url or "",
        "authors": v.authors,
        "votes": v.votes,
        "video": v.video,
        "text_bullets": items,
        "page": v.page,
        "page_day": v.page_day,
    }


# What differs between the segments of one edition, left as placeholders in the one inlined
# document and filled per segment (HTML-escaped): the subject (<title>), the preheader, the
# number of papers and the footer's line saying what the reader gets.
_SEG_SUBJECT = "__PUBLISHER_SEGMENT_SUBJECT__"
_SEG_PREHEADER = "__PUBLISHER_SEGMENT_PREHEADER__"
_SEG_COUNT = "__PUBLISHER_SEGMENT_COUNT__"
_SEG_CHOICE = "__PUBLISHER_SEGMENT_CHOICE__"


@dataclass(frozen=True, slots=True)
class InlinedEdition:
    """An edition's HTML with every paper in every form, CSS inlined once (premailer is the
    expensive part: ~0.3 s for a 68-paper day), cut at its marks; `assemble` makes each
    segment's newsletter from it by keeping pieces, with no second inlining."""

    digest: Digest
    views: tuple[_PaperView, ...]
    prefix: str
    pieces: tuple[tuple[str, str], ...]
    week: Week | None = None  # a weekly edition's week (None: a daily edition)


def inline_edition(
    digest: Digest,
    cfg: Config,
    *,
    week: Week | None = None,
    pages: Mapping[str, tuple[str, str]] | None = None,
) -> InlinedEdition:
    """Jinja, then premailer, once for the whole edition (every paper, every form). A weekly
    edition gives its `week` (`digest` then holds the week's papers, dated its Monday) and
    `pages`: each paper's (card URL on its day page, that day) by paper key."""
    t = strings(cfg.site.language)
    pages = pages or {}
    html = render_all(text for p in digest.papers for text in _texts(p.summary))
    views = tuple(
        _view(n, p, cfg, t["et_al"], html, pages.get(p.key, ("", "")))
        for n, p in enumerate(digest.papers)
    )
    raw = (
        jinja_env(cfg)
        .get_template("email/newsletter.html")
        .render(
            **_common(digest, cfg, week),
            subject=_SEG_SUBJECT,
            paper_count=_SEG_COUNT,
            choice_line=_SEG_CHOICE,
            papers=views,
            preheader=_SEG_PREHEADER,
            mark=_mark,
            more_count=_MORE_COUNT,
        )
    )
    prefix, pieces = _split(inline_css(raw))
    return InlinedEdition(digest, views, prefix, tuple(pieces), week)


def _common(digest: Digest, cfg: Config, week: Week | None = None) -> dict[str, Any]:
    if week is None:
        date_text, page = digest.date.isoformat(), urls.day_url(cfg, digest.date)
    else:
        date_text = strings(cfg.site.language)["week_text"].format(
            week=week, first=week.monday.isoformat(), last=week.sunday.isoformat()
        )
        page = urls.weekly_url(cfg)
    return {
        "lang": cfg.site.language,
        "site_title": cfg.site.title,
        "date_text": date_text,
        "day_url": page,
        "subscribe_url": urls.subscribe_url(cfg),
        "contact": cfg.email.contact,
        "reader_email": PLACEHOLDER_EMAIL,
        "unsubscribe_url": PLACEHOLDER_UNSUBSCRIBE,
        "preferences_url": PLACEHOLDER_PREFERENCES,
    }


def render_newsletter(
    digest: Digest,
    cfg: Config,
    choice: Choice | None = None,
    *,
    edition: InlinedEdition | None = None,
) -> Newsletter:
    """The email of the papers in `digest`, for readers with `choice` (the footer says it;
    default: daily, all papers): Jinja and premailer (or the pieces of `edition`, the whole
    edition already inlined, when `digest` is a selection of its papers), then the size-budget
    choice. Every paper of `digest` must be one of `edition`'s (by key)."""
    choice = choice or Choice()
    edition = edition or inline_edition(digest, cfg)
    wanted = {p.key for p in digest.papers}
    views = [v for v in edition.views if v.key in wanted]
    subject = subject_for(digest, cfg, edition.week)
    common = _common(digest, cfg, edition.week)
    day_url = common["day_url"]
    choice_line = describe_choice(cfg, choice.cadence, choice.topics, choice.max_papers)
    preheader = _cut(" · ".join(one_line(v.title) for v in views[:3]), PREHEADER_CHARS)
    fill = (
        (_SEG_SUBJECT, str(escape(subject))),
        (_SEG_PREHEADER, str(escape(preheader))),
        (_SEG_COUNT, str(len(views))),
        (_SEG_CHOICE, str(escape(choice_line))),
    )

    def filled(piece: str) -> str:
        for mark, value in fill:
            piece = piece.replace(mark, value)
        return piece

    prefix = filled(edition.prefix)
    pieces = [
        (name, filled(piece) if name == "footer" else piece) for name, piece in edition.pieces
    ]
    budget = _decoded_budget(cfg.email.max_html_bytes) - SUBSTITUTION_RESERVE
    forms = _choose(views, prefix, pieces, budget)
    keys = {form: tuple(v.key for v in views if forms[v.n] == form) for form in forms.values()}
    html = prefix + "".join(piece for name, piece in pieces if _keep(name, forms))
    html = html.replace(_MORE_COUNT, str(len(keys.get("web", ()))))

    text = (
        jinja_env(cfg)
        .get_template("email/newsletter.txt")
        .render(
            **common,
            subject=subject,
            paper_count=len(views),
            choice_line=choice_line,
            shortened=any(f != "full" for f in forms.values()),
            cards=[_text_view(v, forms[v.n]) for v in views if forms[v.n] in ("full", "short")],
            titles=[_text_view(v, "title") for v in views if forms[v.n] == "title"],
            toc_titles=[one_line(v.title) for v in views] if len(views) >= TOC_MIN else [],
            more_count=len(keys.get("web", ())),
        )
    )
    return Newsletter(
        date=digest.date,
        subject=subject,
        html=html,
        text=text,
        day_url=day_url,
        full=keys.get("full", ()),
        shortened=keys.get("short", ()),
        linked=keys.get("title", ()),
        on_web=keys.get("web", ()),
    )
