"""The weekly edition end to end: four corpus weeks replayed through real `publisher send` and
`publisher send --weekly` processes, a real SMTP server on loopback, messages parsed back with
the `email` package, on SQLite and PostgreSQL. Each kind of reader gets exactly the messages and
papers their choice says; a change made on the web applies from the next edition; two weekly
senders at once mail each weekly reader once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
import subprocess
import sys
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from lxml import html as lxml_html

from publisher import metrics
from publisher.config import Config, load_config
from publisher.digest import Digest, Paper, parse_file
from publisher.editions import Week
from publisher.policy import weekly_due
from publisher.scheduler import send_step
from publisher.state import Store, reporting
from publisher.tokens import sign_id
from publisher.topics import paper_text
from publisher.urls import day_url, preferences_url
from publisher.web import create_app

from .conftest import run_publisher
from .deliveryhelpers import write_config
from .requires import CORPUS
from .smtp_server import Recorder, start_server
from .test_segments import write_digest
from .webhelpers import SECRET, live_server

TOPICS = {
    "agents": ["agent"],
    "robotics": ["robot"],
    "never": ["zq-no-paper-says-this-qz"],
}
# Four consecutive ISO weeks of the corpus: 5, 5, 3 and 3 digests.
WEEKS = [Week(2024, n) for n in (22, 23, 24, 25)]

READERS = {
    # address: (cadence, topics, max_papers)
    "daily-all@example.org": ("daily", "", 0),
    "daily-agents@example.org": ("daily", "agents", 5),
    "weekly-all@example.org": ("weekly", "", 10),
    "weekly-two@example.org": ("weekly", "agents;robotics", 0),
    "paused@example.org": ("paused", "", 0),
    "nomatch@example.org": ("daily", "never", 0),
    "switcher@example.org": ("daily", "", 0),  # daily -> weekly on the web, mid-week 3
}


@pytest.fixture(autouse=True)
def _signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISHER_SECRET", SECRET.decode())


def setup(tmp_path: Path, port: int, db_url: str, inbox: Path, **smtp: object) -> Config:
    cfg = write_config(tmp_path, port, db_url, **smtp)
    text = cfg.path.read_text(encoding="utf-8").replace(
        f'inbox = "{cfg.digests.inbox}"', f'inbox = "{inbox}"'
    )
    text += (
        '[site]\nlanguage = "ko"\nbase_url = "https://papers.example.org/"\n'
        'timezone = "Asia/Seoul"\n'
        "[email]\nmax_html_bytes = 5000000\n"
        'weekly_subject = "주간 {week}: {first_title}"\n'
    )
    for name, match in TOPICS.items():
        text += f'[topics.{name}]\nlabel = "{name}"\nmatch = {match!r}\n'.replace("'", '"')
    cfg.path.write_text(text, encoding="utf-8")
    return load_config(cfg.path)


def corpus_week(week: Week) -> list[Path]:
    days = [week.monday + dt.timedelta(days=i) for i in range(7)]
    files = [CORPUS / f"{d:%Y/%m/%d}.md" for d in days]
    return [f for f in files if f.is_file()]


def ids_in(msg: EmailMessage) -> list[str]:
    """The arXiv ids of the papers in a message, in its order: its cards' title links."""
    part = msg.get_body(("html",))
    assert part is not None
    doc = lxml_html.fromstring(part.get_content())
    hrefs = doc.xpath("//h2[contains(@class, 'title')]/a/@href")
    return [re.search(r"arxiv\.org/abs/([0-9.]+)", h).group(1) for h in hrefs]  # type: ignore[union-attr]


# -- the expected editions, computed here from the rules (not with publisher's code) --


def _in(paper: Paper, topics: str) -> bool:
    wanted = [t for t in topics.split(";") if t]
    if not wanted:
        return True
    text = paper_text(paper)
    return any(re.search(p, text, re.IGNORECASE) for t in wanted for p in TOPICS[t])


def _capped(ranked: list[tuple[tuple[int, ...], Paper]], cap: int) -> list[Paper]:
    """`ranked`: (rank key, paper) in the edition's order; the top `cap` by votes (ties: the
    edition's order), shown in the edition's order."""
    if cap and len(ranked) > cap:
        keep = sorted(range(len(ranked)), key=lambda i: (-(ranked[i][1].votes or 0), i))[:cap]
        ranked = [ranked[i] for i in sorted(keep)]
    return [p for _, p in ranked]


def expected_daily(digest: Digest, topics: str, cap: int) -> list[str]:
    chosen = [((), p) for p in digest.papers if _in(p, topics)]
    return [p.arxiv_id for p in _capped(chosen, cap)]  # type: ignore[misc]


def expected_weekly(days: list[Digest], topics: str, cap: int) -> list[tuple[str, dt.date]]:
    """One entry per arXiv id (more votes wins; a tie keeps the earlier day), ranked by votes
    (ties: the earlier day, then the digest's order); then the reader's topics and cap."""
    best: dict[str, tuple[tuple[int, dt.date, int], Paper, dt.date]] = {}
    for d in days:
        for pos, p in enumerate(d.papers):
            key = (-(p.votes or 0), d.date, pos)
            if p.arxiv_id not in best or key < best[p.arxiv_id][0]:
                best[p.arxiv_id] = (key, p, d.date)  # type: ignore[index]
    ranked = sorted(best.values(), key=lambda e: e[0])
    day_of = {p.arxiv_id: day for _, p, day in ranked}
    chosen = [(k, p) for k, p, _ in ranked if _in(p, topics)]
    return [(p.arxiv_id, day_of[p.arxiv_id]) for p in _capped(chosen, cap)]  # type: ignore[misc]


def switch_to_weekly_on_the_web(cfg: Config, address: str) -> None:
    """The reader's preferences page (the footer link), over real HTTP: cadence weekly."""
    with Store.open(cfg) as store:

        def make_app(base: str):  # noqa: ANN202
            site = dataclasses.replace(cfg.site, base_url=base)
            return create_app(dataclasses.replace(cfg, site=site), secret=SECRET, store=store)

        with live_server(make_app) as base, httpx.Client(timeout=30) as http:
            sub = store.get(address)
            assert sub is not None
            site = dataclasses.replace(cfg.site, base_url=base)
            url = preferences_url(
                dataclasses.replace(cfg, site=site), sign_id(SECRET, "manage", sub.id)
            )
            r = http.post(url, data={"action": "choice", "cadence": "weekly", "max_papers": "0"})
            assert r.status_code == 200, r.text
        assert store.get(address).cadence == "weekly"  # type: ignore[union-attr]


def test_four_corpus_weeks_each_reader_gets_exactly_their_editions(
    tmp_path: Path, db_url: str
) -> None:
    weeks = {w: corpus_week(w) for w in WEEKS}
    assert [len(f) for f in weeks.values()] == [5, 5, 3, 3]
    inbox = tmp_path / "inbox"
    for files in weeks.values():
        for f in files:
            target = inbox / f.relative_to(CORPUS)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
    recorder = Recorder()
    server = start_server(recorder)
    expected: dict[str, list[tuple[str, object]]] = {a: [] for a in READERS}
    try:
        cfg = setup(tmp_path, server.port, db_url, inbox)
        cfg.subscribers.file.write_text(
            "email,name,cadence,topics,max_papers\n"
            + "".join(f"{a},,{c},{t},{m}\n" for a, (c, t, m) in READERS.items()),
            encoding="utf-8",
        )
        choice = dict(READERS)
        for n, (week, files) in enumerate(weeks.items()):
            days = [parse_file(f) for f in files]
            for i, (path, digest) in enumerate(zip(files, days, strict=True)):
                r = run_publisher("send", "--config", str(cfg.path), "--digest", str(path))
                assert r.returncode == 0, r.stdout + r.stderr  # nomatch@ gets nothing: still 0
                for address, (cadence, topics, cap) in choice.items():
                    papers = expected_daily(digest, topics, cap)
                    if cadence == "daily" and papers:
                        expected[address].append((f"daily {digest.date}", papers))
                if n == 2 and i == 0:
                    switch_to_weekly_on_the_web(cfg, "switcher@example.org")
                    choice["switcher@example.org"] = ("weekly", "", 0)
            r = run_publisher("send", "--config", str(cfg.path), "--weekly", "--week", str(week))
            assert r.returncode == 0, r.stdout + r.stderr
            assert f"week {week}: " in r.stdout
            for address, (cadence, topics, cap) in choice.items():
                papers = expected_weekly(days, topics, cap)
                if cadence == "weekly" and papers:
                    expected[address].append((str(week), papers))
        # Sending a week again mails nobody: each weekly edition once per reader.
        again = run_publisher("send", "--config", str(cfg.path), "--weekly", "--week", "2024-W25")
        assert again.returncode == 0 and "week 2024-W25: 0 sent" in again.stdout, again.stdout
        status = run_publisher("status", "--config", str(cfg.path))
    finally:
        server.stop()

    assert recorder.received() == Counter({a: len(e) for a, e in expected.items() if e})
    assert "paused@example.org" not in recorder.received()
    assert "nomatch@example.org" not in recorder.received()
    assert len(expected["daily-all@example.org"]) == 16
    assert [e[0].split()[0] for e in expected["switcher@example.org"]] == ["daily"] * 11 + [
        "2024-W24",
        "2024-W25",
    ]
    for address, editions in expected.items():
        got = recorder.to(address)
        for msg, (edition, papers) in zip(got, editions, strict=True):
            ids = ids_in(msg)
            assert len(ids) == len(set(ids)), (address, edition)  # no arXiv id twice
            subject = str(msg["Subject"])
            if edition.startswith("daily"):
                assert ids == papers, (address, subject)
                assert subject.startswith("Daily Papers 2024-")
                continue
            assert ids == [i for i, _ in papers], (address, edition)
            assert subject.startswith(f"주간 {edition}: ")
            # Each paper links to its card on the page of the day it came from.
            html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
            for arxiv_id, day in papers:
                anchor = f'href="{day_url(cfg, day)}#{arxiv_id}"'
                assert anchor in html, (address, edition, arxiv_id)
    caps = {len(ids_in(m)) for m in recorder.to("weekly-all@example.org")}
    assert caps == {10}
    for msg in recorder.to("weekly-two@example.org"):
        assert (
            "받는 내용: 주간 · agents, robotics · 모든 논문"
            in msg.get_body(("plain",)).get_content()
        )  # type: ignore[union-attr]
    # The daily and the weekly edition of one Monday side by side: the metrics and the report
    # read the daily ones (a scalar subquery meeting both rows failed on PostgreSQL).
    with Store.open(cfg) as store:
        assert store.get_publication(dt.date(2024, 6, 17), edition="weekly") is not None
        assert store.get_publication(dt.date(2024, 6, 17)) is not None
        assert metrics.read(store)["last_send"]["digest"] == "2024-06-21"
        days = [r.date for r in reporting.sends(store.engine, dt.date(2024, 5, 1), cfg.tz)]
        assert len(days) == len(set(days)) == 16
    # Per edition: the latest daily (2024-06-21) and weekly (2024-W25) edition's readers.
    last_day = sum(1 for e in expected.values() if e and e[-1][0] == "daily 2024-06-21")
    assert (
        f"  daily   2024-06-21: 3 served ({last_day} mailed, {3 - last_day} nothing matched)"
        in (status.stdout)
    ), status.stdout
    last_week = sum(1 for e in expected.values() if e and e[-1][0] == "2024-W25")
    assert f"  weekly  2024-W25: 3 served ({last_week} mailed, {3 - last_week} nothing" in (
        status.stdout
    ), status.stdout


def test_two_weekly_senders_started_together_mail_each_weekly_reader_once(
    tmp_path: Path, db_url: str
) -> None:
    n = 120  # readers per segment
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for day in ("2024-05-20", "2024-05-21", "2024-05-23"):
        write_digest(inbox / f"{day}.md", day)
    recorder = Recorder()
    recorder.pipelining = True
    server = start_server(recorder)
    segments = {"all": ("", "0"), "ag": ("agents", "2"), "never": ("never", "0")}
    try:
        cfg = setup(tmp_path, server.port, db_url, inbox, connections=2)
        rows = "".join(
            f"{seg}{i}@example.org,N,weekly,{topics},{cap}\n"
            for i in range(n)
            for seg, (topics, cap) in segments.items()
        )
        rows += "".join(f"d{i}@example.org,N,daily,,0\n" for i in range(20))
        cfg.subscribers.file.write_text("email,name,cadence,topics,max_papers\n" + rows)
        cmd = [sys.executable, "-m", "publisher.cli", "send", "--config", str(cfg.path)]
        procs = [
            subprocess.Popen(
                [*cmd, "--weekly", "--week", "2024-W21"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    finally:
        server.stop()
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out
        assert "every active subscriber has it" in out, out
    received = recorder.received()
    assert received == Counter(
        {f"{seg}{i}@example.org": 1 for i in range(n) for seg in ("all", "ag")}
    )
    # The same paper on three days is in the edition once.
    (one,) = recorder.to("all0@example.org")
    ids = ids_in(one)
    assert len(ids) == len(set(ids)) == 8
    (ag,) = recorder.to("ag0@example.org")
    assert len(ids_in(ag)) == 2
    with Store.open(cfg) as store:
        monday = Week(2024, 21).monday
        counts = store.ledger_counts(monday, edition="weekly")
        assert counts == {"queued": 0, "sent": 2 * n, "failed": 0, "nomatch": n}
        assert store.ledger_counts(monday) == {"queued": 0, "sent": 0, "failed": 0}
        pub = store.get_publication(monday, edition="weekly")
        assert pub is not None and pub.email_status == "sent" and pub.sent == 2 * n
        assert store.get_publication(monday) is None  # no daily edition was sent


def test_dry_run_prints_each_segment_of_both_editions(tmp_path: Path, db_url: str) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_digest(inbox / "2024-05-20.md", "2024-05-20")
    cfg = setup(tmp_path, None, db_url, inbox)  # type: ignore[arg-type]
    cfg.subscribers.file.write_text(
        "email,name,cadence,topics,max_papers\n"
        "a@example.org,,weekly,,3\nb@example.org,,weekly,never,0\nc@example.org,,daily,,0\n"
    )
    assert run_publisher("subscribers", "import", "--config", str(cfg.path)).returncode == 0
    out = tmp_path / "preview"
    weekly = run_publisher(
        "send", "--config", str(cfg.path), "--weekly", "--week", "2024-W21", "--dry-run",
        "--to", "me@example.org", "--out", str(out),
    )  # fmt: skip
    assert weekly.returncode == 0, weekly.stdout + weekly.stderr
    assert "edition:    weekly, week 2024-W21 (2024-05-20 to 2024-05-26, 8 papers)" in weekly.stdout
    assert "segment:    주간 · 모든 주제 · 상위 3편: 1 readers, 3 papers" in weekly.stdout
    assert "segment:    주간 · never · 모든 논문: 1 readers, nothing matched, no email" in (
        weekly.stdout
    )
    assert (out / "me@example.org.eml").is_file()
    daily = run_publisher("send", "--config", str(cfg.path), "--dry-run", "--out", str(out))
    assert "segment:    매일 · 모든 주제 · 모든 논문: 1 readers, 8 papers" in daily.stdout
    with Store.open(cfg) as store:  # nothing recorded
        assert store.get_publication(Week(2024, 21).monday, edition="weekly") is None
    bad = run_publisher("send", "--config", str(cfg.path), "--week", "2024-W60")
    assert bad.returncode == 2 and "2024 has no week 60" in bad.stderr
    empty = run_publisher("send", "--config", str(cfg.path), "--weekly", "--week", "2024-W30")
    assert empty.returncode == 1 and "no digest dated in week 2024-W30" in empty.stderr


KST = ZoneInfo("Asia/Seoul")


def test_run_sends_the_weekly_edition_at_weekly_day_send_at_once(
    tmp_path: Path, db_url: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for day in ("2024-05-20", "2024-05-22"):
        write_digest(inbox / f"{day}.md", day)
    recorder = Recorder()
    server = start_server(recorder)
    try:
        cfg = setup(tmp_path, server.port, db_url, inbox)
        with cfg.path.open("a", encoding="utf-8") as fh:
            fh.write('[schedule]\nweekly_day = "wed"\nsend_at = "07:00"\n')
        cfg = load_config(cfg.path)
        assert cfg.site.timezone == "Asia/Seoul"
        cfg.subscribers.file.write_text(
            "email,name,cadence,topics,max_papers\n"
            "w@example.org,,weekly,,0\nd@example.org,,daily,,0\np@example.org,,paused,,0\n"
        )
        week = Week(2024, 21)
        with Store.open(cfg) as store:
            early = send_step(cfg, store, now=dt.datetime(2024, 5, 29, 6, 59, tzinfo=KST))
            assert early.weekly_sent == []
            assert early.weekly_pending == [(week, "waiting for 2024-05-29T07:00+09:00")]
            at = send_step(cfg, store, now=dt.datetime(2024, 5, 29, 7, 0, tzinfo=KST))
            assert at.weekly_sent == [week]
            later = send_step(cfg, store, now=dt.datetime(2024, 5, 30, 7, 0, tzinfo=KST))
            assert later.weekly_sent == [] and later.weekly_pending == []
            pub = store.get_publication(week.monday, edition="weekly")
            assert pub is not None and (pub.email_status, pub.sent) == ("sent", 1)
    finally:
        server.stop()
    assert recorder.received() == Counter({"w@example.org": 1})


def test_the_weekly_edition_follows_the_daily_catch_up_and_misfire_rules(tmp_path: Path) -> None:
    from publisher.config import default_config

    cfg = default_config(tmp_path)  # weekly_day mon, send_at 07:00, grace 12 h
    week = Week(2024, 21)
    monday = dt.date(2024, 5, 27)
    assert Week.last_complete(monday) == week
    assert not weekly_due(cfg, week, dt.datetime.combine(monday, dt.time(6, 59), KST)).due
    assert weekly_due(cfg, week, dt.datetime.combine(monday, dt.time(7, 0), KST)).due
    # Down at 07:00, back within the grace: caught up at once.
    assert weekly_due(cfg, week, dt.datetime.combine(monday, dt.time(18, 59), KST)).due
    # Missed by more than the grace: the next send_at, not midnight.
    late = weekly_due(cfg, week, dt.datetime.combine(monday, dt.time(19, 1), KST))
    assert not late.due and late.reason == "waiting for 2024-05-28T07:00+09:00"
    assert weekly_due(cfg, week, dt.datetime(2024, 5, 28, 7, 0, tzinfo=KST)).due
    # Like a digest older than max_age_days (2): never sent automatically.
    assert weekly_due(cfg, week, dt.datetime(2024, 5, 29, 7, 0, tzinfo=KST)).due
    stale = weekly_due(cfg, week, dt.datetime(2024, 5, 30, 7, 0, tzinfo=KST))
    assert not stale.due and "more than schedule.max_age_days (2)" in stale.reason


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('[schedule]\nweekly_day = "monday"\n', "'schedule.weekly_day' must be one of mon, tue"),
        ('[email]\nweekly_subject = "{date}"\n', "'email.weekly_subject' may use only {week}"),
    ],
)
def test_a_bad_weekly_setting_is_a_config_error_naming_the_key(
    tmp_path: Path, line: str, key: str
) -> None:
    from publisher.errors import ConfigError

    (tmp_path / "config.toml").write_text(line, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(tmp_path / "config.toml")


def test_a_partial_weekly_edition_follows_the_daily_retry_rule_then_is_final(
    tmp_path: Path,
) -> None:
    """publisher run treats a partial weekly send as a daily one (policy.partial_retry): it waits
    `retry_failed_hours`, and once `retry_failed_times` retries are used up it is `final`."""
    from publisher.config import default_config
    from publisher.scheduler import weekly_step
    from publisher.state.schema import WEEKLY

    cfg = default_config(tmp_path)  # retry_failed_times 3, retry_failed_hours 6
    week = Week(2024, 21)
    now = dt.datetime.combine(dt.date(2024, 5, 27), dt.time(9, 0), KST)
    ended = (now - dt.timedelta(hours=1)).astimezone(dt.UTC).replace(tzinfo=None)
    with Store.open(cfg) as store:
        store.record_publication(week.monday, f"week {week}", "sha", edition=WEEKLY)
        store.update_publication(
            week.monday, edition=WEEKLY, email_status="partial", email_finished_at=ended
        )
        waiting = weekly_step(cfg, store, now=now)
        assert waiting.weekly_pending == [(week, "partial: retry 1 of 3 at 2024-05-27T14:00+09:00")]
        store.update_publication(week.monday, edition=WEEKLY, email_retries=3)
        done = weekly_step(cfg, store, now=now)
        assert done.weekly_final == [(week, 0)]
        assert store.get_publication(week.monday, edition=WEEKLY).email_status == "final"
        assert store.get_publication(week.monday) is None  # the daily edition's row: untouched
