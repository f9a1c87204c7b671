"""Newsletter x subscriber -> RFC 5322 bytes, ready for SMTP (CRLF line endings).

`MessageFactory` prepares everything that is the same for every reader once (From, Subject
encoded per RFC 2047, List-Id, the MIME skeleton, the base64 of each body part up to the first
placeholder, the DKIM key); `build()` then only signs an unsubscribe token (naming the
subscriber's id), substitutes the placeholders in the small tail of each part, encodes that
tail, and writes the headers.

The headers are written here rather than by `email.message.EmailMessage`: serialising a 100 KB
message with the email package costs milliseconds per reader, and `policy.SMTP` folds a long
List-Unsubscribe URL into an encoded-word (`=?utf-8?q?...?=`) that mail clients do not decode
there. Every header value is forced onto one line (CR/LF cannot come through from data) and
every folding point is chosen here; the tests parse the result back with the email package.
The header encoding, the sender headers and the base64 parts are publisher/mime.py's, shared
with the signup's confirmation mail; DKIM is publisher/dkim.py's.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from email.utils import parseaddr
from html import escape
from typing import Any

from .config import Config
from .digest import Digest, Paper
from .dkim import DkimSettings, dkim_settings, signed
from .editions import Week, weekly_papers
from .errors import ConfigError
from .mailrules import UNSUBSCRIBE, TokenCodec
from .mime import (
    B64_LINE,
    CRLF,
    b64_lines,
    canonical,
    check_address,
    date_value,
    encode_phrase,
    encode_unstructured,
    format_address,
    from_header,
    message_id,
    new_boundary,
    one_line,
    part_head,
    reply_to_header,
    sender_domain,
)
from .newsletter import (
    PLACEHOLDER_EMAIL,
    PLACEHOLDER_PREFERENCES,
    PLACEHOLDER_UNSUBSCRIBE,
    PLACEHOLDERS,
    InlinedEdition,
    Newsletter,
    inline_edition,
    render_newsletter,
)
from .state import LedgerEntry, split_topics
from .tokens import Signer, ledger_message_ids
from .topics import Choice, TopicMatcher, select
from .urls import paper_anchors, paper_url, preferences_url, unsubscribe_url

_PLACEHOLDER_RE = re.compile(("(" + "|".join(PLACEHOLDERS) + ")").encode())
_EMAIL, _UNSUB, _PREFS = (
    p.encode() for p in (PLACEHOLDER_EMAIL, PLACEHOLDER_UNSUBSCRIBE, PLACEHOLDER_PREFERENCES)
)


def unsubscribe_mailto(cfg: Config) -> str:
    """`[email] unsubscribe_mailto`, or the From address, as a mailto: URL."""
    target = one_line(cfg.email.unsubscribe_mailto) or parseaddr(cfg.email.from_)[1]
    if target.lower().startswith("mailto:"):
        return target
    return f"mailto:{target}?subject=unsubscribe"


def _list_slug(cfg: Config) -> str:
    return re.sub(r"[^a-z0-9]+", "-", cfg.site.title.lower()).strip("-") or "newsletter"


def list_id(cfg: Config) -> str:
    """`[email] list_id`, or "<title> <slug.domain>" derived from the site title and From."""
    if cfg.email.list_id:
        value = one_line(cfg.email.list_id)
        return value if "<" in value else f"<{value.strip('<>')}>"
    return f"{encode_phrase(one_line(cfg.site.title))} <{_list_slug(cfg)}.{sender_domain(cfg)}>"


_FEEDBACK_ID = re.compile(r"^[\x21-\x7e]{1,200}$")


def feedback_id(cfg: Config, date: dt.date) -> str:
    """The Feedback-ID header value (Gmail's feedback loop), `CampaignID:...:SenderId`.

    `[email] feedback_id`, with `{date}` replaced by the issue's date as YYYYMMDD; by default
    "YYYYMMDD:<slug of the site title>:digest:<From domain>" (the issue is the campaign, the
    From domain the constant sender id). Printable ASCII without spaces, else a ConfigError.
    """
    template = cfg.email.feedback_id or f"{{date}}:{_list_slug(cfg)}:digest:{sender_domain(cfg)}"
    try:
        value = template.format(date=f"{date:%Y%m%d}")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{cfg.path}: 'email.feedback_id' may use only {{date}}: {exc}") from None
    if not _FEEDBACK_ID.match(value):
        raise ConfigError(
            f"{cfg.path}: 'email.feedback_id' must be printable ASCII without spaces "
            f"(fields separated by ':'), not {value!r}"
        )
    return value


class _Part:
    """One text/* part: base64 computed once up to the line holding the first placeholder."""

    __slots__ = ("head", "tail")

    def __init__(self, content_type: str, content: str) -> None:
        body = canonical(content)
        found = [i for p in PLACEHOLDERS if (i := body.find(p.encode())) >= 0]
        first = min(found, default=len(body))
        cut = first - first % B64_LINE  # base64 lines of the prefix are final
        self.head = part_head(content_type) + b64_lines(body[:cut])
        # bytes, not str: the cut may fall inside a multi-byte character
        self.tail = _PLACEHOLDER_RE.split(body[cut:])

    def render(self, values: dict[bytes, bytes]) -> bytes:
        pieces = [values[p] if i % 2 else p for i, p in enumerate(self.tail)]
        return self.head + b64_lines(b"".join(pieces))


class MessageFactory:
    """Builds one newsletter's message for each subscriber; all shared work happens once here."""

    def __init__(
        self,
        newsletter: Newsletter,
        cfg: Config,
        secret: bytes,
        *,
        dkim: DkimSettings | None | bool = True,
    ) -> None:
        self.newsletter = newsletter
        self.cfg = cfg
        self._unsubscribe_signer = Signer(secret, "unsubscribe")
        self.domain = sender_domain(cfg)
        self._ledger_message_id = ledger_message_ids(
            Signer(secret, "message"), newsletter.date, self.domain
        )
        self._unsub_base = unsubscribe_url(cfg, "")
        # The footer's preferences link carries the same token: the preferences page accepts an
        # unsubscribe token (publisher/web/), so a reader's two links cost one HMAC.
        self._prefs_base = preferences_url(cfg, "")
        # The links' HTML form: the bases escaped once; a token is base64url, nothing to escape.
        self._unsub_base_html = escape(self._unsub_base)
        self._prefs_base_html = escape(self._prefs_base)
        self._mailto = unsubscribe_mailto(cfg)
        # `unsubscribe+{token}@...`: each reader's own signed token (publisher/mailrules.py),
        # so a mail to it unsubscribes exactly that reader (`publisher bounces import`).
        self._mailto_tokens = (
            TokenCodec([secret], UNSUBSCRIBE) if "{token}" in self._mailto else None
        )
        self._tz = cfg.tz
        self._date_second = -1
        self._date = ""
        self._id_prefix = f"{newsletter.date:%Y%m%d}.{os.getpid()}"
        self._boundary = new_boundary()
        subject = encode_unstructured(newsletter.subject, len("Subject"))
        fixed = [from_header(cfg), f"Subject: {subject}", "MIME-Version: 1.0"]
        if reply_to := reply_to_header(cfg):
            fixed.append(reply_to)
        fixed += [
            f"List-Id: {list_id(cfg)}",
            f"Feedback-ID: {feedback_id(cfg, newsletter.date)}",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            f'Content-Type: multipart/alternative; boundary="{self._boundary}"',
        ]
        self._fixed = ("\r\n".join(fixed) + "\r\n").encode()
        self._text = _Part("text/plain", newsletter.text)
        self._html = _Part("text/html", newsletter.html)
        b = self._boundary.encode()
        self._sep = b"--" + b + CRLF
        self._end = b"--" + b + b"--" + CRLF
        # The key is read and tried here, once (or handed over by a Segments, once per send).
        self._dkim = dkim_settings(cfg) if dkim is True else dkim or None

    @property
    def dkim(self) -> tuple[str, str] | None:
        """(selector, domain) the messages are signed with, or None when unsigned."""
        return (self._dkim[0].decode(), self._dkim[1].decode()) if self._dkim else None

    @property
    def dkim_key(self) -> bytes | None:
        return self._dkim[2] if self._dkim else None

    def _date_header(self) -> str:
        # formatting a date costs more than everything else in a header; once a second is enough
        now = time.time()
        if int(now) != self._date_second:
            self._date_second = int(now)
            self._date = date_value(now, self._tz)
        return self._date

    def unsubscribe_url(self, subscriber_id: int) -> str:
        """The reader's link: an opaque token naming the subscriber's id (publisher/tokens.py)."""
        return self._unsub_base + self._unsubscribe_signer.sign_id(subscriber_id)

    def preferences_url(self, subscriber_id: int) -> str:
        """The reader's preferences page (status, subscribe again, the stored data)."""
        return self._prefs_base + self._unsubscribe_signer.sign_id(subscriber_id)

    def build(
        self,
        email: str,
        name: str = "",
        subscriber_id: int | None = None,
        ledger_id: int | None = None,
    ) -> bytes:
        """The complete message for one reader, CRLF line endings, DKIM-signed if configured.
        `subscriber_id` (the ledger row's) is what the unsubscribe link and a `{token}` mailto
        address name; a preview, which has none, uses id 0, which no subscriber has. With
        `ledger_id` (the row being sent) the Message-ID names that row, signed
        (`tokens.message_ledger_ids` reads it back), so a report quoting it names this reader."""
        subscriber_id = subscriber_id or 0
        addr = check_address(email)
        token = self._unsubscribe_signer.sign_id(subscriber_id)
        url = self._unsub_base + token
        prefs = self._prefs_base + token
        name = one_line(name)
        mailto = self._mailto
        if self._mailto_tokens is not None:
            mailto = mailto.replace(
                "{token}", self._mailto_tokens.sign(subscriber_id, self.newsletter.date)
            )
        headers = (
            f"To: {format_address(name, addr)}\r\n"
            f"Date: {self._date_header()}\r\n"
            f"Message-ID: {self._message_id(ledger_id)}\r\n"
            f"List-Unsubscribe: <{url}>,\r\n <{mailto}>\r\n"
        ).encode()
        text = self._text.render(
            {_EMAIL: addr.encode(), _UNSUB: url.encode(), _PREFS: prefs.encode()}
        )
        html = self._html.render(
            {
                _EMAIL: escape(addr).encode(),
                _UNSUB: (self._unsub_base_html + token).encode(),
                _PREFS: (self._prefs_base_html + token).encode(),
            }
        )
        message = b"".join(
            (headers, self._fixed, CRLF, self._sep, text, self._sep, html, self._end)
        )
        return signed(message, self._dkim)

    def _message_id(self, ledger_id: int | None) -> str:
        if ledger_id is None:
            return message_id(self._id_prefix, self.domain)
        return self._ledger_message_id(ledger_id)


class Segments:
    """One edition's messages for every segment of readers, each segment rendered once.

    A segment is the readers with the same (edition, topics, max_papers); its newsletter is
    made the first time a reader of it is built, from the ledger rows the send actually serves,
    and kept in a small LRU cache (`cache_size` segments), so memory stays flat however many
    segments there are. The expensive part (Jinja plus premailer, ~0.3 s on a 68-paper day) is
    done once for the whole edition, every paper in every form (`inline_edition`); a segment
    keeps the pieces of its papers (`render_newsletter(..., edition=...)`, a few ms) and renders
    only its small text part. The ledger queues readers in segment order, so a sender meets
    one segment after another and makes each once (a segment evicted and met again is made
    again; `renders` counts). Thread-safe: workers building a segment being made wait for it.
    """

    def __init__(
        self,
        digest: Digest,
        cfg: Config,
        secret: bytes,
        *,
        cadence: str = "daily",
        cache_size: int = 32,
        week: Week | None = None,
        pages: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.digest = digest
        self.cfg = cfg
        self.secret = secret
        self.cadence = cadence
        # A weekly edition: its week, and each paper's (card URL on its day page, that day).
        self.week = week
        self.pages = pages
        self.edition = "daily" if week is None else "weekly"
        self.cache_size = max(cache_size, 1)
        self.matcher = TopicMatcher.from_config(cfg)
        # Each paper's topics, matched once per edition (the regexes are the costly part of a
        # segment's selection); a reader whose topics match none of the edition's is served
        # with nothing matched (the ledger's `nomatch`), not mailed.
        self.paper_topics = [self.matcher.topics_of(p) for p in digest.papers]
        self.present_topics = frozenset().union(*self.paper_topics)
        self._dkim = dkim_settings(cfg)  # the key is read and tried once, here
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], MessageFactory] = OrderedDict()
        # The factory served last, read without the lock (one tuple, replaced whole).
        self._last: tuple[tuple[str, int], MessageFactory] | None = None
        self._rendering: dict[tuple[str, int], threading.Event] = {}
        self._edition: InlinedEdition | None = None
        self._edition_lock = threading.Lock()
        self.renders = 0  # segments made (each from the pieces of the one inlined edition)
        self.render_seconds = 0.0  # their time, the edition's inlining not included
        self.edition_seconds = 0.0  # Jinja + premailer of the whole edition, once

    @classmethod
    def weekly(
        cls, week: Week, digests: Iterable[Digest], cfg: Config, secret: bytes, **kw: Any
    ) -> Segments:
        """The weekly edition of `week` from its digests (`editions.weekly_papers`: one entry
        per paper, ranked by votes), dated its Monday; each paper links to its day page."""
        days = [d for d in digests if d.date in week]
        chosen = weekly_papers(days)
        pages: dict[str, tuple[str, str]] = {}
        for digest in days:
            for paper, anchor in zip(digest.papers, paper_anchors(digest), strict=True):
                url = paper_url(cfg, digest.date, anchor)
                pages.setdefault(f"{digest.date}|{paper.key}", (url, digest.date.isoformat()))
        links = {wp.paper.key: pages[f"{wp.day}|{wp.paper.key}"] for wp in chosen}
        edition = Digest(
            date=week.monday,
            papers=tuple(wp.paper for wp in chosen),
            source=f"week {week}",
        )
        return cls(edition, cfg, secret, cadence="weekly", week=week, pages=links, **kw)

    def factory(self, topics: str, max_papers: int) -> MessageFactory:
        """The MessageFactory of one segment (`topics` as stored: `a;b`), rendered if needed."""
        key = (topics, max_papers)
        last = self._last  # readers come in segment order: mostly the segment just used
        if last is not None and last[0] == key:
            return last[1]
        while True:
            with self._lock:
                found = self._cache.get(key)
                if found is not None:
                    self._cache.move_to_end(key)
                    self._last = (key, found)
                    return found
                waiting = self._rendering.get(key)
                if waiting is None:
                    done = self._rendering[key] = threading.Event()
            if waiting is not None:
                waiting.wait()
                continue  # rendered (or failed: then this thread tries)
            try:
                made = self._render(topics, max_papers)
                with self._lock:
                    self._cache[key] = made
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
                    self._last = (key, made)
                return made
            finally:
                with self._lock:
                    del self._rendering[key]
                done.set()

    def papers(self, topics: str, max_papers: int) -> list[Paper]:
        """The papers of the edition a reader of this segment gets."""
        return select(
            self.digest.papers,
            self.matcher,
            split_topics(topics),
            max_papers,
            paper_topics=self.paper_topics,
        )

    def _render(self, topics: str, max_papers: int) -> MessageFactory:
        started = time.perf_counter()
        papers = self.papers(topics, max_papers)
        if not papers:
            # queue_pending gave such a reader a `nomatch` row: reaching here is a bug.
            raise RuntimeError(f"segment {topics!r}/{max_papers} has no paper to send")
        with self._edition_lock:  # premailer once per edition, by the first segment's thread
            if self._edition is None:
                self._edition = inline_edition(
                    self.digest, self.cfg, week=self.week, pages=self.pages
                )
                self.edition_seconds = time.perf_counter() - started
                started = time.perf_counter()
        choice = Choice(self.cadence, split_topics(topics), max_papers)
        selection = replace(self.digest, papers=tuple(papers))
        newsletter = render_newsletter(selection, self.cfg, choice, edition=self._edition)
        made = MessageFactory(newsletter, self.cfg, self.secret, dkim=self._dkim)
        with self._lock:
            self.renders += 1
            self.render_seconds += time.perf_counter() - started
        return made

    def build_entry(self, entry: LedgerEntry) -> bytes:
        """The message for one ledger row, in the segment it was queued with."""
        factory = self.factory(entry.topics, entry.max_papers)
        return factory.build(entry.email, entry.name, entry.subscriber_id, entry.id)
