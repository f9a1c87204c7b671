"""The one road a digest takes to its readers, shared by `publisher send` and `publisher run`.

`send_digest` imports the subscriber CSV, renders the newsletter once (Jinja + premailer),
streams the per-reader messages through `delivery.deliver`, and keeps the digest's publication
row (email status, counts, times) that `publisher status` and the scheduler read. The scheduler
(publisher/scheduler.py) adds only the decision of *when*; it never has a second way to publish.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path

from .config import Config
from .delivery import DeliveryReport, deliver
from .digest import Digest, digest_sha, find_digests, parse_file
from .editions import Week
from .errors import PublisherError
from .mailer import Segments
from .mailrules import ReturnPath
from .progress import Progress
from .state.health import check_integrity
from .state.protocols import PublishStore, SubscribersStore
from .state.schema import DAILY, WEEKLY, Edition, EmailStatus, SendStatus
from .subscribers import import_csv
from .tokens import secret_from_env


def newest_digest(cfg: Config) -> Path:
    """The inbox digest with the latest date (files that do not parse are skipped)."""
    best: tuple[object, Path] | None = None
    for path in find_digests(cfg.digests.folder, dated_only=cfg.digests.managed):
        try:
            day = parse_file(path).date
        except PublisherError:
            continue
        if best is None or day >= best[0]:  # type: ignore[operator]
            best = (day, path)
    if best is None:
        raise PublisherError(f"{cfg.digests.folder}: no digest found ('digests.inbox')")
    return best[1]


def sync_subscribers(cfg: Config, store: SubscribersStore, log: Callable[[str], None]) -> None:
    """Import the configured CSV before a send (skipped when unchanged since the last import)."""
    if not cfg.subscribers.file.is_file():
        log(f"note: no subscriber file at {cfg.subscribers.file}")
        return
    report = import_csv(cfg, store)
    for problem in report.invalid:
        log(f"warning: skipped invalid subscriber: {problem}")
    log(report.summary())


def send_digest(
    cfg: Config,
    store: PublishStore,
    digest: Digest,
    *,
    retry_failed: bool = False,
    include_final: bool = False,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    secret: bytes | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> DeliveryReport:
    """Email `digest` to every active subscriber who does not have it yet; resumable. One whose
    ledger was compacted (`[state] keep_ledger_days`) is refused: EditionCompacted."""
    secret = secret if secret is not None else secret_from_env(cfg)
    check_integrity(store.engine)  # nothing is mailed from a database known to be damaged
    sync_subscribers(cfg, store, log)
    # Rendered once per segment of readers (topics, cap), lazily, as the send meets them.
    segments = Segments(digest, cfg, secret)
    # The same source and hash the scheduler records, so it does not take this for an edit.
    source = str(Path(digest.source).resolve())
    return _send_edition(
        cfg,
        store,
        digest.date,
        segments,
        edition=DAILY,
        source=source,
        sha=lambda: digest_sha(digest),
        retry_failed=retry_failed,
        include_final=include_final,
        progress=progress,
        stop=stop,
        secret=secret,
        log=log,
    )


def _send_edition(
    cfg: Config,
    store: PublishStore,
    day: dt.date,
    segments: Segments,
    *,
    edition: Edition,
    source: str,
    sha: Callable[[], str],
    retry_failed: bool,
    include_final: bool,
    progress: Progress | None,
    stop: threading.Event | None,
    secret: bytes,
    log: Callable[[str], None],
) -> DeliveryReport:
    """One edition's send, daily or weekly: its publication row marks the send (`sending`, then
    `sent` or `partial` with the ledger's counts) around `deliver`."""
    if store.get_publication(day, edition=edition) is None:
        store.record_publication(day, source, sha(), edition=edition)
    store.update_publication(
        day, edition=edition, email_status=EmailStatus.SENDING, email_started_at=_utcnow()
    )
    report = deliver(
        cfg,
        store,
        day,
        None,
        segments=segments,
        retry_failed=retry_failed,
        include_final=include_final,
        progress=progress,
        stop=stop,
        return_path=ReturnPath.of(cfg.email.return_path, secret),
        edition=edition,
    )
    if segments.renders:
        readers = "weekly readers" if edition == WEEKLY else "readers"
        log(
            f"rendered {segments.renders} segment(s) of {readers} in "
            f"{segments.render_seconds:.2f} s (after inlining the edition once, "
            f"{segments.edition_seconds:.2f} s)"
        )
    counts = store.ledger_counts(day, edition=edition)
    store.update_publication(
        day,
        edition=edition,
        email_status=EmailStatus.SENT if report.unsent_active == 0 else EmailStatus.PARTIAL,
        sent=counts[SendStatus.SENT],
        failed=counts[SendStatus.FAILED],
        email_finished_at=_utcnow(),
    )
    return report


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


_PATH_DATE = re.compile(r"(\d{4})[/-](\d{2})[/-](\d{2})(?:\.md)?$")
_SLACK = dt.timedelta(days=1)


def _path_date(path: Path) -> dt.date | None:
    """The date a digest's path names (`2024/05/27.md`, `2024-05-27.md`), if any."""
    m = _PATH_DATE.search(path.as_posix())
    if not m:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def week_digests(cfg: Config, week: Week) -> list[Digest]:
    """The inbox digests dated in `week` (files that do not parse are skipped), by date; where
    two files hold one date, the later path wins (as for the site)."""
    by_date: dict[dt.date, Digest] = {}
    for path in sorted(find_digests(cfg.digests.folder, dated_only=cfg.digests.managed)):
        named = _path_date(path)
        if named is not None and not week.monday - _SLACK <= named <= week.sunday + _SLACK:
            continue  # named for a day far from the week: not parsed (the scheduler asks often)
        try:
            digest = parse_file(path)
        except PublisherError:
            continue
        if digest.date in week:
            by_date[digest.date] = digest
    return [by_date[d] for d in sorted(by_date)]


def last_complete_week(cfg: Config, now: dt.datetime | None = None) -> Week:
    """The newest ISO week that has ended, in `site.timezone`."""
    now = now or dt.datetime.now(dt.UTC)
    return Week.last_complete(now.astimezone(cfg.tz).date())


def send_weekly(
    cfg: Config,
    store: PublishStore,
    week: Week,
    *,
    digests: list[Digest] | None = None,
    retry_failed: bool = False,
    include_final: bool = False,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    secret: bytes | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> DeliveryReport:
    """Email the weekly edition of `week` to every active weekly reader who does not have it
    yet; resumable, once per reader, through the same ledger as the daily send (its rows and
    its publication row are the `weekly` edition's, dated the week's Monday). One whose ledger
    was compacted is refused, as a daily one is."""
    secret = secret if secret is not None else secret_from_env(cfg)
    digests = week_digests(cfg, week) if digests is None else digests
    if not digests:
        raise PublisherError(
            f"{cfg.digests.folder}: no digest dated in week {week} "
            f"({week.monday} to {week.sunday}); nothing to send"
        )
    check_integrity(store.engine)
    sync_subscribers(cfg, store, log)
    segments = Segments.weekly(week, digests, cfg, secret)
    return _send_edition(
        cfg,
        store,
        week.monday,
        segments,
        edition=WEEKLY,
        source=f"week {week}",
        sha=lambda: hashlib.sha256("".join(digest_sha(d) for d in digests).encode()).hexdigest(),
        retry_failed=retry_failed,
        include_final=include_final,
        progress=progress,
        stop=stop,
        secret=secret,
        log=log,
    )
