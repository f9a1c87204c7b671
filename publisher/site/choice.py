"""What the pages and feeds per reader choice share (topic_pages.py, weekly.py): rendering a
group of files only when its inputs changed, the days whose Cards are known, lists of papers
linked to their cards. Everything there is built from Cards (collect.py), which the manifest
keeps: adding a day parses that day only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..errors import DigestError
from ..i18n import strings
from ..templating import jinja_env
from ..urls import (
    WEEKLY_PATH,
    day_path,
)
from .collect import Card, Day
from .pages import feed_links
from .writer import SiteWriter, compressed

if TYPE_CHECKING:
    from .build import Context

TOPIC_DAYS = 30  # a topic's page shows its newest 30 days with a paper on it
WEEKLY_FEED_WEEKS = 8  # the weekly feed's entries: about two months, well under 512 KB


def weekly_feed_links(cfg: Config) -> dict[str, str]:
    """The weekly feeds, for the pages that link them (autodiscovery on the index too)."""
    title = strings(cfg.site.language)["weekly_title"]
    return feed_links(cfg, f"{cfg.site.title} · {title}", WEEKLY_PATH)


def render(cfg: Config, template: str, **values: Any) -> bytes:
    return jinja_env(cfg).get_template(template).render(**values).encode("utf-8")


class Outputs:
    """Renders a group of files only when its inputs changed since the last build (or a file
    is missing); the inputs are kept in the manifest under "choices"."""

    def __init__(self, old: dict[str, Any], writer: SiteWriter) -> None:
        self.old = old
        self.new: dict[str, Any] = {}
        self.writer = writer

    def remove_gone(self, old: dict[str, Any]) -> None:
        """Delete the files of groups the previous build made and this one did not (a topic
        taken out of the config, a week whose days left the inbox), with their copies."""
        for key in sorted(set(old) - set(self.new)):
            for rel in old[key]["files"]:
                path = self.writer.out / rel
                if path.exists():
                    for p in (path, *compressed(path)):
                        p.unlink(missing_ok=True)
                    self.writer.removed.append(path)
                    folder = path.parent
                    while folder != self.writer.out and not any(folder.iterdir()):
                        folder.rmdir()
                        folder = folder.parent

    def emit(
        self, key: str, inputs: Any, render: Callable[[], dict[Path, bytes]], files: list[Path]
    ) -> None:
        entry = {
            "inputs": inputs,
            "files": [p.relative_to(self.writer.out).as_posix() for p in files],
        }
        self.new[key] = entry
        if self.old.get(key) == entry and all(self.writer.is_current(p) for p in files):
            return
        for path, data in render().items():
            self.writer.write(path, data)


def readable(ctx: Context) -> list[tuple[int, Day, list[Card]]]:
    """Every day whose cards are known (newest first); a digest that cannot be read is skipped
    here as on its own page (and reported once)."""
    out = []
    for i, day in enumerate(ctx.days):
        try:
            out.append((i, day, ctx.cards_of(i)))
        except DigestError:
            continue
    return out


def links(cfg: Config, root: str, date: dt.date, cards: list[Card]) -> list[dict[str, Any]]:
    href = root + day_path(date)
    return [
        {"title": c.title, "href": f"{href}#{c.anchor}", "votes": c.votes, "date": None}
        for c in cards
    ]


def count_line(cfg: Config, cards: list[Card]) -> str:
    t = strings(cfg.site.language)
    more = " …" if len(cards) > 3 else ""
    return t["papers"].format(n=len(cards)) + ": " + " · ".join(c.title for c in cards[:3]) + more
