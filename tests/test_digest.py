"""The digest parser: every corpus file, field-by-field checks, every format variation, fuzzing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from publisher.digest import Digest, find_digests, parse, parse_authors, parse_file
from publisher.errors import DigestError
from publisher.markdown import render_inline

from .conftest import CORPUS, ROOT, corpus_date, corpus_files, needs_corpus, paper_ids


@needs_corpus
@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_file_parses_with_one_paper_per_arxiv_id(path: Path) -> None:
    digest = parse_file(path)
    expected = paper_ids(path.read_text(encoding="utf-8"))
    assert [p.arxiv_id for p in digest.papers] == expected
    assert digest.date == corpus_date(path)
    for paper in digest.papers:
        assert paper.title and paper.url.startswith("https://arxiv.org/abs/")
        assert paper.summary, f"{path}:{paper.line} has no summary"


def _paper(relpath: str, arxiv_id: str):
    base = CORPUS if CORPUS.is_dir() else ROOT / "digests"
    digest = parse_file(base / relpath)
    return next(p for p in digest.papers if p.arxiv_id == arxiv_id)


@needs_corpus
def test_no_image_no_vote_no_authors() -> None:
    p = _paper("2023/11/20.md", "2311.10709")
    assert (
        p.title == "Emu Video: Factorizing Text-to-Video Generation by Explicit Image Conditioning"
    )
    assert (p.image, p.video, p.votes, p.authors, p.elided_authors) == (None, None, None, (), False)
    assert len(p.summary) == 5 and p.summary[3].text.startswith("Emu Video는 RunwayML의 Gen2")


@needs_corpus
def test_consecutive_lines_image_and_authors() -> None:
    p = _paper("2023/11/21.md", "2311.11045")
    assert p.title == "Orca 2: Teaching Small Language Models How to Reason"
    assert p.image == (
        "https://cdn-uploads.huggingface.co/production/uploads/"
        "60f1abe7544c2adfd699860c/wonQoQEEuCjCtDCJibROj.png"
    )
    assert p.authors[:3] == ("Arindam Mitra", "Luciano Del Corro", "Shweti Mahajan")
    assert p.votes is None and len(p.summary) == 8


@needs_corpus
def test_raw_video_tag_is_the_video() -> None:
    p = _paper("2023/11/21.md", "2311.10982")
    assert p.video == (
        "https://cdn-uploads.huggingface.co/production/uploads/"
        "60f1abe7544c2adfd699860c/D-WQoAl7gR1AwRZ0RXNkW.mp4"
    )
    assert p.image is None
    assert all("<video" not in b.text for b in p.summary)


@needs_corpus
def test_watch_video_link_with_and_without_parentheses() -> None:
    with_parens = _paper("2023/12/12.md", "2312.06655")
    assert with_parens.video == (
        "https://cdn-uploads.huggingface.co/production/uploads/"
        "60f1abe7544c2adfd699860c/3X51nAmSqVYpWXFc4aZO2.mp4"
    )
    assert with_parens.votes == 16
    assert with_parens.authors == (
        "Fangfu Liu",
        "Diankun Wu",
        "Yi Wei",
        "Yongming Rao",
        "Yueqi Duan",
    )
    bare = parse_file(CORPUS / "2023/12/04.md").papers[1]
    assert bare.video == (
        "https://cdn-uploads.huggingface.co/production/uploads/"
        "60f1abe7544c2adfd699860c/i0OtI7IVL_ANfE1YOKxxt.mp4"
    )


@needs_corpus
def test_vote_dash_is_none() -> None:
    p = _paper("2024/05/30.md", "2405.18503")
    assert p.title.startswith("SoundCTM")
    assert p.votes is None
    assert _paper("2024/05/30.md", "2405.19327").votes == 19


def test_plus_token_elides_authors() -> None:
    p = _paper("2024/05/15.md", "2405.08748")
    assert p.elided_authors is True
    assert "+" not in p.authors
    assert p.authors[12:14] == ("Minbin Huang", "Xinchi Deng")
    assert p.votes == 6
    assert (
        p.image == "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.08748.png"
    )
    q = _paper("2024/05/15.md", "2405.08246")
    assert q.elided_authors is False
    assert q.authors == (
        "Weili Nie",
        "Arash Vahdat",
        "Chao Liu",
        "Sifei Liu",
        "Benjamin Eckart",
        "Morteza Mardani",
    )


def test_python_list_authors_and_triple_star_labels() -> None:
    p = _paper("2024/10/18.md", "2410.13198")
    assert p.authors == (
        "Jian Xue",
        "Michael Levit",
        "Sreyan Ghosh",
        "Peidong Wang",
        "Mohammad Sadegh Rasooli",
        "Dinesh Manocha",
        "Jinyu Li",
    )
    assert [b.label for b in p.summary] == [
        "What's New",
        "Technical Details",
        "Performance Highlights",
    ]
    assert p.summary[0].text.startswith("이 논문은 DARAG")
    assert p.votes == 1


@needs_corpus
def test_double_star_labels_and_numbered_children() -> None:
    qwen = _paper("2024/07/16.md", "2407.10671")
    assert [b.label for b in qwen.summary][:3] == [
        "What's New",
        "Technical Details",
        "Performance Highlights",
    ]
    numbered = [
        b for p in parse_file(CORPUS / "2024/07/16.md").papers for b in p.summary if b.children
    ]
    assert numbered and [c.text[:3] for c in numbered[0].children] == ["1) ", "2) ", "3) ", "4) "]


@needs_corpus
def test_nested_bullets_are_children() -> None:
    digest = parse_file(CORPUS / "2023/11/20.md")
    parent = next(b for p in digest.papers for b in p.summary if b.children)
    assert parent.text.endswith("차별화한다:")
    assert [c.text[:3] for c in parent.children] == ["(1)", "(2)", "(3)", "(4)"]


@needs_corpus
def test_titles_with_latex_and_pseudo_tags() -> None:
    assert _paper("2024/03/14.md", "2403.08715").title == (
        "SOTOPIA-$π$: Interactive Learning of Socially Intelligent Language Agents"
    )
    assert _paper("2023/11/21.md", "2311.11255").title.startswith("M$^{2}$UGen:")
    think = _paper("2025/04/11.md", "2504.07128")
    assert think.title == "DeepSeek-R1 Thoughtology: Let's <think> about LLM Reasoning"
    assert think.url == "https://arxiv.org/abs/2504.07128"


@needs_corpus
def test_repeated_header_keeps_each_paper_once_in_order() -> None:
    # the corpus's days whose header repeats (a second run appended more papers), found in it
    texts = {p: p.read_text(encoding="utf-8") for p in corpus_files()}
    repeated = [p for p, text in texts.items() if text.count("## Daily Papers (") > 1]
    assert repeated
    for path in repeated:
        expected = paper_ids(texts[path])
        assert len(expected) > 1
        assert [p.arxiv_id for p in parse_file(path).papers] == expected, path


SYNTHETIC = """## Daily Papers (2024-01-02)

### [GPT-[n] & the *IDK* [token]: $x^2$](https://arxiv.org/abs/2401.00001)
Vote: 3
Authors: ['A. One', 'B. Two', '+']
- **What's New**: uses <think> and <EOS> tokens with `code` and https://example.org/x
  - nested <MASK> detail
- plain bullet

### [Second](https://arxiv.org/abs/2401.00002)
- only a bullet

## Daily Papers (2024-01-02)

### [GPT-[n] & the *IDK* [token]: $x^2$](https://arxiv.org/abs/2401.00001)
- repeated paper, must be dropped
"""


def test_synthetic_variations() -> None:
    d = parse(SYNTHETIC, source="synthetic.md")
    assert d.date == dt.date(2024, 1, 2)
    assert [p.arxiv_id for p in d.papers] == ["2401.00001", "2401.00002"]
    first = d.papers[0]
    assert first.title == "GPT-[n] & the *IDK* [token]: $x^2$"
    assert first.url == "https://arxiv.org/abs/2401.00001"
    assert first.authors == ("A. One", "B. Two") and first.elided_authors
    assert first.summary[0].label == "What's New"
    assert first.summary[0].children[0].text == "nested <MASK> detail"
    assert any("repeated" in w for w in d.warnings)


def test_inline_markdown_is_safe_html() -> None:
    html = render_inline(
        "uses <think> and <EOS>, **bold**, `a<b>`, [x](javascript:alert(1))"
        " <video src='v.mp4'></video> <img src=x onerror=alert(1)>"
    )
    assert "&lt;think&gt;" in html and "&lt;EOS&gt;" in html
    assert "<strong>bold</strong>" in html and "<code>a&lt;b&gt;</code>" in html
    assert (
        "<video" not in html
        and "<img" not in html
        and "javascript:" not in html.replace("[x](javascript:alert(1))", "")
    )
    assert 'href="javascript' not in html


def test_authors_parsing() -> None:
    assert parse_authors("A, +, B") == (("A", "B"), True)
    assert parse_authors("['A', \"B, Jr.\"]") == (("A", "B, Jr."), False)
    assert parse_authors("['A', 'B'") == (("['A'", "'B'"), False)  # not a list: plain split
    assert parse_authors("") == ((), False)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("# just a note\n\nhello\n", 1, "no '## Daily Papers (YYYY-MM-DD)' header"),
        ("\n\n## Daily Papers (2024-01-02)\n\nno papers here\n", 3, "has no paper"),
        ("## Daily Papers (2024-02-30)\n", 1, "invalid date"),
        ("intro\n### [T](https://arxiv.org/abs/1)\n", 2, "paper before"),
    ],
)
def test_not_a_digest_names_file_and_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(DigestError) as info:
        parse(text, source="notes/x.md")
    assert info.value.line == line
    assert str(info.value).startswith(f"notes/x.md:{line}: ")
    assert problem in str(info.value)


def _check_total(text: str) -> None:
    try:
        d = parse(text, source="fuzz.md")
    except DigestError:
        return
    assert isinstance(d, Digest) and d.papers
    for p in d.papers:
        for b in p.summary:
            render_inline(b.text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_random_text_raises_only_digest_error(text: str) -> None:
    _check_total(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_raise_only_digest_error(raw: bytes) -> None:
    _check_total(raw.decode("utf-8", errors="replace"))


_LINES = st.sampled_from(
    [
        "## Daily Papers (2024-05-15)",
        "### [T](https://arxiv.org/abs/2405.1)",
        "### [",
        "### [a](",
        "Vote: 7",
        "Vote: -",
        "Vote:",
        "Authors: ['a', +",
        "Authors: [",
        "Authors: a, +",
        "![](",
        "![](x)",
        "<video src='",
        "[Watch Video]",
        "- **x**:",
        "  - y",
        "1) z",
        "***",
        "",
        "\x00\x1b",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_LINES, st.text(max_size=40)), max_size=40))
def test_digest_shaped_noise_raises_only_digest_error(lines: list[str]) -> None:
    _check_total("\n".join(lines))


_SEED = (ROOT / "digests" / "2024" / "05" / "15.md").read_text(encoding="utf-8")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(_SEED)))
def test_truncated_real_digest_raises_only_digest_error(cut: int) -> None:
    _check_total(_SEED[:cut])


def test_control_characters_are_dropped() -> None:
    d = parse(
        "## Daily Papers (2024-01-02)\n### [A\x00B\x1b](https://arxiv.org/abs/2401.1)\n"
        "- x\x0by\ufffe\n",
        source="c.md",
    )
    assert d.papers[0].title == "AB" and d.papers[0].summary[0].text == "xy"


def test_find_digests_is_recursive_and_skips_readme(tmp_path: Path) -> None:
    (tmp_path / "2024" / "05").mkdir(parents=True)
    (tmp_path / "2024" / "05" / "15.md").write_text("x")
    (tmp_path / "README.md").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    assert find_digests(tmp_path) == [tmp_path / "2024" / "05" / "15.md"]
    assert find_digests(tmp_path / "missing") == []
