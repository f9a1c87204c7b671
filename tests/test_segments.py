"""The daily edition per segment of readers (topics, cap): real `publisher send` processes, a
real SMTP server on loopback, messages parsed back with the `email` package, on SQLite and
PostgreSQL. A paused or weekly reader gets no daily email; a reader whose topics match nothing
gets none either and is recorded as served with nothing matched."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import pytest
from lxml import html as lxml_html

from publisher.config import Config, load_config
from publisher.digest import parse_file
from publisher.mailer import Segments
from publisher.state import LedgerEntry, Store

from .conftest import run_publisher
from .smtp_server import Recorder, start_server
from .test_delivery import write_config

SECRET = "Q38QzibWxdh7plYMpEdj51MThQ52yyiyLAY4FmwMq4g"  # strong: `publisher secret`

TOPICS = """
[topics.agents]
label = "에이전트"
match = ["agent"]

[topics.efficiency]
label = "효율화·양자화"
match = ["quantiz"]

[topics.rl]
label = "강화학습"
match = ["reinforcement"]
"""

# (title, votes): in digest order
PAPERS = [
    ("Agent planning A", 5),
    ("Quantized LLM B", 20),
    ("Web agent C", 9),
    ("Plain D", 1),
    ("Agent E with quantization", 5),
    ("Plain F", 3),
    ("Plain G", 2),
    ("Plain H", 7),
]
ALL = [t for t, _ in PAPERS]


@pytest.fixture(autouse=True)
def _signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISHER_SECRET", SECRET)


def write_digest(path: Path, day: str = "2024-05-20") -> Path:
    text = f"## Daily Papers ({day})\n\n"
    for i, (title, votes) in enumerate(PAPERS):
        text += (
            f"### [{title}](https://arxiv.org/abs/2405.{i + 10000:05d})\n\n"
            f"Vote: {votes}\n\n- 요약 {i}번째 논문입니다.\n\n"
        )
    path.write_text(text, encoding="utf-8")
    return path


def setup(tmp_path: Path, port: int, db_url: str, **smtp: object) -> Config:
    cfg = write_config(tmp_path, port, db_url, **smtp)
    with cfg.path.open("a", encoding="utf-8") as fh:
        fh.write('[site]\nlanguage = "ko"\n' + TOPICS)
    return load_config(cfg.path)


def titles(msg: EmailMessage) -> list[str]:
    part = msg.get_body(("html",))
    assert part is not None
    doc = lxml_html.fromstring(part.get_content())
    return [h.text_content() for h in doc.xpath("//h2[contains(@class, 'title')]")]


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return part.get_content()


READERS = (
    "email,name,cadence,topics,max_papers\n"
    "all@example.org,All,daily,,0\n"
    "agents2@example.org,Ag,daily,agents,2\n"
    "eff@example.org,Eff,daily,efficiency,0\n"
    "cap1@example.org,Cap,daily,,1\n"
    "rl@example.org,Rl,daily,rl,0\n"
    "weekly@example.org,Wk,weekly,,0\n"
    "paused@example.org,Pz,paused,,0\n"
)


def test_each_daily_reader_gets_their_papers_paused_and_unmatched_get_nothing(
    tmp_path: Path, db_url: str
) -> None:
    recorder = Recorder()
    server = start_server(recorder)
    try:
        cfg = setup(tmp_path, server.port, db_url)
        cfg.subscribers.file.write_text(READERS, encoding="utf-8")
        digest = write_digest(tmp_path / "20.md")
        r = run_publisher("send", "--config", str(cfg.path), "--digest", str(digest))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "1 with nothing matching their topics (no email)" in r.stdout
        assert "every active subscriber has it" in r.stdout
    finally:
        server.stop()
    assert recorder.received() == Counter(
        {
            "all@example.org": 1,
            "agents2@example.org": 1,
            "eff@example.org": 1,
            "cap1@example.org": 1,
        }
    )
    (everything,) = recorder.to("all@example.org")
    assert titles(everything) == ALL
    # top 2 agent papers by votes: C (9), then A and E tie (5): A, the earlier; digest order
    (agents,) = recorder.to("agents2@example.org")
    assert titles(agents) == ["Agent planning A", "Web agent C"]
    assert str(agents["Subject"]).endswith("Agent planning A")
    (eff,) = recorder.to("eff@example.org")
    assert titles(eff) == ["Quantized LLM B", "Agent E with quantization"]
    (cap,) = recorder.to("cap1@example.org")
    assert titles(cap) == ["Quantized LLM B"]
    for msg in (everything, agents, eff, cap):
        ids = [line for line in text_of(msg).splitlines() if "arxiv.org/abs/" in line]
        assert len(ids) == len(set(ids)) == len(titles(msg))
    # The footer says what each reader gets, next to the preferences link.
    assert "받는 내용: 매일 · 에이전트 · 상위 2편" in text_of(agents)
    assert "받는 내용: 매일 · 모든 주제 · 모든 논문" in text_of(everything)
    html = everything.get_body(("html",)).get_content()
    assert "매일 · 모든 주제 · 모든 논문" in html and "/preferences/" in html
    # More than 5 papers: a list of the titles first, each linking to its card.
    doc = lxml_html.fromstring(html)
    toc = doc.xpath("//ol[contains(@class, 'toc-list')]//a")
    assert [a.text_content() for a in toc] == ALL
    for a in toc:
        assert doc.xpath(f"//*[@id='{a.get('href')[1:]}']")[0].text_content() == a.text_content()
    assert not lxml_html.fromstring(eff.get_body(("html",)).get_content()).xpath(
        "//ol[contains(@class, 'toc-list')]"
    )

    with Store.open(cfg) as store:
        day = parse_file(digest).date
        assert store.ledger_counts(day) == {"queued": 0, "sent": 4, "failed": 0, "nomatch": 1}
        assert store.ledger_entry(day, "rl@example.org")["status"] == "nomatch"
        assert store.ledger_entry(day, "weekly@example.org") is None
        assert store.ledger_entry(day, "paused@example.org") is None
        assert store.unsent_active(day) == 0
    status = run_publisher("status", "--config", str(cfg.path))
    assert "4 sent, 0 failed, 1 nothing matched (5 served)" in status.stdout


def test_two_sender_processes_mail_each_reader_of_each_segment_once(
    tmp_path: Path, db_url: str
) -> None:
    n = 150  # per segment
    recorder = Recorder()
    recorder.pipelining = True
    server = start_server(recorder)
    segments = {
        "all": ("", "", ALL),
        "ag": ("agents", "2", ["Agent planning A", "Web agent C"]),
        "eff": ("efficiency", "0", ["Quantized LLM B", "Agent E with quantization"]),
        "rl": ("rl", "0", None),
    }
    try:
        cfg = setup(tmp_path, server.port, db_url, connections=2)
        rows = "".join(
            f"{seg}{i}@example.org,N,daily,{topics},{cap}\n"
            for i in range(n)
            for seg, (topics, cap, _) in segments.items()
        )
        cfg.subscribers.file.write_text("email,name,cadence,topics,max_papers\n" + rows)
        digest = write_digest(tmp_path / "20.md")
        cmd = [sys.executable, "-m", "publisher.cli", "send", "--config", str(cfg.path)]
        procs = [
            subprocess.Popen(
                [*cmd, "--digest", str(digest)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    finally:
        server.stop()
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out
        assert "every active subscriber has it" in out, out
    counts = recorder.received()
    expected = {f"{s}{i}@example.org" for i in range(n) for s in ("all", "ag", "eff")}
    assert set(counts) == expected
    assert max(counts.values()) == 1
    for seg, (_, _, want) in segments.items():
        if want is None:
            continue
        for i in (0, n // 2, n - 1):
            (msg,) = recorder.to(f"{seg}{i}@example.org")
            assert titles(msg) == want
    with Store.open(cfg) as store:
        day = parse_file(digest).date
        assert store.ledger_counts(day) == {
            "queued": 0,
            "sent": 3 * n,
            "failed": 0,
            "nomatch": n,
        }


def test_a_segment_is_rendered_once_and_the_cache_stays_bounded(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(TOPICS, encoding="utf-8")
    cfg = load_config(tmp_path / "config.toml")
    digest = parse_file(write_digest(tmp_path / "20.md"))
    segs = Segments(digest, cfg, SECRET.encode(), cache_size=2)
    assert segs.present_topics == {"agents", "efficiency"}
    choices = [("", 0), ("agents", 2), ("efficiency", 0), ("agents;efficiency", 3)]
    n = 0
    for topics, cap in choices:  # rows come in segment order, as queue_pending numbers them
        for _ in range(50):
            n += 1
            entry = LedgerEntry(n, digest.date, n, f"r{n}@example.org", "", "queued", 0, "",
                                topics, cap)  # fmt: skip
            assert segs.build_entry(entry)
    assert segs.renders == len(choices)
    assert len(segs._cache) == 2


def test_a_segment_cut_from_the_inlined_edition_equals_its_own_rendering() -> None:
    """Premailer runs once per edition: a segment's email assembled from the edition's pieces
    is byte for byte the email rendered (and inlined) from its papers alone, but for the cards'
    anchors, numbered in the edition (`#p-5`) rather than in the selection (`#p-2`)."""
    import dataclasses
    import re

    from publisher.newsletter import inline_edition, render_newsletter
    from publisher.topics import Choice

    from .conftest import CORPUS, ROOT, largest_corpus_digest

    cfg = load_config(ROOT / "config.toml")
    # The corpus's 68-paper day, where the size budget shortens papers, when it is here.
    path = largest_corpus_digest() if CORPUS.is_dir() else ROOT / "digests/2024/05/15.md"
    digest = parse_file(path)
    edition = inline_edition(digest, cfg)
    for picked in ([0, 2, 5], [7], list(range(len(digest.papers))), list(range(0, 60, 2))):
        sel = dataclasses.replace(digest, papers=tuple(digest.papers[i] for i in picked))
        choice = Choice("daily", frozenset({"agents", "rl"}), 3)
        cut = render_newsletter(sel, cfg, choice, edition=edition)
        alone = render_newsletter(sel, cfg, choice)
        anchors = re.compile(r"\bp-\d+\b")
        assert anchors.sub("p-N", cut.html) == anchors.sub("p-N", alone.html)
        assert (cut.subject, cut.text) == (alone.subject, alone.text)
        assert (cut.full, cut.shortened, cut.linked) == (alone.full, alone.shortened, alone.linked)


def test_the_size_budget_choice_is_kept_up_to_date_exactly() -> None:
    """`_choose` keeps its total incrementally; its choice at every budget is the one the plain
    recount of every kept piece gives (the algorithm as it was), papers giving way in order."""
    from publisher.newsletter import _choose, _total, inline_edition

    from .conftest import CORPUS, ROOT, largest_corpus_digest

    def reference(views, prefix, pieces, budget):  # noqa: ANN001, ANN202
        forms = {v.n: "full" for v in views}
        order = sorted(views, key=lambda v: (v.votes if v.votes is not None else -1, -v.n))
        for form in ("short", "title", "web"):
            for v in order:
                if _total(prefix, pieces, forms) <= budget:
                    return forms
                forms[v.n] = form
        return forms

    cfg = load_config(ROOT / "config.toml")
    path = largest_corpus_digest() if CORPUS.is_dir() else ROOT / "digests/2024/05/15.md"
    edition = inline_edition(parse_file(path), cfg)
    pieces = list(edition.pieces)
    for views in (list(edition.views), list(edition.views)[::3], list(edition.views)[:5]):
        full = _total(edition.prefix, pieces, {v.n: "full" for v in views})
        for budget in (full, full - 1, full * 3 // 4, full // 2, full // 4, 3_000):
            got = _choose(views, edition.prefix, pieces, budget)
            assert got == reference(views, edition.prefix, pieces, budget), (len(views), budget)


def test_readers_are_queued_in_segment_order(tmp_path: Path, db_url: str) -> None:
    """A sender claims rows by id: numbered segment by segment, it meets each segment in one
    run, and the small cache of segments renders each once."""
    import random

    from publisher.state import ChoiceUpdate

    from .pg import config_for

    cfg = config_for(tmp_path, db_url)
    choices = [("", 0), ("agents", 2), ("efficiency", 0), ("agents;rl", 5), ("", 3)]
    with Store.open(cfg) as store:
        rng = random.Random(7)
        for i in range(200):
            topics, cap = rng.choice(choices)
            store.add_subscriber(f"r{i}@example.org")
            update = ChoiceUpdate(
                topics=frozenset(t for t in topics.split(";") if t), max_papers=cap
            )
            store.set_choice(f"r{i}@example.org", update, "cli")
        day = parse_file(write_digest(tmp_path / "20.md")).date
        assert store.queue_pending(day, frozenset({"agents", "efficiency", "rl"})) == 200
        entries = store.claim(day, "test:1:x", 500, 30)
        keys = [e.segment for e in sorted(entries, key=lambda e: e.id)]
        runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
        assert len(runs) == len(set(keys)) == len(choices)
