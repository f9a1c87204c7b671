"""The on-disk caches of per-edition work (publisher/caches.py): the CSS inlining of an
edition, its Markdown, Jinja's compiled templates, and the note of a secret found strong. A hit
gives the very bytes a miss would, a changed input is a miss, a damaged or unwritable cache is
worked around, and a send whose edition is cached loads neither premailer nor markdown-it.
(tests/conftest.py gives each test an empty cache folder.)"""

from __future__ import annotations

import dataclasses
import email
import mailbox
import os
import shutil
import subprocess
import sys
import time
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest

from publisher import caches, markdown, templating, tokens
from publisher.caches import MAX_ENTRIES, cache_root, inline_css
from publisher.config import load_config
from publisher.digest import parse_file
from publisher.errors import PublisherError
from publisher.newsletter import render_newsletter
from publisher.tokens import check_secret

from .conftest import shipped_copy
from .deliveryhelpers import SAMPLE

ROOT = Path(__file__).resolve().parent.parent
SECRET = "gZIlGIcxRCoFkrc6iztO8B2urlwz9ZpEebazRyrf5OM"
HTML = (
    "<html><head><style>p { color: red } .x { font-weight: bold }"
    " @media (max-width: 600px) { p { color: blue } }</style></head>"
    '<body><p class="x">__PUBLISHER_READER_EMAIL__</p></body></html>'
)


def entries() -> list[Path]:
    root = cache_root()
    assert root is not None
    return sorted((root / "inline").glob("*.html"))


def no_premailer(html: str) -> str:
    raise AssertionError("premailer ran although this input is in the cache")


def test_a_second_inlining_of_the_same_html_is_read_back_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = inline_css(HTML)
    assert 'style="color:red; font-weight:bold"' in first  # premailer did inline it
    assert len(entries()) == 1
    monkeypatch.setattr(caches, "_premailer", no_premailer)
    assert inline_css(HTML) == first


def test_a_changed_input_is_inlined_again_in_an_entry_of_its_own() -> None:
    first = inline_css(HTML)
    changed = inline_css(HTML.replace("color: red", "color: green"))
    assert "color:green" in changed and "color:red" not in changed
    assert "color:red" in first
    assert len(entries()) == 2


def test_a_damaged_entry_is_inlined_again_and_rewritten(monkeypatch: pytest.MonkeyPatch) -> None:
    good = inline_css(HTML)
    (entry,) = entries()
    entry.write_bytes(entry.read_bytes().replace(b"color:red", b"color:RED"))
    assert inline_css(HTML) == good  # not the damaged bytes: the checksum caught them
    monkeypatch.setattr(caches, "_premailer", no_premailer)
    assert inline_css(HTML) == good  # and the entry was written again, whole


def test_a_cache_folder_that_cannot_be_written_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails
    inlined = inline_css(HTML)
    assert 'style="color:red; font-weight:bold"' in inlined
    assert inline_css(HTML) == inlined
    assert blocker.read_text() == "not a folder"


def test_old_and_surplus_entries_are_removed_when_one_is_written() -> None:
    inline_css(HTML)
    (entry,) = entries()
    folder = entry.parent
    now = time.time()
    for n in range(MAX_ENTRIES + 5):
        extra = folder / f"{n:064x}.html"
        extra.write_bytes(entry.read_bytes())
        os.utime(extra, (now - n, now - n))  # extra 0 the newest
    stale = folder / f"{'f' * 64}.html"
    stale.write_bytes(entry.read_bytes())
    os.utime(stale, (now - 31 * 86400, now - 31 * 86400))
    inline_css(HTML.replace("red", "teal"))
    left = entries()
    assert len(left) == MAX_ENTRIES
    assert stale not in left
    assert folder / f"{0:064x}.html" in left  # the newest stay
    assert folder / f"{MAX_ENTRIES + 4:064x}.html" not in left


def test_a_newsletter_from_the_cache_is_the_one_premailer_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = load_config(ROOT / "config.toml")
    digest = parse_file(SAMPLE)
    made = render_newsletter(digest, cfg)
    monkeypatch.setattr(caches, "_premailer", no_premailer)
    again = render_newsletter(digest, cfg)
    assert again.html == made.html and again.text == made.text


def test_inlining_an_edition_never_validates_its_css(monkeypatch: pytest.MonkeyPatch) -> None:
    # Validation changes nothing premailer writes but compiles cssutils's whole property
    # grammar on a process's first edition (publisher/caches.py's _premailer).
    from cssutils.css.property import Property

    validated: list[str] = []
    monkeypatch.setattr(Property, "validate", lambda self: validated.append(self.name))
    cfg = load_config(ROOT / "config.toml")
    made = render_newsletter(parse_file(SAMPLE), cfg)
    assert 'class="thumb"' in made.html and "style=" in made.html  # inlined, with its images
    assert validated == []


def test_a_template_that_floats_an_image_still_gets_outlooks_align() -> None:
    floated = HTML.replace("</style>", " img { float: right }</style>").replace(
        "</p>", '</p><img src="https://example.com/a.png">'
    )
    assert 'align="right"' in inline_css(floated)
    assert "align=" not in inline_css(HTML.replace("</p>", '</p><img src="https://e.com/a.png">'))


def test_inlining_loads_requests_only_if_premailer_uses_it(tmp_path: Path) -> None:
    # premailer imports requests (80 ms) for fetches allow_network=False never makes.
    probe = (
        "import sys\n"
        "from publisher.caches import inline_css\n"
        f"html = inline_css({HTML!r})\n"
        "assert 'style=\"color:red; font-weight:bold\"' in html, html\n"
        "print(sorted(m for m in ('requests', 'urllib3') if m in sys.modules))\n"
        "import premailer.premailer, requests\n"
        "print(premailer.premailer.requests.get is requests.get)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.split("\n")[:2] == ["[]", "True"]


def test_processes_missing_one_entry_together_make_it_once(tmp_path: Path) -> None:
    # Three senders started together on one machine: one inlines the edition, two read it.
    made, go = tmp_path / "made", tmp_path / "go"
    probe = (
        "import hashlib, os, sys, time\n"
        "from pathlib import Path\n"
        "from publisher import caches\n"
        "real = caches._premailer\n"
        "def slow(html):\n"
        f"    with open({str(made)!r}, 'a') as fh: fh.write(f'{{os.getpid()}}\\n')\n"
        "    time.sleep(0.5)  # long enough for the others to miss the entry too\n"
        "    return real(html)\n"
        "caches._premailer = slow\n"
        f"while not Path({str(go)!r}).exists(): time.sleep(0.005)\n"
        f"print(hashlib.sha256(caches.inline_css({HTML!r}).encode()).hexdigest())\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for _ in range(3)
    ]
    time.sleep(1.0)  # each has imported publisher and waits for "go"
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert len(made.read_text().split()) == 1  # premailer ran in one process
    assert len({out for out, _ in outs}) == 1  # and all three have its bytes


def test_markdown_rendered_once_is_read_back_and_a_changed_text_is_rendered_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = ["see https://example.com/a and **this**", "<b>raw</b> `code`", "plain"]
    first = markdown.render_all(texts + ["plain"])  # a repeated text is rendered once
    assert first == {t: markdown.render_inline(t) for t in texts}
    assert '<a href="https://example.com/a">' in first[texts[0]]
    assert (
        "&lt;b&gt;raw&lt;/b&gt;" in first[texts[1]]
    )  # escaped, from the cache as from the renderer
    root = cache_root()
    assert root is not None
    assert len(list((root / "markdown").glob("*.json"))) == 1

    def no_render(text: str) -> str:
        raise AssertionError("markdown-it ran for texts already rendered")

    monkeypatch.setattr(markdown, "render_inline", no_render)
    assert markdown.render_all(reversed(texts)) == first  # the same set, in any order
    with pytest.raises(AssertionError, match="markdown-it ran"):
        markdown.render_all([*texts, "one more"])


def test_a_secret_found_strong_is_not_estimated_again_and_its_note_names_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert check_secret(SECRET, "config.toml", "PUBLISHER_SECRET") == SECRET.encode()
    root = cache_root()
    assert root is not None
    notes = list((root / "strong-secrets").iterdir())
    assert len(notes) == 1 and notes[0].read_bytes() == b""
    assert SECRET not in notes[0].name and notes[0].stat().st_mode & 0o077 == 0
    assert (root / "strong-secrets").stat().st_mode & 0o077 == 0

    def no_estimate(value: str) -> float:
        raise AssertionError("zxcvbn ran for a secret already found strong")

    monkeypatch.setattr(tokens, "secret_strength", no_estimate)
    assert check_secret(SECRET, "config.toml", "PUBLISHER_SECRET") == SECRET.encode()
    # A higher bar, or another secret, is estimated afresh.
    assert not caches.known_strong(SECRET, tokens.MIN_SECRET_GUESSES_LOG10 + 1)
    assert not caches.known_strong(SECRET[:-1] + "x", tokens.MIN_SECRET_GUESSES_LOG10)


def test_a_cache_folder_that_cannot_be_looked_into_leaves_the_secret_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A note that cannot even be looked for (here a name too long; in CI, another user's
    cache folder, as `publisher send` run as nobody found it) is no error: zxcvbn decides."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ("x" * 300)))
    assert check_secret(SECRET, "config.toml", "PUBLISHER_SECRET") == SECRET.encode()
    with pytest.raises(PublisherError, match="too weak"):
        check_secret("mynewsletter-secret-key-2024-prod", "config.toml", "PUBLISHER_SECRET")


def test_a_weak_secret_is_refused_every_time_and_never_noted() -> None:
    for _ in range(2):
        with pytest.raises(PublisherError, match="too weak"):
            check_secret("mynewsletter-secret-key-2024-prod", "config.toml", "PUBLISHER_SECRET")
    root = cache_root()
    assert root is not None
    assert not (root / "strong-secrets").exists()


def test_compiled_templates_are_kept_and_a_changed_template_is_compiled_again(
    tmp_path: Path,
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    shipped = load_config(ROOT / "config.toml")
    cfg = dataclasses.replace(shipped, site=dataclasses.replace(shipped.site, templates=templates))
    digest = parse_file(SAMPLE)

    def render() -> str:
        templating._env.cache_clear()  # a new process: the compiled code only from the disk
        return render_newsletter(digest, cfg).html

    first = render()
    root = cache_root()
    assert root is not None
    compiled = list(root.glob("jinja-*/*.jinja"))
    assert compiled, "no compiled template was written"
    for path in compiled:  # damaged files are compiled again, never an error
        path.write_bytes(b"j2 damaged")
    assert render() == first
    page = templates / "email" / "newsletter.html"
    page.write_text(page.read_text("utf-8").replace("</body>", "<p>restyled</p></body>"))
    assert "restyled" in render()


def html_part(path: Path) -> str:
    (message,) = list(mailbox.Maildir(str(path), create=False))
    parsed = email.message_from_bytes(message.as_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(("html",))
    assert body is not None
    return body.get_content()


@pytest.mark.subprocess
def test_a_send_of_an_edition_already_inlined_does_not_load_premailer(tmp_path: Path) -> None:
    env = {**os.environ, "PUBLISHER_SECRET": SECRET}
    parts, loaded = [], []
    for n in (1, 2):
        cfg = shipped_copy(tmp_path / f"project{n}")
        (cfg.parent / "subscribers" / "subscribers.csv").write_text(
            "email,name\nreader@example.com,Reader\n"
        )
        sent = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "publisher.cli", "send"]
            + ["--config", str(cfg), "--digest", str(SAMPLE)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert sent.returncode == 0, sent.stderr[-2000:]
        loaded.append(
            tuple(f"| {module}" in sent.stderr for module in ("premailer", "markdown_it", "zxcvbn"))
        )
        parts.append(html_part(cfg.parent / "outbox"))
    # The second send finds the edition inlined, its Markdown rendered, the secret known strong.
    assert loaded == [(True, True, True), (False, False, False)]
    assert parts[0] == parts[1]  # the same reader's email, whichever way it was made
