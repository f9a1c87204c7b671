"""The one function that turns a digest's inline Markdown into safe HTML.

markdown-it-py with raw HTML off: `<think>` or `<EOS>` in a summary is escaped and shows as text;
links are limited to http(s)/mailto by markdown-it's own validateLink; bare URLs are linkified.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

_SAFE_SCHEMES = re.compile(r"^(https?:|mailto:)", re.IGNORECASE)


@lru_cache(maxsize=1)
def _md() -> MarkdownIt:
    # Loaded on the first rendering, not with the digest model: `status`, `compact` and the web
    # app's pages that render nothing do not pay for markdown-it's import (~25 ms).
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False})
    md.enable("linkify")
    md.enable("strikethrough")
    md.disable("image")  # a summary's inline image would be a remote fetch in every email
    md.validateLink = lambda url: bool(_SAFE_SCHEMES.match(url.strip()))  # type: ignore[method-assign]
    return md


def render_inline(text: str) -> str:
    """Inline Markdown -> HTML fragment. Never lets raw HTML or unsafe link schemes through."""
    if not text:
        return ""
    try:
        return _md().renderInline(text)
    except Exception:  # noqa: BLE001 - a renderer bug must not stop a publication
        return html.escape(text)


def render_all(texts: Iterable[str]) -> dict[str, str]:
    """`render_inline` of each text, as {text: HTML}; read back from the cache folder
    (publisher/caches.py) when this very set of texts was rendered before, by this module and
    these versions of markdown-it-py and linkify-it-py. An edition renders its texts once per
    process, but the first `render_inline` loads markdown-it and compiles linkify's patterns:
    50 ms of a one-reader `publisher send`, which a send of an edition seen before (a re-run,
    `send --dry-run` then `send`, the day's other senders) no longer pays."""
    from . import caches  # not with the digest model: it loads Jinja

    unique = sorted(set(texts))
    key = hashlib.sha256(
        caches.versions("markdown-it-py", "linkify-it-py", "mdurl").encode()
        + hashlib.sha256(Path(__file__).read_bytes()).digest()
        + json.dumps(unique).encode()
    ).hexdigest()
    made = caches.cached(
        "markdown", ".json", key, lambda: json.dumps([render_inline(t) for t in unique])
    )
    return dict(zip(unique, json.loads(made), strict=True))


def plain_inline(text: str) -> str:
    """Inline Markdown -> readable plain text (for the text email): emphasis markers removed."""
    return re.sub(r"(\*{1,3}|_{2,3})(\S(?:.*?\S)?)\1", r"\2", text)
