"""`publisher send --dry-run`: render a digest exactly as it would be sent, to files only.

Contacts no server and writes nothing to the state database: it reads the digest and the
subscriber CSV and writes `preview.html` and one `.eml` per sample recipient. When DKIM is
configured, the first message's signature is verified offline against the key's public half.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .digest import Digest, parse_file
from .dkim import verify_offline
from .editions import Week
from .errors import PublisherError
from .mailer import MessageFactory, Segments
from .newsletter import Newsletter
from .publish import newest_digest, week_digests
from .subscribers import read_rows
from .tokens import PREVIEW_SECRET, secret_from_env

SAMPLE_RECIPIENTS = 3


@dataclass(frozen=True, slots=True)
class PreviewReport:
    digest: Digest
    newsletter: Newsletter
    subject: str
    recipients: int  # valid rows in the subscriber CSV (statuses in the database not counted)
    html_path: Path
    eml_paths: tuple[Path, ...]
    html_bytes: int  # the HTML part as a reader gets it
    message_bytes: tuple[int, ...]
    preview_secret: bool  # True when the secret is unset and links carry the preview secret
    dkim: tuple[str, str] | None = None  # (selector, domain) when the messages are signed
    dkim_check: tuple[bool, str] | None = None  # the first message verified offline: (ok, what)
    html_wire_bytes: int = 0  # the HTML part as sent (its base64 body), what the budget counts
    # Each segment of the edition's readers in the state database: (what they get, readers,
    # papers); empty when the database cannot be read without changing it.
    segments: tuple[tuple[str, int, int], ...] = ()
    week: Week | None = None  # the weekly edition's week (None: a daily edition)


def segment_counts(cfg: Config, segments: Segments) -> tuple[tuple[str, int, int], ...]:
    """(what they get, readers, papers) for each segment of the edition's readers: read from
    the state database, never created or upgraded here (empty when it is not there yet)."""
    from .state import Store, split_topics
    from .topics import describe_choice

    url = cfg.database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or not Path(path).is_file():
            return ()
    try:
        with Store(url, upgrade=False) as store:
            groups = store.segment_sizes(segments.cadence)
    except Exception:  # noqa: BLE001 - an old or unreachable database: no per-segment lines
        return ()
    return tuple(
        (
            describe_choice(cfg, segments.cadence, split_topics(topics), cap),
            readers,
            len(segments.papers(topics, cap)),
        )
        for topics, cap, readers in groups
    )


def read_subscribers(cfg: Config, samples: int) -> tuple[list[tuple[str, str]], int]:
    """The first `samples` valid (email, name) rows of `[subscribers] file` and the number of
    valid rows, read by the same rules as `subscribers import` (one streaming pass)."""
    first: list[tuple[str, str]] = []
    count = 0
    for row in read_rows(cfg.subscribers.file):
        if count < samples:
            first.append(row)
        count += 1
    return first, count


def _file_name(addr: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]+", "_", addr)[:80] + ".eml"


def dry_run(
    cfg: Config,
    digest_path: Path | None = None,
    to: tuple[str, ...] | list[str] | None = None,
    out: Path = Path("preview"),
    week: Week | None = None,
) -> PreviewReport:
    """Render the newest (or given) digest, or the weekly edition of `week`, for readers of
    every paper, and write preview.html and sample .eml files."""
    secret = secret_from_env(cfg, required=False)
    if week is None:
        digest = parse_file(digest_path or newest_digest(cfg))
        segments = Segments(digest, cfg, secret)
    else:
        days = week_digests(cfg, week)
        if not days:
            raise PublisherError(
                f"{cfg.digests.folder}: no digest dated in week {week} "
                f"({week.monday} to {week.sunday})"
            )
        segments = Segments.weekly(week, days, cfg, secret)
        digest = segments.digest
    first, recipients = read_subscribers(cfg, SAMPLE_RECIPIENTS)
    samples = [(a, "") for a in to] if to else first
    if not samples:
        raise PublisherError(
            f"{cfg.subscribers.file}: no subscriber to preview for; pass --to ADDRESS"
        )
    factory: MessageFactory = segments.factory("", 0)  # the all-papers segment
    newsletter = factory.newsletter
    out.mkdir(parents=True, exist_ok=True)
    emls: list[Path] = []
    sizes: list[int] = []
    html_bytes = html_wire_bytes = 0
    dkim_check = None
    for addr, name in samples:
        raw = factory.build(addr, name)
        target = out / _file_name(addr)
        target.write_bytes(raw)
        emls.append(target)
        sizes.append(len(raw))
        if len(emls) == 1:
            # preview.html is the first sample's HTML part, read back from the message itself
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            part = msg.get_body(("html",))
            html = part.get_content()  # type: ignore[union-attr]
            html_wire_bytes = len(part.get_payload().encode())  # type: ignore[union-attr]
            html_bytes = len(html.encode())
            (out / "preview.html").write_text(html, encoding="utf-8")
            if factory.dkim_key is not None:
                dkim_check = verify_offline(raw, factory.dkim_key)
    return PreviewReport(
        digest=digest,
        newsletter=newsletter,
        subject=newsletter.subject,
        recipients=recipients,
        html_path=out / "preview.html",
        eml_paths=tuple(emls),
        html_bytes=html_bytes,
        message_bytes=tuple(sizes),
        preview_secret=secret == PREVIEW_SECRET,
        dkim=factory.dkim,
        dkim_check=dkim_check,
        html_wire_bytes=html_wire_bytes,
        segments=segment_counts(cfg, segments),
        week=week,
    )
