"""Helpers shared by the site and feed tests: a config rooted in tmp_path, synthetic digests."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from publisher.config import Config, default_config


def site_config(tmp_path: Path, inbox: Path | None = None, **feed: object) -> Config:
    cfg = default_config(tmp_path)
    inbox = inbox or tmp_path / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(
        cfg,
        digests=dataclasses.replace(cfg.digests, inbox=inbox),
        feed=dataclasses.replace(cfg.feed, output=tmp_path / "public", **feed),
    )


def digest_text(date: dt.date, n: int = 2, extra: str = "") -> str:
    """A synthetic digest (the corpus is never modified) with the awkward bits of the format."""
    parts = [f"## Daily Papers ({date.isoformat()})", ""]
    for i in range(1, n + 1):
        arxiv = f"{date:%y%m}.{date.day:02d}{i:03d}"
        parts += [
            f'### [Paper {i} of {date}: <think> & "quotes" $x^2$](https://arxiv.org/abs/{arxiv})',
            "",
            f"![](https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/{arxiv}.png)",
            "",
            f"Vote: {i * 3}",
            "",
            "Authors: Ada Lovelace, Alan Turing, +",
            "",
            f"- **What's New**: the model emits <think> tokens{extra}; see https://example.org/{i}",
            "- **Method**: a [relative link](/etc/passwd) and a [good one](https://example.com/m)",
            "  - (1) nested detail with <EOS>",
            "",
        ]
    return "\n".join(parts)


def write_digest(inbox: Path, date: dt.date, text: str | None = None) -> Path:
    path = inbox / f"{date:%Y}" / f"{date:%m}" / f"{date:%d}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else digest_text(date), encoding="utf-8")
    return path


DAYS = [dt.date(2024, 5, 13), dt.date(2024, 5, 14), dt.date(2024, 5, 15)]
