"""What is wrong, in one place: `publisher status` (its exit code and `--json`) and the alerts
of `publisher run` ask the same function, `findings`, so they never disagree.

A Finding has a `kind` (a fixed name an operator can filter on), a `subject` (the day or the
thing it is about: the same finding seen on the next tick has the same key, and is alerted
once), a severity (`warning`: look at it today; `error`: publishing is stopped or readers are
being lost) and one line of text.

The rules read only the state database, the config and the clock:
- late-digest: `[schedule] expect_by` has passed in `site.timezone` and no digest dated today
  has been seen;
- send-failures: a recent digest's email ended with readers not reached (`partial`) or with
  failed rows;
- bounce-rate / complaint-rate: a recent send past 2% bounces or 0.3% complaints (the
  thresholds of bounces/rates.py, Gmail's and Yahoo's for bulk senders);
- pull-failing: `[alerts] pull_failures` failed pulls of `[digests] git` in a row;
- stuck-send: ledger rows whose claim expired more than a lease ago and nobody took over;
- bad-digest: the last build skipped a digest;
- run-silent: `publisher run` has ticked before but not for a long while.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass

from .bounces.rates import BOUNCE_WARN, COMPLAINT_WARN
from .config import Config
from .state import EmailStatus, Store

WARNING, ERROR = "warning", "error"
# Sends of digests dated within this many days are judged; older ones are history.
RECENT_DAYS = 7
# META keys written by `publisher run` (publisher/scheduler.py re-exports them).
META_PROBLEMS = "run:problems"
META_LAST_TICK = "run:last_tick"
META_PULL = "run:pull"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    subject: str
    severity: str
    message: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}"


def exit_code(found: list[Finding]) -> int:
    """0 healthy, 1 warnings, 2 errors: what `publisher status` exits with, for cron and
    monitoring."""
    if any(f.severity == ERROR for f in found):
        return 2
    return 1 if found else 0


def expect_by(cfg: Config) -> dt.time | None:
    if not cfg.schedule.expect_by:
        return None
    hour, minute = (int(x) for x in cfg.schedule.expect_by.split(":"))
    return dt.time(hour, minute)


def findings(cfg: Config, store: Store, *, now: dt.datetime | None = None) -> list[Finding]:
    """Everything that is wrong now, most serious first."""
    now = now or dt.datetime.now(dt.UTC)
    local = now.astimezone(cfg.tz)
    pubs = store.list_publications(RECENT_DAYS * 2)
    found: list[Finding] = []

    deadline = expect_by(cfg)
    if deadline is not None and local.time() >= deadline:
        today = local.date()
        if all(p.digest_date != today for p in pubs):
            found.append(
                Finding(
                    "late-digest",
                    today.isoformat(),
                    WARNING,
                    f"no digest dated {today} has arrived by {cfg.schedule.expect_by} "
                    f"{cfg.site.timezone} ([schedule] expect_by)",
                )
            )

    recent = [p for p in pubs if (local.date() - p.digest_date).days <= RECENT_DAYS]
    for pub in recent:
        day = pub.digest_date.isoformat()
        if pub.email_status == EmailStatus.PARTIAL or pub.failed:
            found.append(
                Finding(
                    "send-failures",
                    day,
                    WARNING,
                    f"the email of {day} ended with {pub.failed} failed of "
                    f"{pub.sent + pub.failed} ({pub.email_status}); see `publisher bounces "
                    "list` and the log",
                )
            )
    emailed = [p for p in recent if p.sent or p.failed]
    counts = store.bounce_counts([p.digest_date for p in emailed])
    for pub in emailed:
        day = pub.digest_date.isoformat()
        c = counts.get(pub.digest_date, {})
        bounced = c.get("hard", 0) + c.get("soft", 0) + c.get("blocked", 0)
        rate = bounced / max(pub.sent + pub.failed, 1)
        if rate > BOUNCE_WARN:
            found.append(
                Finding(
                    "bounce-rate",
                    day,
                    WARNING,
                    f"the email of {day} bounced for {rate:.1%} of readers (above "
                    f"{BOUNCE_WARN:.0%})",
                )
            )
        complaints = c.get("complaint", 0) / max(pub.sent, 1)
        if complaints > COMPLAINT_WARN:
            found.append(
                Finding(
                    "complaint-rate",
                    day,
                    WARNING,
                    f"the email of {day} drew complaints from {complaints:.2%} of readers "
                    f"(above {COMPLAINT_WARN:.1%}, Gmail's spam-rate limit)",
                )
            )

    pulled = json.loads(store.get_meta(META_PULL) or "null")
    if cfg.digests.git and pulled and pulled["failures"] >= cfg.alerts.pull_failures:
        found.append(
            Finding(
                "pull-failing",
                cfg.digests.git,
                ERROR,
                f"the last {pulled['failures']} pulls of {cfg.digests.git} failed (the last at "
                f"{pulled['at']}): {pulled['error']}",
            )
        )

    stuck, oldest = store.abandoned_claims(cfg.state.lease_seconds)
    if stuck:
        found.append(
            Finding(
                "stuck-send",
                oldest.isoformat() if oldest else "",
                ERROR,
                f"{stuck} messages are claimed by a sender whose lease ran out "
                f"{_ago(oldest, now)} and nobody took them over: is a `publisher run` or "
                "`send` still alive?",
            )
        )

    for problem in json.loads(store.get_meta(META_PROBLEMS) or "[]"):
        found.append(Finding("bad-digest", problem.split(":", 1)[0], WARNING, problem))

    last = store.get_meta(META_LAST_TICK)
    if last:
        silent = now - dt.datetime.fromisoformat(last)
        if silent.total_seconds() > max(10 * cfg.schedule.poll_seconds, 3600):
            found.append(
                Finding(
                    "run-silent",
                    last,
                    WARNING,
                    f"`publisher run` last ticked at {last}, {_ago(None, now, silent)}",
                )
            )
    found.sort(key=lambda f: f.severity != ERROR)
    return found


def _ago(moment: dt.datetime | None, now: dt.datetime, span: dt.timedelta | None = None) -> str:
    if span is None:
        if moment is None:
            return "a while ago"
        span = now.replace(tzinfo=None) - moment.replace(tzinfo=None)
    minutes = int(span.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min ago"
    return f"{minutes // 60} h ago"
