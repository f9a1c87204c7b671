"""The newsletter email: rendering, size budget, MIME structure, headers, DKIM, and the dry run.

Every message is parsed back with the standard email package (policy.default); HTML is read
with html.parser, not searched for substrings where structure matters.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email
import email.policy
import os
import re
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import dkim
import jinja2
import premailer
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from publisher.cli import cli
from publisher.config import Config, DkimConfig, load_config
from publisher.digest import Bullet, Digest, Paper, parse, parse_file
from publisher.errors import ConfigError
from publisher.mailer import MessageFactory
from publisher.mime import AddressError, encode_unstructured, sender_domain
from publisher.newsletter import (
    PLACEHOLDER_EMAIL,
    PLACEHOLDER_PREFERENCES,
    PLACEHOLDER_UNSUBSCRIBE,
    PLACEHOLDERS,
    Newsletter,
    render_newsletter,
)
from publisher.tokens import Signer, read, sign, verify
from publisher.urls import day_url, unsubscribe_url

from .conftest import (
    FIXTURES,
    ROOT,
    corpus_files,
    largest_corpus_digest,
    needs_corpus,
    one_error_line,
    paper_ids,
    run_publisher,
    shipped_copy,
)

SECRET = b"v1ugk1HAguTl5BdxewuTaqkABWjfgRW3v_xQ9OqKOMM"
SAMPLE = ROOT / "digests" / "2024" / "05" / "15.md"
CFG = load_config(ROOT / "config.toml")


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(ROOT / "config.toml")


@pytest.fixture(scope="module")
def sample_newsletter(cfg: Config) -> Newsletter:
    return render_newsletter(parse_file(SAMPLE), cfg)


def parse_message(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def raw_header(raw: bytes, name: str) -> str:
    """A header's raw value as it is on the wire, folding (CRLF + space) included."""
    lines = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower() + ":"):
            value = [line[len(name) + 1 :]]
            value += [c for c in _continuations(lines[i + 1 :])]
            return "\r\n".join(value)
    raise AssertionError(f"no {name} header")


def _continuations(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if line[:1] not in (" ", "\t"):
            break
        out.append(line)
    return out


class _Html(HTMLParser):
    """Collects start tags, links and text of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read_html(html: str) -> _Html:
    p = _Html()
    p.feed(html)
    p.close()
    return p


def digest_of(*papers: Paper, date: dt.date = dt.date(2024, 5, 15)) -> Digest:
    return Digest(date=date, papers=papers, source="<test>")


def paper(n: int, **kw: object) -> Paper:
    fields: dict[str, object] = {
        "title": f"Paper number {n}",
        "url": f"https://arxiv.org/abs/2405.{n:05d}",
        "arxiv_id": f"2405.{n:05d}",
        "votes": n,
        "authors": ("A. Author", "B. Author"),
        "summary": (Bullet("A summary line about the paper.", label="What's New"),),
    }
    fields.update(kw)
    return Paper(**fields)  # type: ignore[arg-type]


# --- structure and headers ---------------------------------------------------------------------


def test_message_structure_and_headers(cfg: Config, sample_newsletter: Newsletter) -> None:
    raw = MessageFactory(sample_newsletter, cfg, SECRET).build("ada@example.com", "Ada Lovelace")
    assert b"\n" not in raw.replace(b"\r\n", b""), "every line ends with CRLF"
    msg = parse_message(raw)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert msg["From"].addresses[0].addr_spec == "papers@localhost"
    assert msg["To"].addresses[0].addr_spec == "ada@example.com"
    assert msg["To"].addresses[0].display_name == "Ada Lovelace"
    assert msg["Date"].datetime is not None
    assert msg["Message-ID"].endswith(f"@{sender_domain(cfg)}>")
    assert msg["List-Id"] == "Daily Papers <daily-papers.localhost>"
    assert msg["Subject"] == sample_newsletter.subject
    assert msg["Subject"].startswith("Daily Papers 2024-05-15: Coin3D")
    assert msg["MIME-Version"] == "1.0"
    assert not msg.defects and not any(p.defects for p in parts)
    # the footer carries this reader's address and unsubscribe URL; no placeholder is left
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for placeholder in PLACEHOLDERS:
        assert placeholder not in text and placeholder not in html
    assert "ada@example.com" in text
    page = read_html(html)
    assert sample_newsletter.day_url in page.links  # view in browser


@pytest.mark.parametrize(
    "name",
    [
        "Ada Lovelace",  # plain atoms: written as they are (the fast path)
        "O'Brien-Smith #2",
        "Dr. Who",  # a period: quoted
        'say "hi", (c) <x>',  # specials: quoted and escaped
        "김 연구원",  # not ASCII: an encoded word
        "  spaced\tout\nname  ",
    ],
)
def test_a_readers_display_name_comes_back_as_written(
    cfg: Config, sample_newsletter: Newsletter, name: str
) -> None:
    """The To header's display name, whatever its characters, parses back (standard `email`
    package) to the name as one line, and the address stays the address."""
    raw = MessageFactory(sample_newsletter, cfg, SECRET).build("ada@example.com", name)
    to = parse_message(raw)["To"].addresses[0]
    assert to.display_name == " ".join(name.split())
    assert to.addr_spec == "ada@example.com"


def test_one_click_unsubscribe_headers(cfg: Config, sample_newsletter: Newsletter) -> None:
    raw = MessageFactory(sample_newsletter, cfg, SECRET).build("grace@example.com", "", 42)
    msg = parse_message(raw)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    targets = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
    assert len(targets) == 2
    web, mailto = targets
    assert re.match(r"^https?://", web) and mailto.startswith("mailto:")
    token = web.rsplit("/", 1)[1]
    assert web == unsubscribe_url(cfg, token)
    assert read([SECRET], token, "unsubscribe").subscriber_id == 42  # an id, not the address
    # the same URL is the visible unsubscribe link of both parts
    assert web in read_html(msg.get_body(("html",)).get_content()).links
    assert web in msg.get_body(("plain",)).get_content()
    # folded, never turned into encoded-words (clients do not decode them in List-*)
    for name in ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"):
        assert "=?" not in raw_header(raw, name)
        assert all(len(line) <= 998 for line in raw_header(raw, name).split("\r\n"))


def test_long_list_unsubscribe_folds_without_encoded_words(cfg: Config) -> None:
    long = dataclasses.replace(
        cfg, site=dataclasses.replace(cfg.site, base_url="https://" + "n" * 60 + ".example.org/")
    )
    nl = render_newsletter(digest_of(paper(1)), long)
    addr = "a.very.long.local.part.for.testing.folding@" + "sub." * 10 + "example.org"
    raw = MessageFactory(nl, long, SECRET).build(addr, "", 7)
    value = raw_header(raw, "List-Unsubscribe")
    assert "\r\n " in value and "=?" not in value
    web = re.findall(r"<([^>]+)>", parse_message(raw)["List-Unsubscribe"])[0]
    assert read([SECRET], web.rsplit("/", 1)[1], "unsubscribe").subscriber_id == 7


# --- subject and header safety -----------------------------------------------------------------


def test_korean_subject_round_trips(cfg: Config) -> None:
    title = "대규모 언어 모델의 추론: <think> 토큰과 =?utf-8?q?가짜?= 인코딩 " * 2
    ko = dataclasses.replace(
        cfg, email=dataclasses.replace(cfg.email, subject="데일리 페이퍼 {date} — {first_title}")
    )
    nl = render_newsletter(digest_of(paper(1, title=title)), ko)
    raw = MessageFactory(nl, ko, SECRET).build("ada@example.com")
    subject = parse_message(raw)["Subject"]
    assert subject == nl.subject
    assert subject.startswith("데일리 페이퍼 2024-05-15 — 대규모 언어 모델의 추론: <think>")
    assert all(len(line) <= 78 for line in raw_header(raw, "Subject").split("\r\n"))


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_any_subject_decodes_back_exactly(text: str) -> None:
    expected = " ".join(text.split())
    msg = email.message_from_bytes(
        f"Subject: {encode_unstructured(text, 7)}\r\n\r\n".encode(), policy=email.policy.default
    )
    assert msg["Subject"] == expected


def test_crlf_in_data_cannot_inject_a_header(cfg: Config) -> None:
    evil = paper(1, title="Harmless\r\nBcc: x@example.org", authors=("Eve\r\nBcc: y@example.org",))
    nl = render_newsletter(digest_of(evil), cfg)
    raw = MessageFactory(nl, cfg, SECRET).build("ada@example.com", "Ada\r\nBcc: z@example.org")
    msg = parse_message(raw)
    assert msg["Bcc"] is None
    assert "Bcc: x@example.org" in msg["Subject"]  # shown as text on the subject line
    assert msg["To"].addresses[0].addr_spec == "ada@example.com"
    names = [k.lower() for k in msg]
    assert sorted(names) == sorted(
        [
            "to",
            "date",
            "message-id",
            "list-unsubscribe",
            "from",
            "subject",
            "mime-version",
            "list-id",
            "list-unsubscribe-post",
            "feedback-id",
            "content-type",
        ]
    )
    factory = MessageFactory(nl, cfg, SECRET)
    for bad in ("ada@example.com\r\nBcc: x@example.org", "a b@example.com", "nobody", "<a@b>"):
        with pytest.raises(AddressError):
            factory.build(bad)


def test_pseudo_tags_show_as_text_in_both_parts(cfg: Config) -> None:
    p = paper(
        1,
        title="Reasoning with <think> tokens",
        summary=(Bullet("The model emits <think> then <EOS>.", label="What's New"),),
    )
    raw = MessageFactory(render_newsletter(digest_of(p), cfg), cfg, SECRET).build("a@example.com")
    msg = parse_message(raw)
    text = msg.get_body(("plain",)).get_content()
    assert "Reasoning with <think> tokens" in text
    assert "What's New: The model emits <think> then <EOS>." in text
    page = read_html(msg.get_body(("html",)).get_content())
    assert "think" not in page.tags and "eos" not in page.tags
    shown = "".join(page.text)
    assert "Reasoning with <think> tokens" in shown
    assert "The model emits <think> then <EOS>." in shown


def test_html_layout_essentials(cfg: Config, sample_newsletter: Newsletter) -> None:
    html = sample_newsletter.html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "prefers-color-scheme: dark" in html
    assert 'role="presentation"' in html
    assert "max-width:600px" in html.replace(" ", "")
    page = read_html(html)
    # every paper: linked title, thumbnail with alt text and a width
    for p in parse_file(SAMPLE).papers:
        assert p.url in page.links
    imgs = re.findall(r"<img [^>]*>", html)
    assert imgs and all(' alt="' in i and ' width="558"' in i for i in imgs)
    # CSS went inline (once, by premailer); only the media queries stay in <style>
    assert 'class="card" style="' in html


def test_authors_shortened_with_et_al(cfg: Config) -> None:
    names = tuple(f"Author {i}" for i in range(8))
    en = dataclasses.replace(cfg, site=dataclasses.replace(cfg.site, language="en"))
    nl = render_newsletter(digest_of(paper(1, authors=names)), en)
    assert "Author 0, Author 1, Author 2, Author 3, Author 4 et al." in nl.text
    assert "Author 5" not in nl.text
    assert "View in browser" in nl.text and "Unsubscribe" in nl.text


# --- size budget -------------------------------------------------------------------------------


def html_part_as_sent(raw: bytes) -> bytes:
    """The HTML part's body as transmitted (base64 lines, CRLF), read from the message."""
    part = parse_message(raw).get_body(("html",))
    assert part is not None and part["Content-Transfer-Encoding"] == "base64"
    return part.get_payload().encode("ascii")


def substituted(nl: Newsletter, address: str, unsubscribe_url: str) -> str:
    """The newsletter's HTML with the placeholders replaced by hand: what the mailer's fast
    substitution must produce (the preferences link carries the unsubscribe link's token)."""
    html = nl.html.replace(PLACEHOLDER_EMAIL, str(escape(address)))
    prefs = unsubscribe_url.replace("/unsubscribe/", "/preferences/")
    html = html.replace(PLACEHOLDER_PREFERENCES, str(escape(prefs)))
    return html.replace(PLACEHOLDER_UNSUBSCRIBE, str(escape(unsubscribe_url)))


def html_of(raw: bytes) -> str:
    part = parse_message(raw).get_body(("html",))
    assert part is not None
    return part.get_content()


def assert_every_paper_present_or_linked(digest: Digest, nl: Newsletter, budget: int) -> None:
    html_after = html_of(MessageFactory(nl, CFG, SECRET).build("someone@example.com"))
    assert len(html_after.replace("\r\n", "\n").encode()) <= budget
    # The budget holds for the part as sent (base64), the larger of Gmail's two readings, with
    # a long address, name and unsubscribe URL substituted.
    cfg = dataclasses.replace(CFG, email=dataclasses.replace(CFG.email, max_html_bytes=budget))
    long_addr = "a" * 60 + "@" + "b" * 60 + ".example.com"
    raw = MessageFactory(nl, cfg, SECRET).build(long_addr, "이름" * 20)
    sent = html_part_as_sent(raw)
    assert len(sent) <= budget, (digest.date, len(sent))
    url = re.search(r"<(https?://[^>]+)>", parse_message(raw)["List-Unsubscribe"]).group(1)
    html_sent = substituted(nl, long_addr, url).replace("\n", "\r\n")
    assert base64.b64decode(sent).decode() == html_sent
    decided = nl.full + nl.shortened + nl.linked + nl.on_web
    assert sorted(decided) == sorted(p.key for p in digest.papers)
    links = set(read_html(nl.html).links)
    for p in digest.papers:
        if p.key in nl.on_web:
            assert nl.day_url in links  # the day's page lists it
        elif p.url.startswith("http"):
            assert p.url in links, p.key


def test_big_day_degrades_shorter_summaries_first(cfg: Config) -> None:
    long_summary = tuple(Bullet("긴 요약 문장입니다. " * 20, label=f"L{i}") for i in range(6))
    papers = [paper(i, summary=long_summary) for i in range(1, 41)]
    digest = digest_of(*papers)
    for budget in (95_000, 60_000, 30_000, 7_000):
        small = dataclasses.replace(
            cfg, email=dataclasses.replace(cfg.email, max_html_bytes=budget)
        )
        nl = render_newsletter(digest, small)
        assert_every_paper_present_or_linked(digest, nl, budget)
        # the least-voted papers give way first: every kept form is ranked by votes
        rank = {"full": 3, "short": 2, "title": 1, "web": 0}
        form = {k: f for f, keys in zip(rank, (nl.full, nl.shortened, nl.linked, nl.on_web),
                                        strict=True) for k in keys}  # fmt: skip
        by_votes = [rank[form[p.key]] for p in sorted(papers, key=lambda p: p.votes or 0)]
        assert by_votes == sorted(by_votes)
        if nl.on_web:
            en_count = f"{len(nl.on_web)}편"
            assert en_count in nl.html and nl.day_url in nl.text
    assert nl.on_web and not nl.full  # the smallest budget needed the web link


@needs_corpus
def test_the_largest_corpus_day_fits(cfg: Config) -> None:
    path = largest_corpus_digest()  # the day with the most papers, counted from the corpus
    digest = parse_file(path)
    assert len(digest.papers) == len(paper_ids(path.read_text(encoding="utf-8")))
    nl = render_newsletter(digest, cfg)
    assert_every_paper_present_or_linked(digest, nl, cfg.email.max_html_bytes)
    assert nl.shortened or nl.linked  # it did have to degrade


@needs_corpus
def test_every_corpus_digest_fits_with_every_paper_present_or_linked(cfg: Config) -> None:
    files = corpus_files()
    assert len(files) >= 250
    for path in files:
        digest = parse_file(path)
        nl = render_newsletter(digest, cfg)
        assert_every_paper_present_or_linked(digest, nl, cfg.email.max_html_bytes)


# --- rendering cost ----------------------------------------------------------------------------


def test_per_reader_work_is_substitution_only(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"premailer": 0, "jinja": 0}
    transform, render = premailer.Premailer.transform, jinja2.Template.render

    def counting_transform(self: premailer.Premailer, *a: object, **k: object) -> str:
        calls["premailer"] += 1
        return transform(self, *a, **k)

    def counting_render(self: jinja2.Template, *a: object, **k: object) -> str:
        calls["jinja"] += 1
        return render(self, *a, **k)

    monkeypatch.setattr(premailer.Premailer, "transform", counting_transform)
    monkeypatch.setattr(jinja2.Template, "render", counting_render)
    nl = render_newsletter(parse_file(SAMPLE), cfg)
    assert calls == {"premailer": 1, "jinja": 2}  # HTML and text, once each
    factory = MessageFactory(nl, cfg, SECRET)
    messages = [factory.build(f"reader{i}@example.com", f"Reader {i}") for i in range(50)]
    assert calls == {"premailer": 1, "jinja": 2}
    # ...and each message still carries its own reader
    last = parse_message(messages[-1])
    assert "reader49@example.com" in last.get_body(("plain",)).get_content()
    assert len({parse_message(m)["Message-ID"] for m in messages}) == 50


# --- DKIM --------------------------------------------------------------------------------------


def test_dkim_signature_verifies_offline(cfg: Config, sample_newsletter: Newsletter) -> None:
    keys = FIXTURES / "dkim"
    signed = dataclasses.replace(
        cfg,
        email=dataclasses.replace(
            cfg.email,
            dkim=DkimConfig(selector="news", domain="localhost", key_file=keys / "test.key"),
        ),
    )
    raw = MessageFactory(sample_newsletter, signed, SECRET).build("ada@example.com", "에이다")
    assert raw.startswith(b"DKIM-Signature:")
    public = "".join(
        line for line in (keys / "test.pub").read_text().splitlines() if "-----" not in line
    )
    asked: list[bytes] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return f"v=DKIM1; k=rsa; p={public}".encode()

    assert dkim.verify(raw, dnsfunc=dnsfunc)
    assert asked == [b"news._domainkey.localhost."]
    msg = parse_message(raw)
    signed_headers = re.search(r"\bh=([^;]+)", msg["DKIM-Signature"]).group(1)
    signed_names = {h.strip().lower() for h in re.sub(r"\s", "", signed_headers).split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject", "to"} <= signed_names
    # a changed unsubscribe URL breaks the signature
    tampered = raw.replace(b"/unsubscribe/", b"/unsubscribX/", 1)
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)


# --- dry run -----------------------------------------------------------------------------------


def test_send_dry_run_on_the_shipped_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = shipped_copy(tmp_path / "site")
    cfg = load_config(config)
    monkeypatch.delenv(cfg.web.secret_env, raising=False)
    state = Path(cfg.database_url.removeprefix("sqlite:///"))
    assert state.is_relative_to(tmp_path)  # the copy's own state path, not the checkout's
    out = tmp_path / "preview"
    result = CliRunner().invoke(
        cli, ["send", "--dry-run", "--config", str(config), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "2025-04-11" in result.output  # the newest sample digest, by date
    assert "recipients: 3" in result.output
    assert "preview secret" in result.output
    assert (out / "preview.html").is_file()
    emls = sorted(out.glob("*.eml"))
    assert [e.name for e in emls] == [
        "ada@example.com.eml",
        "alan@example.com.eml",
        "grace@example.com.eml",
    ]
    for eml in emls:
        msg = parse_message(eml.read_bytes())
        assert msg["To"].addresses[0].addr_spec == eml.name.removesuffix(".eml")
        assert msg["Subject"].startswith("Daily Papers 2025-04-11: ")
    page = read_html((out / "preview.html").read_text(encoding="utf-8"))
    assert day_url(cfg, dt.date(2025, 4, 11)) in page.links
    assert not state.exists() and not state.parent.exists()  # no state database written
    assert not cfg.smtp.outbox.exists()  # and nothing put in the outbox


def test_send_dry_run_with_digest_and_to(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "send",
            "--dry-run",
            "--config",
            str(ROOT / "config.toml"),
            "--digest",
            str(SAMPLE),
            "--to",
            "me@example.org",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    msg = parse_message((tmp_path / "me@example.org.eml").read_bytes())
    assert msg["To"].addresses[0].addr_spec == "me@example.org"
    assert "2024-05-15" in msg["Subject"]
    # the size line reports the HTML part as sent (what the budget counts) and decoded
    sent = len(html_part_as_sent((tmp_path / "me@example.org.eml").read_bytes()))
    decoded = len(msg.get_body(("html",)).get_content().encode())
    assert f"html part:  {sent:,} bytes as sent, {decoded:,} decoded (budget 95,000 as sent)" in (
        result.output
    )


def test_send_without_a_secret_is_one_line_and_sends_nothing(tmp_path: Path) -> None:
    """A real send needs the signing secret: without it, `publisher send` (the installed entry
    point, in a subprocess) exits 1 with one line naming the variable, and writes no outbox
    message and no state database."""
    config = shipped_copy(tmp_path)
    cfg = load_config(config)
    env = {k: v for k, v in os.environ.items() if k != cfg.web.secret_env}
    r = run_publisher("send", "--config", str(config), cwd=tmp_path, env=env)
    assert cfg.web.secret_env in one_error_line(r)  # exit 1, one line, no traceback
    assert not cfg.smtp.outbox.exists()
    assert not Path(cfg.database_url.removeprefix("sqlite:///")).exists()


def test_text_part_is_real_text(cfg: Config, sample_newsletter: Newsletter) -> None:
    text = sample_newsletter.text
    assert "<" not in text.replace("<think>", "")  # no markup
    first = parse_file(SAMPLE).papers[0]
    assert f"1. {first.title}\n   {first.url}\n" in text
    digest = parse("## Daily Papers (2024-05-15)\n\n### [T](https://arxiv.org/abs/2405.00001)\n"
                   "- **What's New**: a *bold* claim\n  - (1) nested\n")  # fmt: skip
    nl = render_newsletter(digest, cfg)
    assert " - What's New: a bold claim\n    - (1) nested\n" in nl.text


@pytest.mark.parametrize("subject", ["ada@example.com", "읽는이@예시.한국", ""])
def test_signer_makes_the_same_tokens_as_sign(subject: str) -> None:
    # MessageFactory signs every unsubscribe link with a Signer; the web server checks them
    # with verify(), which recomputes sign()'s HMAC.
    for secret in (b"s", b"a much longer secret " * 8):
        token = Signer(secret, "unsubscribe").sign(subject)
        assert token == sign(secret, "unsubscribe", subject)
        assert verify(secret, token, "unsubscribe") == subject
        assert Signer(secret, "confirm").sign(subject) != token


# --- how readers, phones and filters see it (issue 13) -----------------------------------------


def test_titles_are_headings_in_labelled_landmarks(cfg: Config) -> None:
    from lxml import html as lxml_html

    digest = parse_file(SAMPLE)
    nl = render_newsletter(digest, cfg)
    factory = MessageFactory(nl, cfg, SECRET)
    doc = lxml_html.fromstring(html_of(factory.build("a@example.com", subscriber_id=1)))
    assert [h.text_content() for h in doc.iter("h1")] == [cfg.site.title]
    titles = [h.text_content() for h in doc.xpath("//h2[contains(@class, 'title')]")]
    assert titles == [p.title for p in digest.papers]  # one h2 per paper, in order
    roles = {e.get("role"): e for e in doc.xpath("//*[@role='banner' or @role='main' or "
                                                 "@role='contentinfo']")}  # fmt: skip
    assert sorted(roles) == ["banner", "contentinfo", "main"]
    assert all(e.get("aria-label") for e in roles.values())
    # the headings and cards are inside main, the unsubscribe link inside contentinfo
    assert len(roles["main"].xpath(".//h2")) == len(digest.papers)
    assert roles["contentinfo"].xpath(f".//a[@href='{factory.unsubscribe_url(1)}']")
    # a thumbnail's alt text does not repeat the title next to it (shown when images are blocked)
    imgs = doc.xpath("//img")
    assert imgs
    for img in imgs:
        alt = img.get("alt")
        assert alt and alt not in titles


def test_preheader_is_hidden_without_tiny_font(cfg: Config, sample_newsletter: Newsletter) -> None:
    from lxml import html as lxml_html

    body = lxml_html.fromstring(sample_newsletter.html).find("body")
    preheader = body[0]
    style = preheader.get("style").replace(" ", "")
    assert "display:none" in style
    assert parse_file(SAMPLE).papers[0].title in preheader.text_content()
    # font-size:1px;line-height:1px is what SpamAssassin scores (FONT_INVIS_MSGID)
    assert "font-size" not in style and "line-height" not in style


def test_korean_keeps_words_and_long_words_wrap(cfg: Config, sample_newsletter: Newsletter) -> None:
    from lxml import html as lxml_html

    doc = lxml_html.fromstring(sample_newsletter.html)
    [container] = doc.xpath("//table[contains(@class, 'container')]")
    style = container.get("style").replace(" ", "")
    # inherited by every card, list and footer inside it
    assert "word-break:keep-all" in style and "overflow-wrap:anywhere" in style


def test_shortened_summaries_end_on_a_word_or_sentence_boundary(cfg: Config) -> None:
    words = [
        "대규모",
        "언어",
        "모델의",
        "추론",
        "능력을",
        "높이는",
        "새로운",
        "학습",
        "방법을",
        "제안한다",
    ]
    text = " ".join(words * 12) + ". 두 번째 문장은 더 짧다. " + " ".join(words * 6)
    papers = [paper(i, summary=(Bullet(text, label="요약"), Bullet(text))) for i in range(1, 31)]
    small = dataclasses.replace(cfg, email=dataclasses.replace(cfg.email, max_html_bytes=40_000))
    nl = render_newsletter(digest_of(*papers), small)
    assert nl.shortened
    shortened = re.findall(r"^ - (?:요약: )?(.*…)$", nl.text, re.MULTILINE)
    assert shortened
    for cut in shortened:
        kept = cut.removesuffix("…").rstrip()
        assert text.startswith(kept)
        # what follows the kept part in the original is a space: no word was cut
        assert text[len(kept)] == " ", cut


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["모델", "추론을", "LLM", "a.", "높인다.", "x" * 30]), min_size=1,
                max_size=60), st.integers(min_value=8, max_value=200))  # fmt: skip
def test_cut_never_splits_a_word(words: list[str], limit: int) -> None:
    from publisher.newsletter import _cut

    text = " ".join(words)
    cut = _cut(text, limit)
    assert len(cut) <= limit
    if cut == text:
        return
    kept = cut.removesuffix("…").rstrip()
    assert text.startswith(kept)
    if " " in text[: limit - 1]:
        assert text[len(kept)] == " ", (text, cut)


def test_subject_keeps_ascii_words_readable(cfg: Config) -> None:
    title = "Self-Rewarding Language Models Beat Larger Baselines " * 2  # cut with a trailing …
    nl = render_newsletter(digest_of(paper(1, title=title)), cfg)
    assert nl.subject.endswith("…")
    raw = MessageFactory(nl, cfg, SECRET).build("ada@example.com")
    on_wire = raw_header(raw, "Subject")
    assert parse_message(raw)["Subject"] == nl.subject
    # only the word carrying the "…" is an encoded-word; the rest is readable ASCII
    assert on_wire.count("=?utf-8?") == 1
    assert "Daily Papers 2024-05-15: Self-Rewarding Language Models" in " ".join(on_wire.split())
    assert all(len(line) <= 78 for line in on_wire.split("\r\n"))


def test_feedback_id_default_configured_and_signed(cfg: Config, tmp_path: Path) -> None:
    nl = render_newsletter(digest_of(paper(1)), cfg)
    msg = parse_message(MessageFactory(nl, cfg, SECRET).build("ada@example.com"))
    assert msg["Feedback-ID"] == "20240515:daily-papers:digest:localhost"
    mine = dataclasses.replace(
        cfg, email=dataclasses.replace(cfg.email, feedback_id="{date}:news:1:example.org")
    )
    msg = parse_message(MessageFactory(nl, mine, SECRET).build("ada@example.com"))
    assert msg["Feedback-ID"] == "20240515:news:1:example.org"
    # configurable from the TOML file, and a bad value is one line naming the key
    path = tmp_path / "config.toml"
    path.write_text('[email]\nfeedback_id = "campaign {date}"\n', encoding="utf-8")
    bad = load_config(path)
    assert bad.email.feedback_id == "campaign {date}"
    with pytest.raises(ConfigError, match=r"'email\.feedback_id'.*printable ASCII without spaces"):
        MessageFactory(nl, bad, SECRET)
    # DKIM covers it (Gmail's feedback loop needs it signed by the sending domain)
    key = FIXTURES / "dkim" / "test.key"
    signed = dataclasses.replace(
        cfg,
        email=dataclasses.replace(
            cfg.email,
            from_="Daily Papers <papers@example.org>",
            dkim=DkimConfig(selector="s1", domain="example.org", key_file=key),
        ),
    )
    raw = MessageFactory(nl, signed, SECRET).build("ada@example.com")
    sig = parse_message(raw)["DKIM-Signature"]
    h = re.search(r"\bh=([^;]+)", " ".join(sig.split())).group(1)
    assert "feedback-id" in h.replace(" ", "").lower().split(":")
