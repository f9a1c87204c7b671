"""`[digests] git`: the inbox as a managed clone of the digests' upstream repository.

The upstream is a real git repository on disk (a bare one, reached by a file:// URL) that the
tests commit to and push into, the way the real upstream's job does: days are added, a day is
edited after its email went out, the branch is force-pushed, a day is deleted. Every command is a
real `publisher` process; the email goes to the Maildir outbox (no SMTP server is configured),
whose files are counted."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import feedparser
import pytest

from publisher.config import load_config
from publisher.digest import find_digests, is_dated_name
from publisher.scheduler import Runner
from publisher.site import build_site

from .conftest import one_error_line, run_publisher
from .sitehelpers import digest_text, site_config, write_digest
from .upstream import Upstream, git

SECRET = base64.b64encode(os.urandom(32)).decode()
D14, D15, JUN3, D17 = (dt.date(2024, 5, 14), dt.date(2024, 5, 15), dt.date(2024, 6, 3),
                       dt.date(2024, 5, 17))  # fmt: skip


def project(tmp: Path, url: str, search: bool = False) -> Path:
    (tmp / "subs.csv").write_text("email,name\nada@example.com,Ada\nalan@example.com,Alan\n")
    (tmp / "config.toml").write_text(
        f"""
[site]
base_url = "https://papers.example.org/"
[digests]
inbox = "upstream"
git = "{url}"
git_branch = "main"
git_path = "paper_logs"
[feed]
output = "public"
search = {"true" if search else "false"}
[smtp]
outbox = "outbox"
[subscribers]
file = "subs.csv"
[state]
database = "state/publisher.sqlite3"
[schedule]
poll_seconds = 0.5
"""
    )
    return tmp / "config.toml"


def publisher(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PUBLISHER_SECRET": SECRET}
    return run_publisher(*args, "--config", str(cfg), cwd=cfg.parent, env=env)


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def entry_for(public: Path, date: dt.date) -> feedparser.FeedParserDict | None:
    parsed = feedparser.parse((public / "atom.xml").read_bytes())
    hits = [e for e in parsed.entries if e.link.endswith(f"/{date:%Y/%m/%d}/")]
    return hits[0] if hits else None


def mailed(tmp: Path) -> int:
    return len(list((tmp / "outbox" / "new").glob("*")))


def test_the_upstream_replayed_commit_by_commit(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    (up.work / "LICENSE.md").write_text("# MIT License\n\nNot a digest.\n")
    (up.work / "README.md").write_text("# daily papers\n")
    (up.work / "paper_logs" / "drafts").mkdir(parents=True)
    (up.work / "paper_logs" / "drafts" / "todo.md").write_text("- write more\n")
    write_digest(up.work / "elsewhere", dt.date(2024, 5, 13))  # dated, but outside git_path
    up.day(D14)
    up.day(D15)
    first = up.push("two days")
    cfg = project(tmp_path, up.url)
    public, clone = tmp_path / "public", tmp_path / "upstream"

    assert "cloned" in ok(publisher(cfg, "pull"))
    built = publisher(cfg, "build")
    # LICENSE.md, the drafts and the file outside paper_logs are not digests: no bad-digest line.
    assert built.returncode == 0 and built.stderr == "", built.stderr
    assert entry_for(public, D14) and entry_for(public, D15)
    assert entry_for(public, dt.date(2024, 5, 13)) is None

    ok(publisher(cfg, "send", "--digest", str(clone / "paper_logs/2024/05/15.md")))
    assert mailed(tmp_path) == 2
    before = entry_for(public, D15)
    assert before is not None

    # The day is edited upstream after its email went out: the entry updates in place (same
    # id, a later `updated`) and nobody is mailed again.
    up.day(D15, digest_text(D15, n=3))
    up.push("fix 15")
    assert "->" in ok(publisher(cfg, "pull"))
    ok(publisher(cfg, "build"))
    after = entry_for(public, D15)
    assert after is not None and after.id == before.id
    assert after.updated_parsed > before.updated_parsed
    assert "Paper 3 of 2024-05-15" in (public / "2024/05/15/index.html").read_text()
    ok(publisher(cfg, "send"))  # the newest digest is 2024-05-15, which every reader has
    assert mailed(tmp_path) == 2

    up.day(JUN3)
    up.push("june")
    ok(publisher(cfg, "pull"))
    ok(publisher(cfg, "build"))
    assert entry_for(public, JUN3) and (public / "2024/06/index.html").is_file()

    # Force-push: upstream history is rewritten back to the first commit plus another day. The
    # clone follows; June and the edit vanish from the site, the feeds and the sitemap.
    git(up.work, "reset", "-q", "--hard", first)
    up.day(D17)
    up.push("rewritten", force=True)
    ok(publisher(cfg, "pull"))
    assert not (clone / "paper_logs/2024/06").exists()
    built = publisher(cfg, "build")
    assert built.returncode == 0, built.stderr
    assert "pages removed" in built.stdout
    assert entry_for(public, JUN3) is None and entry_for(public, D17) is not None
    assert not (public / "2024/06").exists()  # the day page, the month page, their .gz/.br
    assert "/2024/06/" not in (public / "sitemap.xml").read_text()
    assert "Paper 3 of 2024-05-15" not in (public / "2024/05/15/index.html").read_text()

    # A day deleted upstream leaves the site too.
    git(up.work, "rm", "-q", "paper_logs/2024/05/17.md")
    up.push("drop 17")
    ok(publisher(cfg, "pull"))
    ok(publisher(cfg, "build"))
    assert entry_for(public, D17) is None
    assert not (public / "2024/05/17").exists()
    assert "2024/05/17" not in (public / "2024/05/index.html").read_text()
    assert "2024/05/17" not in (public / "feed.json").read_text()


def test_a_day_that_leaves_the_inbox_leaves_the_search_index(tmp_path: Path) -> None:
    cfg = site_config(tmp_path)
    write_digest(cfg.digests.inbox, D14)
    gone = write_digest(cfg.digests.inbox, D15)

    def indexed() -> set[str]:
        urls = set()
        for frag in (tmp_path / "public/pagefind/fragment").glob("*.pf_fragment"):
            data = gzip.decompress(frag.read_bytes()).removeprefix(b"pagefind_dcd")
            urls.add(json.loads(data)["url"])
        return urls

    build_site(cfg)
    assert indexed() == {"/2024/05/14/", "/2024/05/15/"}
    gone.unlink()
    report = build_site(cfg)
    assert report.searched and indexed() == {"/2024/05/14/"}
    assert [p.parent.name for p in report.removed] == ["15"]


def test_a_day_whose_file_is_broken_for_now_keeps_its_page(tmp_path: Path) -> None:
    cfg = site_config(tmp_path, search=False)
    write_digest(cfg.digests.inbox, D14)
    broken = write_digest(cfg.digests.inbox, D15)
    build_site(cfg)
    broken.write_text("half a file\n")  # an edit caught halfway: reported, page kept
    report = build_site(cfg)
    assert [p.path for p in report.problems] == [str(broken)]
    assert report.removed == () and (tmp_path / "public/2024/05/15/index.html").is_file()
    write_digest(cfg.digests.inbox, D15)  # fixed: the day comes back to the feeds
    assert build_site(cfg).ok and "2024/05/15" in (tmp_path / "public/feed.xml").read_text()


def test_day_named_files_are_what_a_clone_offers(tmp_path: Path) -> None:
    for name in ("2024/05/15.md", "2024-05-15.md", "20240515.md", "2024/05/2024-05-15.md"):
        assert is_dated_name(name), name
    for name in ("LICENSE.md", "drafts/todo.md", "2024/notes.md", "2024/05/15-draft.md"):
        assert not is_dated_name(name), name
    write_digest(tmp_path, D15)
    (tmp_path / "LICENSE.md").write_text("MIT\n")
    assert find_digests(tmp_path, dated_only=True) == [tmp_path / "2024/05/15.md"]
    assert len(find_digests(tmp_path)) == 2  # a plain inbox still reports every file


def test_a_pull_that_fails_is_one_line_and_leaves_the_inbox(tmp_path: Path) -> None:
    cfg = project(tmp_path, (tmp_path / "nowhere.git").as_uri())
    line = one_error_line(publisher(cfg, "pull"))
    assert "git clone failed" in line and "nowhere.git" in line
    # The inbox is someone's folder, not a clone: it is never overwritten.
    (tmp_path / "upstream").mkdir()
    (tmp_path / "upstream" / "mine.md").write_text("keep me\n")
    line = one_error_line(publisher(cfg, "pull"))
    assert "not a git clone" in line and (tmp_path / "upstream" / "mine.md").is_file()


@pytest.mark.parametrize(
    ("key", "value"),
    [("git_path", "../elsewhere"), ("git", "--upload-pack=touch /tmp/x"), ("git_branch", "")],
)
def test_git_settings_are_checked(tmp_path: Path, key: str, value: str) -> None:
    cfg = project(tmp_path, (tmp_path / "up.git").as_uri())
    text = cfg.read_text()
    old = next(line for line in text.splitlines() if line.startswith(f"{key} ="))
    cfg.write_text(text.replace(old, f"{key} = {json.dumps(value)}"))
    assert f"'digests.{key}'" in one_error_line(publisher(cfg, "pull"))


def test_run_alerts_once_after_repeated_pull_failures_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`[alerts] pull_failures` failures in a row: one WARNING line each, one alert (however
    many more fail), `status` exits 2, and a line when the upstream answers again (here: the
    repository appears where the URL points)."""
    missing = tmp_path / "later"
    cfg_path = project(tmp_path, (missing / "upstream.git").as_uri())
    cfg_path.write_text(cfg_path.read_text() + "[alerts]\npull_failures = 2\n")
    runner = Runner(load_config(cfg_path), secret=SECRET.encode())
    caplog.set_level(logging.INFO, logger="publisher.run")
    for _ in range(3):
        runner._build_job()  # a poll: pull, build, bookkeeping, alerts
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert [level for level, _ in lines] == ["WARNING", "WARNING", "ERROR", "WARNING"], lines
    assert lines[2][1].startswith("alert: the last 2 pulls of file://"), lines
    r = publisher(cfg_path, "status")
    assert r.returncode == 2 and "error: pull-failing" in r.stdout, r.stdout + r.stderr
    missing.mkdir()
    up = Upstream(missing)
    up.day(D14)
    up.push("first")
    caplog.clear()
    runner._build_job()
    assert any("works again after 3 failures" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "public/2024/05/14/index.html").is_file()
    assert publisher(cfg_path, "status").returncode == 0


def test_run_pulls_on_every_poll(tmp_path: Path) -> None:
    """A real `publisher run`: a day pushed upstream appears in the feed without a hand."""
    up = Upstream(tmp_path)
    up.day(D14)
    up.push("first")
    cfg = project(tmp_path, up.url)
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "publisher.cli", "run", "--config", str(cfg)],
        cwd=tmp_path,
        env={**os.environ, "PUBLISHER_SECRET": SECRET},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    feed = tmp_path / "public" / "feed.xml"

    def wait_for(date: dt.date) -> None:
        deadline = time.monotonic() + 90  # a hang guard, not a speed bound
        while time.monotonic() < deadline and proc.poll() is None:
            if feed.is_file() and f"/{date:%Y/%m/%d}/" in feed.read_text():
                return
            time.sleep(0.1)
        pytest.fail(f"{date} never reached the feed: {(tmp_path / 'run.log').read_text()}")

    try:
        wait_for(D14)
        up.day(D15)
        up.push("second")
        wait_for(D15)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        log.close()
    text = (tmp_path / "run.log").read_text()
    assert "pulled" in text and "Traceback" not in text
