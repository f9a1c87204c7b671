"""Bounce and complaint rates per digest, for `publisher status`.

Per digest emailed: the addresses that bounced (hard, soft, or refused for a reason about us:
`blocked`), whether the refusal came during the send or by mail later, over the messages
attempted (sent + failed); and the complaints over the messages sent. Past 2% bounces or
0.3% complaints (Gmail's and Yahoo's bulk-sender thresholds) the line warns.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..state import Publication, Store

BOUNCE_WARN = 0.02
COMPLAINT_WARN = 0.003


def rate_lines(store: Store, pubs: Sequence[Publication]) -> list[str]:
    emailed = [p for p in pubs if p.sent or p.failed]
    if not emailed:
        return []
    counts = store.bounce_counts([p.digest_date for p in emailed])
    out = ["", "bounces and complaints:"]
    for pub in emailed:
        c = counts.get(pub.digest_date, {})
        attempted = max(pub.sent + pub.failed, 1)
        hard, soft, blocked = c.get("hard", 0), c.get("soft", 0), c.get("blocked", 0)
        bounced = hard + soft + blocked
        complaints = c.get("complaint", 0)
        bounce_rate = bounced / attempted
        complaint_rate = complaints / max(pub.sent, 1)
        out.append(
            f"  {pub.digest_date}  bounces {bounced}/{attempted} ({bounce_rate:.1%}: hard {hard}, "
            f"soft {soft}, blocked {blocked})  complaints {complaints} ({complaint_rate:.2%})"
        )
        if bounce_rate > BOUNCE_WARN:
            why = (
                " (mostly refusals about us: block lists, policy)" if blocked * 2 > bounced else ""
            )
            out.append(
                f"  warning: {pub.digest_date} bounce rate {bounce_rate:.1%} is above "
                f"{BOUNCE_WARN:.0%}{why}"
            )
        if complaint_rate > COMPLAINT_WARN:
            out.append(
                f"  warning: {pub.digest_date} complaint rate {complaint_rate:.2%} is above "
                f"{COMPLAINT_WARN:.1%} (Gmail's spam-rate limit)"
            )
    return out
