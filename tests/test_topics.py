"""Topics: `[topics.NAME]` in config.toml, the pure matcher, and `publisher topics`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from publisher.config import load_config
from publisher.digest import Bullet, Paper
from publisher.errors import ConfigError
from publisher.topics import TopicMatcher, select

from .conftest import CORPUS, ROOT, needs_corpus, one_error_line, run_publisher

TOPICS = """
[topics.efficiency]
label = "효율화·양자화"
match = ["quantiz", "양자화", "\\\\bMoE\\\\b"]

[topics.agents]
label = "에이전트"
match = ["agent", "에이전트"]
"""


def _paper(title: str, *bullets: str, votes: int | None = None, children: str = "") -> Paper:
    items = tuple(Bullet(text=b) for b in bullets)
    if children:
        items += (Bullet(text="parent", children=(Bullet(text=children),)),)
    return Paper(
        title=title, url="https://arxiv.org/abs/1", arxiv_id=None, votes=votes, summary=items
    )


def test_topics_load_in_file_order_and_match_title_and_nested_bullets(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(TOPICS, encoding="utf-8")
    cfg = load_config(tmp_path / "config.toml")
    assert cfg.topic_names == ("efficiency", "agents")
    assert cfg.topics[0].label == "효율화·양자화"
    m = TopicMatcher.from_config(cfg)
    assert m.topics_of(_paper("QUANTIZATION for all")) == {"efficiency"}
    assert m.topics_of(_paper("x", "웹 에이전트를 위한 4비트 양자화")) == {"efficiency", "agents"}
    assert m.topics_of(_paper("x", "a", children="sparse MoE layers")) == {"efficiency"}
    # \bMoE\b is a word: "Moebius" is not it; a paper with no match has no topic.
    assert m.topics_of(_paper("Moebius strips")) == frozenset()


def test_select_filters_by_topic_then_caps_by_votes_ties_in_digest_order(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(TOPICS, encoding="utf-8")
    m = TopicMatcher.from_config(load_config(tmp_path / "config.toml"))
    papers = [
        _paper("agent A", votes=3),
        _paper("nothing", votes=99),
        _paper("agent B", votes=7),
        _paper("agent C", votes=3),
        _paper("agent D", votes=None),
    ]
    titles = lambda ps: [p.title for p in ps]  # noqa: E731
    assert titles(select(papers, m)) == titles(papers)
    assert titles(select(papers, m, {"agents"})) == ["agent A", "agent B", "agent C", "agent D"]
    # top 2 by votes: B (7), then A beats C on the tie (earlier); shown in digest order
    assert titles(select(papers, m, {"agents"}, 2)) == ["agent A", "agent B"]
    assert titles(select(papers, m, (), 1)) == ["nothing"]
    assert select(papers, m, {"efficiency"}) == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "[topics.bad]\nlabel = 'x'\nmatch = ['ok', '(unclosed']\n",
            "'topics.bad.match[1]' is not a valid regular expression",
        ),
        ("[topics.empty]\nlabel = 'x'\nmatch = []\n", "'topics.empty.match' is empty"),
        ("[topics.nomatch]\nlabel = 'x'\n", "'topics.nomatch.match' is empty"),
        ("[topics.x]\nmatch = ['a']\nlable = 'x'\n", "unknown key 'topics.x.lable'"),
        ("[topics.Bad_Name]\nmatch = ['a']\n", "'topics.Bad_Name': a topic name is"),
        ("[topics.x]\nmatch = 'a'\n", "'topics.x.match' must be a list of strings"),
    ],
)
def test_a_bad_topic_is_one_error_line_naming_the_key(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="topics"):
        load_config(path)
    line = one_error_line(run_publisher("topics", "--config", str(path)))
    assert needle in line and str(path) in line


def test_publisher_topics_counts_papers_over_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "1.md").write_text(
        "## Daily Papers (2024-05-15)\n\n"
        "### [Agents that quantize](https://arxiv.org/abs/2405.00001)\n\n- 요약\n\n"
        "### [Web agents](https://arxiv.org/abs/2405.00002)\n\n- 요약\n\n"
        "### [Something else](https://arxiv.org/abs/2405.00003)\n\n- 다른 것\n\n"
        "### [Still else](https://arxiv.org/abs/2405.00004)\n\n- 다른 것\n",
        encoding="utf-8",
    )
    (tmp_path / "config.toml").write_text(f'[digests]\ninbox = "inbox"\n{TOPICS}', encoding="utf-8")
    r = run_publisher("topics", "--config", str(tmp_path / "config.toml"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["efficiency", "1"]
    assert lines[1].split()[:2] == ["agents", "2"]
    assert lines[-1].endswith("4 papers in " + str(inbox) + "; 2 (50.0%) match no topic")
    r = run_publisher("topics", "--json", "--config", str(tmp_path / "config.toml"))
    assert json.loads(r.stdout) == [
        {
            "name": "efficiency",
            "label": "효율화·양자화",
            "match": ["quantiz", "양자화", "\\bMoE\\b"],
            "papers": 1,
        },
        {"name": "agents", "label": "에이전트", "match": ["agent", "에이전트"], "papers": 2},
    ]


@needs_corpus
def test_the_shipped_topics_cover_the_corpus() -> None:
    cfg = load_config(ROOT / "config.toml")
    assert 8 <= len(cfg.topics) <= 14
    m = TopicMatcher.from_config(cfg)
    from publisher.digest import parse_file

    papers = [p for f in sorted(CORPUS.rglob("*.md")) for p in parse_file(f).papers]
    unmatched = sum(1 for p in papers if not m.topics_of(p))
    assert unmatched / len(papers) < 0.05
    # and every topic is a real choice: none holds almost everything, none is empty
    for name in m.names:
        n = sum(1 for p in papers if name in m.topics_of(p))
        assert 0.02 < n / len(papers) < 0.6, name
