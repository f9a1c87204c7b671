"""What the web forms send: the size-checked body, text fields, and a reader's choice (cadence,
topics, cap); and the JSON of "download my data"."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from .. import state as st
from ..config import Config

# The cadences a reader may pick on the web (publisher send and publisher send --weekly).
WEB_CADENCES = ("daily", "weekly", "paused")
# Forms and one-click bodies are a few dozen bytes; anything bigger is not one of ours.
MAX_BODY = 8 * 1024


def json_default(value: object) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def choice_of(form: Any, cfg: Config, *, with_max: bool) -> st.ChoiceUpdate:
    """A reader choice from a form: `cadence`, `topic` (ticked boxes, none: every paper) and,
    `with_max`, `max_papers`; ValueError for an unknown cadence or topic or a bad number."""
    cadence = field(form, "cadence") or "daily"
    if cadence not in WEB_CADENCES:
        raise ValueError(f"unknown cadence {cadence!r}")
    names = [v for v in form.getlist("topic") if isinstance(v, str)]
    known = set(cfg.topic_names)
    if any(n not in known for n in names):
        raise ValueError("unknown topic")
    max_papers = None
    if with_max:
        raw = field(form, "max_papers").strip() or "0"
        if not raw.isdigit() or int(raw) > 1000:
            raise ValueError(f"bad max_papers {raw!r}")
        max_papers = int(raw)
    return st.ChoiceUpdate(cadence=cadence, topics=frozenset(names), max_papers=max_papers)


def field(form: Any, name: str) -> str:
    value = form.get(name)
    return "" if value is None or isinstance(value, UploadFile) else str(value)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None if it is larger than `limit` bytes (read no further)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    # Starlette's form parser reads from here instead of the (consumed) stream.
    request._body = body
    return body
