"""Papers -> topics (`[topics.NAME]` in config.toml), and a reader's choice of papers. Pure.

A paper belongs to every topic one of whose `match` regexes is found (case-insensitively) in its
title or summary text (every bullet, nested ones included); a paper no pattern finds belongs to
no topic, and still goes to readers who want all topics. The regexes are compiled once, when a
`TopicMatcher` is made.

A reader's selection from an edition (`select`): the papers in at least one of their topics
(all papers when they chose none), then, with a cap, the `max_papers` with the most votes (a
paper without votes counts as 0; ties go to the digest's order),
shown in the edition's own order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .config import Config, TopicConfig
from .digest import Bullet, Paper
from .i18n import strings

CADENCES = ("daily", "weekly", "paused")


@dataclass(frozen=True, slots=True)
class Choice:
    """What a reader gets: `cadence`, `topics` (empty: all papers), `max_papers` (0: all)."""

    cadence: str = "daily"
    topics: frozenset[str] = frozenset()
    max_papers: int = 0


def _bullet_text(bullets: Iterable[Bullet]) -> Iterable[str]:
    for b in bullets:
        if b.label:
            yield b.label
        yield b.text
        yield from _bullet_text(b.children)


def paper_text(paper: Paper) -> str:
    """What the patterns search: the title and every summary bullet, one per line."""
    return "\n".join((paper.title, *_bullet_text(paper.summary)))


class TopicMatcher:
    """The configured topics, compiled once; `topics_of(paper)` is the set of their names."""

    def __init__(self, topics: Sequence[TopicConfig]) -> None:
        self.topics = tuple(topics)
        self._compiled = tuple(
            (t.name, tuple(re.compile(p, re.IGNORECASE) for p in t.match)) for t in self.topics
        )

    @classmethod
    def from_config(cls, cfg: Config) -> TopicMatcher:
        return cls(cfg.topics)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.topics)

    def label(self, name: str) -> str:
        for t in self.topics:
            if t.name == name:
                return t.label
        return name

    def topics_of(self, paper: Paper) -> frozenset[str]:
        text = paper_text(paper)
        return frozenset(
            name for name, patterns in self._compiled if any(p.search(text) for p in patterns)
        )


def select(
    papers: Sequence[Paper],
    matcher: TopicMatcher,
    topics: Iterable[str] = (),
    max_papers: int = 0,
    *,
    paper_topics: Sequence[frozenset[str]] | None = None,
) -> list[Paper]:
    """The papers a reader with this choice gets from an edition (in the edition's order):
    those in any of `topics` (all when empty), the top `max_papers` by votes when capped.
    `paper_topics`: each paper's topics, when already matched (once per edition)."""
    wanted = frozenset(topics)
    if paper_topics is None:
        paper_topics = [matcher.topics_of(p) for p in papers] if wanted else []
    chosen = [(i, p) for i, p in enumerate(papers) if not wanted or wanted & paper_topics[i]]
    if max_papers > 0 and len(chosen) > max_papers:
        ranked = sorted(chosen, key=lambda ip: (-(ip[1].votes or 0), ip[0]))[:max_papers]
        chosen = sorted(ranked, key=lambda ip: ip[0])
    return [p for _, p in chosen]


def parse_topics(value: str, known: Sequence[str], sep: str = ",") -> frozenset[str]:
    """Topic names from a list (`a,b`; `a;b` in the CSV); ValueError names an unknown one."""
    names = [n.strip() for n in value.split(sep) if n.strip()]
    for n in names:
        if n not in known:
            shown = ", ".join(known) or "none are configured"
            raise ValueError(f"unknown topic {n!r} (known: {shown})")
    return frozenset(names)


def topics_cell(topics: Iterable[str]) -> str:
    """How a set of topics is stored and exported: sorted names joined by `;` (empty: all)."""
    return ";".join(sorted(topics))


def describe_choice(cfg: Config, cadence: str, topics: Iterable[str], max_papers: int) -> str:
    """One line saying what a reader gets, in the site's language, topics in config order:
    "매일 · 효율화·양자화, 에이전트 · 상위 10편"."""
    t = strings(cfg.site.language)
    chosen = set(topics)
    labels = [tc.label for tc in cfg.topics if tc.name in chosen]
    labels += sorted(chosen - {tc.name for tc in cfg.topics})  # a topic since removed
    return " · ".join(
        (
            t.get(f"cadence_{cadence}", cadence),
            ", ".join(labels) if labels else t["all_topics"],
            t["top_n"].format(n=max_papers) if max_papers > 0 else t["all_papers"],
        )
    )
