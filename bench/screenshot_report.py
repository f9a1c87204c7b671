"""Make docs/report.png, the README's picture of `publisher report` (not a CI test).

    python bench/screenshot_report.py [--out docs/report.png]

Runs four weeks of a small list through the real store on a clock moved by hand (a CSV import,
web signups and confirmations, unsubscribes, preference changes, daily sends with a few
bounces and complaints), writes the report in English and screenshots it in Debian's headless
Chromium (tests/browser.py), in the light scheme.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from publisher.config import load_config  # noqa: E402
from publisher.report import write_report  # noqa: E402
from publisher.state import BouncePolicy, ChoiceUpdate, InboundEvent, Store, lifecycle  # noqa: E402
from publisher.state import schema as state_schema  # noqa: E402
from tests.browser import chromium  # noqa: E402

DAYS = 28


def simulate(store: Store, start: dt.datetime) -> None:
    rng = random.Random(7)
    clock = {"now": start}

    def now() -> dt.datetime:
        return clock["now"]

    # Every write through the lifecycle and the publications reads this clock.
    lifecycle._now = now  # type: ignore[assignment]
    state_schema._now = now  # type: ignore[assignment]
    import publisher.state.bounces as bounces
    import publisher.state.publications as pubs
    import publisher.state.subscribers as subs

    for module in (bounces, pubs, subs):
        module._now = now  # type: ignore[attr-defined]
    store.upsert_csv_batch(1, [(f"reader{i}@example.org", f"Reader {i}") for i in range(120)])
    n = 0
    for day in range(DAYS):
        clock["now"] = start + dt.timedelta(days=day, hours=9)
        for _ in range(rng.randint(1, 6)):
            n += 1
            email = f"web{n}@example.net"
            store.add_subscriber(email, status="pending", source="web", action="signup")
            if rng.random() < 0.8:
                store.resubscribe(email, "", "web", "confirm")
        if rng.random() < 0.6:
            store.unsubscribe(f"reader{rng.randint(0, 119)}@example.org")
        if rng.random() < 0.4:
            choice = ChoiceUpdate(cadence=rng.choice(["weekly", "paused"]))
            store.set_choice(f"reader{rng.randint(0, 119)}@example.org", choice, "web")
        if rng.random() < 0.3:
            store.set_choice(
                f"reader{rng.randint(0, 119)}@example.org",
                ChoiceUpdate(topics=frozenset(rng.sample(["agents", "rl", "vision"], 1))),
                "web",
            )
        digest = (start + dt.timedelta(days=day)).date()
        clock["now"] = start + dt.timedelta(days=day, hours=7)
        store.record_publication(digest, f"digests/{digest}.md", "x")
        store.update_publication(digest, email_status="sending", email_started_at=clock["now"])
        active = store.counts_by_status()["active"]
        failed = rng.randint(0, 2)
        finished = clock["now"] + dt.timedelta(seconds=rng.uniform(20, 40))
        store.update_publication(
            digest,
            email_status="sent",
            sent=active - failed,
            failed=failed,
            email_finished_at=finished,
        )
        events = []
        for _ in range(rng.randint(0, 2)):
            sub = store.get(f"reader{rng.randint(0, 119)}@example.org")
            if sub is not None:
                kind = rng.choice(["hard", "soft", "complaint", "ignored"])
                events.append(
                    InboundEvent(sub.email, kind, "5.1.1", "", sub.id, digest_date=digest)
                )
        if events:
            clock["now"] = start + dt.timedelta(days=day, hours=12)
            store.record_inbound(
                sha256=f"{day:064d}",
                source="simulated",
                raw=b"",
                summary="",
                events=events,
                policy=BouncePolicy(),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "config.toml").write_text(
            '[site]\nlanguage = "en"\ntitle = "Daily Papers"\n'
            f'[state]\ndatabase = "sqlite:///{folder}/state.sqlite3"\n'
            '[topics.agents]\nlabel = "Agents"\nmatch = ["agent"]\n'
            '[topics.rl]\nlabel = "Reinforcement learning"\nmatch = ["reinforcement"]\n'
            '[topics.vision]\nlabel = "Vision"\nmatch = ["image"]\n',
            encoding="utf-8",
        )
        cfg = load_config(folder / "config.toml")
        today = dt.datetime.now(dt.UTC).replace(tzinfo=None, hour=0, minute=0, second=0)
        with Store.open(cfg) as store:
            start = today - dt.timedelta(days=DAYS - 1)
            # A database made by this release: the trail began with it (at the simulated start).
            store.set_meta("audit_started", start.isoformat(timespec="seconds"))
            simulate(store, start)
            page = write_report(cfg, store, folder / "report", days=DAYS)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with chromium() as browser:
            context = browser.new_context(
                color_scheme="light", viewport={"width": 840, "height": 900}
            )
            tab = context.new_page()
            tab.goto(page.as_uri())
            tab.screenshot(path=str(args.out), full_page=True)
            context.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
