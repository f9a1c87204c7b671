"""`publisher report`: one self-contained `report.html` of charts for the operator.

The numbers come from publisher/state/reporting.py; the charts are drawn by matplotlib as SVG
and put inline, so the page needs no script, no font and no file beside it: it opens from disk,
works offline, and carries its own Content-Security-Policy (`default-src 'none'` and the hash
of its one stylesheet), which it passes. To keep that policy, the SVG's `style="..."`
attributes (which a CSP governs) become presentation attributes (which it does not). Text,
axes and grid are drawn in `currentColor`, so the page's light or dark colour scheme colours
them; the series use mid-tone colours that read on both.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from .config import Config
from .errors import PublisherError
from .i18n import strings
from .state import Status, Store
from .state import reporting as q
from .templating import jinja_env

INK = "#010203"  # drawn as currentColor
SERIES = {
    "sent": "#3b82c4",
    "failed": "#d9822b",
    "bounced": "#c23b3b",
    "complained": "#8e44ad",
    "unsubscribed": "#7f8c8d",
    "csv": "#3b82c4",
    "web": "#2e9e6b",
    "cli": "#d9822b",
    # statuses over time, and the audit trail's daily actions
    "active": "#2e9e6b",
    "pending": "#d9822b",
    "removed": "#b8a13a",
    "signup": "#d9822b",
    "confirm": "#2e9e6b",
    "unsubscribe": "#7f8c8d",
}
BOUNCE_LINE, COMPLAINT_LINE = 0.02, 0.003
SVG_NS = "http://www.w3.org/2000/svg"


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    svg: Markup


def _pyplot():  # noqa: ANN202 - matplotlib is imported only by this command
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: the browser's fonts, Korean included
            "svg.hashsalt": "publisher",  # stable ids: the same data gives the same bytes
            "font.family": "sans-serif",
            "font.size": 10,
            "text.color": INK,
            "axes.labelcolor": INK,
            "axes.edgecolor": INK,
            "xtick.color": INK,
            "ytick.color": INK,
            "grid.color": INK,
            "grid.alpha": 0.15,
            "axes.grid": True,
            "axes.axisbelow": True,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "figure.facecolor": "none",
            "axes.facecolor": "none",
            "savefig.facecolor": "none",
            "legend.frameon": False,
        }
    )
    return plt


def _presentation(svg: str) -> str:
    """matplotlib's SVG with `style` attributes turned into presentation attributes, INK into
    currentColor, and no XML prolog, DOCTYPE or fixed size (the page sizes it)."""
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")
    root = ET.fromstring(svg)
    for el in root.iter():
        style = el.attrib.pop("style", None)
        if style:
            for decl in style.split(";"):
                name, _, value = decl.partition(":")
                if name.strip() and value.strip():
                    el.set(name.strip(), value.strip())
        for name, value in list(el.attrib.items()):
            if INK in value:
                el.set(name, value.replace(INK, "currentColor"))
    # matplotlib's own stylesheet (a default stroke-linejoin, which a CSP would block) and its
    # RDF metadata block (naming matplotlib): nothing the chart needs.
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in (f"{{{SVG_NS}}}style", f"{{{SVG_NS}}}metadata"):
                parent.remove(child)
    root.attrib.pop("width", None)
    root.attrib.pop("height", None)
    root.set("role", "img")
    return ET.tostring(root, encoding="unicode")


def _svg(fig) -> Markup:  # noqa: ANN001
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    fig.clf()
    return Markup(_presentation(buf.getvalue()))


def _dates(days: list[dt.date]) -> list[str]:
    return [d.strftime("%m-%d") for d in days]


def history_days(
    cfg: Config, store: Store, *, days: int, today: dt.date
) -> tuple[list[dt.date], dt.date | None]:
    """The days the audit trail's history covers in the report, and the day it starts when the
    database was upgraded from a release without one (else None: the whole window)."""
    since = today - dt.timedelta(days=days)
    started, upgraded = q.history_start(store.engine)
    first = since
    note = None
    if started is not None and upgraded:
        day = started.replace(tzinfo=dt.UTC).astimezone(cfg.tz).date()
        note = day
        first = max(since, day)
    return [first + dt.timedelta(days=i) for i in range((today - first).days + 1)], note


def charts(cfg: Config, store: Store, *, days: int, today: dt.date) -> list[Chart]:
    """The report's charts, in the site's language."""
    t = strings(cfg.site.language)
    plt = _pyplot()
    since = today - dt.timedelta(days=days)
    out: list[Chart] = []

    def whole():  # noqa: ANN202 - a locator per axis: counts of readers, no 0.25 ticks
        return plt.MaxNLocator(integer=True)

    def figure(height: float = 2.6):  # noqa: ANN202
        return plt.figure(figsize=(7.2, height))

    # Subscribers now, by status.
    counts = q.status_counts(store.engine)
    fig = figure(2.0)
    ax = fig.add_subplot()
    labels = [s for s in Status if s in counts]
    ax.barh([t[f"report_status_{s}"] for s in labels], [counts[s] for s in labels],
            color=SERIES["sent"])  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel(t["report_readers"])
    ax.xaxis.set_major_locator(whole())
    out.append(Chart("status", t["report_status_title"], _svg(fig)))

    # Readers by status over time, from the audit trail (from its start, if it began later).
    history, _ = history_days(cfg, store, days=days, today=today)
    by_day = q.status_history(store.engine, history, cfg.tz)
    fig = figure()
    ax = fig.add_subplot()
    for status in Status:
        values = [by_day[d][status] for d in history]
        if any(values):
            ax.plot(_dates(history), values, "-", color=SERIES[status], linewidth=2,
                    label=t[f"report_status_{status}"])  # fmt: skip
    ax.set_ylabel(t["report_readers"])
    ax.yaxis.set_major_locator(whole())
    ax.xaxis.set_major_locator(plt.MaxNLocator(10))
    ax.set_ylim(bottom=0)
    if any(any(c.values()) for c in by_day.values()):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=5)
    out.append(Chart("history", t["report_history_title"], _svg(fig)))

    # Who joined, per day, by where they came from.
    joined = q.joined_per_day(store.engine, since, cfg.tz)
    day_list = [since + dt.timedelta(days=i) for i in range(days + 1)]
    fig = figure()
    ax = fig.add_subplot()
    bottom = [0] * len(day_list)
    for source in ("csv", "web", "cli"):
        values = [joined.get((d, source), 0) for d in day_list]
        if any(values):
            ax.bar(_dates(day_list), values, bottom=bottom, color=SERIES[source],
                   label=t[f"report_source_{source}"])  # fmt: skip
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel(t["report_readers"])
    ax.yaxis.set_major_locator(whole())
    ax.xaxis.set_major_locator(plt.MaxNLocator(10))
    if any(bottom):
        ax.legend(loc="upper left")
    out.append(Chart("joined", t["report_joined_title"], _svg(fig)))

    # Signups, confirmations and unsubscribes per day, from the audit trail.
    acts = q.actions_per_day(store.engine, history[0], cfg.tz)
    fig = figure()
    ax = fig.add_subplot()
    bottom = [0] * len(history)
    for action in q.DAILY_ACTIONS:
        values = [acts.get((d, action), 0) for d in history]
        ax.bar(_dates(history), values, bottom=bottom, color=SERIES[action],
               label=t[f"report_action_{action}"])  # fmt: skip
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.xaxis.set_major_locator(plt.MaxNLocator(10))
    ax.set_ylabel(t["report_readers"])
    ax.yaxis.set_major_locator(whole())
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3)
    out.append(Chart("actions", t["report_actions_title"], _svg(fig)))

    rows = q.sends(store.engine, since, cfg.tz)
    names = _dates([r.date for r in rows])

    # Per digest: delivered and failed (bars), and what readers did after (markers).
    fig = figure()
    ax = fig.add_subplot()
    ax.bar(names, [r.sent for r in rows], color=SERIES["sent"], label=t["report_sent"])
    ax.bar(names, [r.failed for r in rows], bottom=[r.sent for r in rows],
           color=SERIES["failed"], label=t["report_failed"])  # fmt: skip
    for key in ("bounced", "complained", "unsubscribed"):
        ax.plot(names, [getattr(r, key) for r in rows], "o-", color=SERIES[key],
                label=t[f"report_{key}"])  # fmt: skip
    ax.set_ylabel(t["report_messages"])
    ax.yaxis.set_major_locator(whole())
    if rows:  # below the chart, where it hides no bar
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=5)
    out.append(Chart("sends", t["report_sends_title"], _svg(fig)))

    # The rates, with the lines that mailbox providers hold bulk senders to.
    fig = figure(3.4)
    top, bottom_ax = fig.subplots(2, 1, sharex=True)
    top.plot(names, [r.bounce_rate * 100 for r in rows], "o-", color=SERIES["bounced"])
    top.axhline(BOUNCE_LINE * 100, color=SERIES["bounced"], linestyle="--", linewidth=1)
    top.set_ylabel(t["report_bounce_rate"])
    bottom_ax.plot(names, [r.complaint_rate * 100 for r in rows], "o-",
                   color=SERIES["complained"])  # fmt: skip
    bottom_ax.axhline(COMPLAINT_LINE * 100, color=SERIES["complained"], linestyle="--",
                      linewidth=1)  # fmt: skip
    bottom_ax.set_ylabel(t["report_complaint_rate"])
    out.append(Chart("rates", t["report_rates_title"], _svg(fig)))

    # How long each send took, and how fast it went.
    fig = figure()
    ax = fig.add_subplot()
    ax.bar(names, [r.seconds or 0 for r in rows], color=SERIES["unsubscribed"])
    ax.set_ylabel(t["report_seconds"])
    speed = ax.twinx()
    speed.plot(names, [r.per_second or 0 for r in rows], "o-", color=SERIES["sent"])
    speed.set_ylabel(t["report_per_second"])
    speed.grid(False)
    out.append(Chart("speed", t["report_speed_title"], _svg(fig)))

    # What the inbound reports were.
    kinds = q.event_kinds(store.engine, since, cfg.tz)
    fig = figure(2.0)
    ax = fig.add_subplot()
    order = sorted(kinds, key=lambda k: -kinds[k])
    ax.barh(order, [kinds[k] for k in order], color=SERIES["bounced"])
    ax.invert_yaxis()
    ax.set_xlabel(t["report_events"])
    ax.xaxis.set_major_locator(whole())
    out.append(Chart("causes", t["report_causes_title"], _svg(fig)))

    # What active readers chose: cadence, and topics (paused readers get nothing: left out).
    cadences = q.readers_by_cadence(store.engine)
    topics = q.readers_by_topic(store.engine)
    labels = {c.name: c.label for c in cfg.topics}
    order = sorted(topics, key=lambda k: (k != "", -topics[k], k))
    fig = figure(1.6 + 0.3 * (3 + len(order)))
    left, right = fig.subplots(2, 1, height_ratios=[3, max(len(order), 1)])
    names = ("daily", "weekly", "paused")
    left.barh([t[f"report_cadence_{c}"] for c in names], [cadences.get(c, 0) for c in names],
              color=SERIES["sent"])  # fmt: skip
    left.invert_yaxis()
    left.xaxis.set_major_locator(whole())
    right.barh([labels.get(k, k) if k else t["report_all_topics"] for k in order],
               [topics[k] for k in order], color=SERIES["web"])  # fmt: skip
    right.invert_yaxis()
    right.xaxis.set_major_locator(whole())
    right.set_xlabel(t["report_readers"])
    out.append(Chart("readers", t["report_readers_title"], _svg(fig)))
    plt.close("all")
    return out


STYLE = """
:root { color-scheme: light dark; --bg: #f4f5f7; --card: #fff; --text: #1f2328; --muted: #59636e; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --card: #161b22; --text: #e6edf3; --muted: #9198a1; }
}
body { margin: 0; background: var(--bg); color: var(--text);
  font-family: -apple-system, "Segoe UI", Roboto, "Noto Sans KR", "Apple SD Gothic Neo",
    sans-serif; }
main { max-width: 800px; margin: 0 auto; padding: 16px; }
figure { margin: 16px 0; padding: 12px 16px; background: var(--card); border-radius: 8px; }
figcaption { font-weight: 700; margin-bottom: 8px; }
figure svg { display: block; width: 100%; height: auto; color: var(--text); }
.muted { color: var(--muted); font-size: 14px; }
""".strip()


def render(cfg: Config, store: Store, *, days: int, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    today = now.astimezone(cfg.tz).date()
    t = strings(cfg.site.language)
    style_hash = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'sha256-{style_hash}'"
    return (
        jinja_env(cfg)
        .get_template("report/report.html")
        .render(
            t=t,
            site=cfg.site,
            lang=cfg.site.language,
            csp=csp,
            style=Markup(STYLE),
            charts=charts(cfg, store, days=days, today=today),
            history_since=history_days(cfg, store, days=days, today=today)[1],
            generated=now.astimezone(cfg.tz).strftime("%Y-%m-%d %H:%M %Z"),
            days=days,
        )
    )


def write_report(cfg: Config, store: Store, out: Path, *, days: int) -> Path:
    """Write out/report.html; never inside the public archive (`[feed] output`)."""
    out = out.resolve()
    public = cfg.feed.output.resolve()
    if out == public or public in out.parents:
        raise PublisherError(
            f"{out}: the report is private and must not be written into the public archive "
            f"([feed] output = {public}); choose another --out"
        )
    if days < 1:
        raise PublisherError("--days must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    tmp = path.with_name(".report.html.tmp")
    tmp.write_text(render(cfg, store, days=days), encoding="utf-8")
    tmp.replace(path)
    return path
