"""The public side as a hostile user meets it, through real `publisher serve` and `publisher send`
processes: weak secrets refused, rotation, opaque links from a real send, the security headers on
every kind of response, and an access log with no token in it.

The server is a subprocess on a loopback port (its output captured to a file), the newsletter and
the confirmation mail go to a real aiosmtpd server, messages are parsed with the `email` package,
the state database is SQLite."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import feedparser
import httpx
import psycopg
import pytest
import sqlalchemy as sa

from publisher import state as st
from publisher.config import Config, load_config
from publisher.i18n import strings
from publisher.site import build_site
from publisher.state import Store
from publisher.state.schema import suppressions
from publisher.tokens import MAKE_SECRET, read, sign, sign_id
from publisher.web import REDACTED, content_security_policy

from .net import free_port
from .pg import Cluster, state_toml
from .sitehelpers import DAYS, write_digest
from .smtp_server import Recorder, smtp_server
from .webhelpers import start_serve, wait_serving

NEW = "66k6WExgXIqHg4nz5gFS_HYVetMgPCVJDV62nj96cxk"  # `publisher secret`
OLD = "qB0fTDHn4mJ9xWz2Lk7VcRsE1pYaG5uN8oHiKdMtQ3w"
OLDER = "Zr8LwQ2nXe5TjB7mV0cKgH4sPfA9yU1dNoI6tRkE3qW"
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN_PAGES = ("unsubscribe", "confirm", "preferences")


@dataclass
class Project:
    root: Path
    cfg: Config
    inbox: Recorder

    def store(self) -> Store:
        return Store.open(self.cfg)

    def add(self, address: str, status: str = st.ACTIVE) -> int:
        with self.store() as store:
            sub, _ = store.add_subscriber(address, status=status, source="cli")
            return sub.id

    def status(self, address: str) -> tuple[str | None, bool]:
        with self.store() as store:
            sub = store.get(address)
            return (sub.status if sub else None), store.is_suppressed(address)


def run_cli(project: Project, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    config = str(project.root / "config.toml")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUBLISHER_SECRET")} | env
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args, "--config", config],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A config.toml with digests, a built archive, a subscriber CSV and a loopback SMTP."""
    with smtp_server() as (inbox, port):
        (tmp_path / "config.toml").write_text(
            f"""
[site]
base_url = "http://127.0.0.1:{free_port()}/"
[digests]
inbox = "inbox"
[feed]
output = "public"
[subscribers]
file = "subs.csv"
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
timeout = 10.0
"""
            + state_toml(f"sqlite:///{tmp_path / 'state.db'}"),
            encoding="utf-8",
        )
        (tmp_path / "subs.csv").write_text("email,name\nada@example.com,Ada\n", encoding="utf-8")
        cfg = load_config(tmp_path / "config.toml")
        for day in DAYS:
            write_digest(cfg.digests.inbox, day)
        build_site(cfg)
        yield Project(tmp_path, cfg, inbox)


@contextmanager
def serving(project: Project, **env: str) -> Iterator[tuple[str, Path]]:
    """`publisher serve` on the port of `site.base_url`; yields (base URL, its output file)."""
    base = project.cfg.site.base_url
    port = base.rstrip("/").rsplit(":", 1)[1]
    log = project.root / f"serve-{time.monotonic_ns()}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUBLISHER_SECRET")}
    proc = start_serve(project.cfg.path, port, log, environ | env)
    try:
        wait_serving(proc, base, log, time.monotonic() + 60)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()


def post_one_click(url: str) -> httpx.Response:
    return httpx.post(url, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK, timeout=30)


# ---------------------------------------------------------------------------------------------
# Secrets


WEAK = [
    pytest.param("x", id="one-char"),
    pytest.param("change-me", id="readme-example"),
    pytest.param("0123456789abcdef0123456789abcde", id="31-bytes"),
    pytest.param("ab" * 24, id="repetitive"),
    # Issue 27: these passed the old rule (32 bytes, 8 distinct characters).
    pytest.param("abcdefghabcdefghabcdefghabcdefgh", id="repeated-sequence"),
    pytest.param("mynewsletter-secret-key-2024-prod", id="words"),
]


@pytest.mark.parametrize("secret", WEAK)
@pytest.mark.parametrize("command", ["serve", "send", "run", "bounces"])
def test_weak_secret_is_refused_with_one_line(project: Project, command: str, secret: str) -> None:
    args = ("bounces", "import", str(project.root / "subs.csv")) if command == "bounces" else ()
    r = run_cli(project, *(args or (command,)), PUBLISHER_SECRET=secret)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "$PUBLISHER_SECRET is too weak" in lines[0]
    assert MAKE_SECRET in lines[0] and str(project.cfg.path) in lines[0]
    assert len(secret) < 5 or secret not in lines[0]  # the secret itself is never printed
    assert project.inbox.messages == []  # `send` mailed nothing
    if command == "serve":
        assert "Serving" not in r.stdout


@pytest.mark.parametrize("command", ["serve", "send", "run"])
def test_missing_secret_is_refused(project: Project, command: str) -> None:
    r = run_cli(project, command)
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert "$PUBLISHER_SECRET, which is not set" in line and MAKE_SECRET in line
    assert project.inbox.messages == []


def test_publisher_secret_prints_a_fresh_strong_one(project: Project) -> None:
    """`publisher secret` prints a value every command takes, a new one each time."""
    made = []
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-m", "publisher.cli", "secret"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and r.stderr == "", r.stderr
        made.append(r.stdout.strip())
    assert made[0] != made[1] and all(len(m) == 43 for m in made)
    r = run_cli(project, "send", PUBLISHER_SECRET=made[0])
    assert r.returncode == 0, r.stdout + r.stderr


def test_weak_previous_secret_is_refused_at_serve(project: Project) -> None:
    """`serve` verifies links with the previous secrets too: a weak one would let anyone forge
    links as long as it is listed. (`send` only signs, with the current one.)"""
    r = run_cli(project, "serve", PUBLISHER_SECRET=NEW, PUBLISHER_SECRET_PREVIOUS=f"{OLD},short")
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    assert "$PUBLISHER_SECRET_PREVIOUS is too weak" in line and MAKE_SECRET in line
    assert "Serving" not in r.stdout


def test_strong_secret_sends_and_links_are_opaque_and_work(project: Project) -> None:
    """A real send: every link names an id, never the address, and unsubscribes on POST."""
    (project.root / "subs.csv").write_text(
        "email,name\nada.lovelace@example.com,Ada\ngrace@example.com,Grace\n", encoding="utf-8"
    )
    r = run_cli(project, "send", PUBLISHER_SECRET=NEW)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(project.inbox.messages) == 2
    with serving(project, PUBLISHER_SECRET=NEW) as (base, _):
        for address in ("ada.lovelace@example.com", "grace@example.com"):
            [msg] = project.inbox.to(address)
            url = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])[0]
            token = url.removeprefix(base + "unsubscribe/")
            assert_opaque(token, address)
            with project.store() as store:
                sub = store.get(address)
            assert read([NEW.encode()], token, "unsubscribe").subscriber_id == sub.id
            assert url in msg.get_body(("plain",)).get_content()
            assert post_one_click(url).status_code == 200
            assert project.status(address) == (st.UNSUBSCRIBED, True)


def assert_opaque(token: str, address: str) -> None:
    """Nothing of `address` in `token`, read as text or decoded from base64 at any offset."""
    local, _, domain = address.partition("@")
    for piece in (address, local, domain):
        assert piece.lower() not in token.lower()
    for shift in range(4):
        try:
            raw = base64.urlsafe_b64decode(token[shift:] + "=" * (-len(token[shift:]) % 4))
        except ValueError:
            continue
        for piece in (address, local, domain):
            assert piece.encode() not in raw
    assert len(token) <= 40 and "." not in token


# ---------------------------------------------------------------------------------------------
# Rotation


def test_links_signed_with_a_previous_secret_still_work_after_rotation(project: Project) -> None:
    ids = {a: project.add(a) for a in ("a@example.com", "b@example.com", "c@example.com")}
    project.add("d@example.com")
    project.add("pending@example.com", status=st.PENDING)
    unsub = f"{project.cfg.site.base_url}unsubscribe/"
    with_old = unsub + sign_id(OLD.encode(), "unsubscribe", ids["a@example.com"])
    older_form = unsub + sign(OLDER.encode(), "unsubscribe", "b@example.com")
    with_new = unsub + sign_id(NEW.encode(), "unsubscribe", ids["c@example.com"])
    unknown_key = b"w" + NEW[1:].encode()
    with_unknown = unsub + sign_id(unknown_key, "unsubscribe", ids["a@example.com"])
    previous = f" {OLD},\n {OLDER} "  # commas or whitespace separate them
    with serving(project, PUBLISHER_SECRET=NEW, PUBLISHER_SECRET_PREVIOUS=previous) as (base, _):
        # A key nobody configured: refused, nothing changes.
        assert httpx.get(with_unknown).status_code == 400
        assert post_one_click(with_unknown).status_code == 400
        assert project.status("a@example.com") == (st.ACTIVE, False)
        # The previous secrets, current and old token forms; and the new secret.
        for url, address in (
            (with_old, "a@example.com"),
            (older_form, "b@example.com"),
            (with_new, "c@example.com"),
        ):
            page = httpx.get(url)
            assert page.status_code == 200 and address in page.text
            assert project.status(address) == (st.ACTIVE, False)
            assert post_one_click(url).status_code == 200
            assert project.status(address) == (st.UNSUBSCRIBED, True)
        assert project.status("d@example.com") == (st.ACTIVE, False)
        # New links are signed with the new secret only.
        r = httpx.post(base + "subscribe", data={"email": "new@example.com"})
        assert r.status_code == 200
        [msg] = project.inbox.to("new@example.com")
        link = re.findall(re.escape(base) + r"confirm/\S+", msg.get_body(("plain",)).get_content())
        token = link[0].rsplit("/", 1)[1]
        assert_opaque(token, "new@example.com")
        assert read([NEW.encode()], token, "confirm").issued is not None
        with pytest.raises(Exception, match="invalid token"):
            read([OLD.encode(), OLDER.encode()], token, "confirm")
    # Without the previous secrets the old links stop working.
    with serving(project, PUBLISHER_SECRET=NEW) as _:
        assert httpx.get(with_old).status_code == 400


# ---------------------------------------------------------------------------------------------
# Headers and the access log


def test_security_headers_on_pages_feeds_and_token_pages(project: Project) -> None:
    ada = project.add("ada@example.com")
    csp = content_security_policy(project.cfg)
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "'unsafe-inline'" not in csp
    no_search = dataclasses.replace(
        project.cfg, feed=dataclasses.replace(project.cfg.feed, search=False)
    )
    assert "script-src 'none'" in content_security_policy(no_search)  # no search, no script
    with serving(project, PUBLISHER_SECRET=NEW) as (base, _):
        unsub = f"{base}unsubscribe/{sign_id(NEW.encode(), 'unsubscribe', ada)}"
        manage = f"{base}preferences/{sign_id(NEW.encode(), 'manage', ada)}"
        confirm = f"{base}confirm/{sign_id(NEW.encode(), 'confirm', ada, time.time())}"
        day = f"{DAYS[-1]:%Y/%m/%d}/"
        public = {
            "page": httpx.get(base),
            "day page": httpx.get(base + day),
            "rss feed": httpx.get(base + "feed.xml"),
            "atom feed": httpx.get(base + "atom.xml"),
            "stylesheet": httpx.get(base + "style.css"),
            "web stylesheet": httpx.get(base + "web.css"),
            "signup form": httpx.get(base + "subscribe"),
            "404": httpx.get(base + "2001/01/01/"),
            "405": httpx.delete(base + "subscribe"),
        }
        private = {
            "unsubscribe page": httpx.get(unsub),
            "confirm page": httpx.get(confirm),
            "preferences page": httpx.get(manage),
            "stored data": httpx.get(manage + "/data.json"),
            "bad token": httpx.get(f"{base}unsubscribe/forged"),
            "405 on a token path": httpx.delete(unsub),
            "one-click answer": post_one_click(unsub),
        }
    assert public["page"].status_code == public["day page"].status_code == 200
    assert not feedparser.parse(public["rss feed"].content).bozo
    assert public["404"].status_code == 404 and public["405"].status_code == 405
    assert private["bad token"].status_code == 400
    assert [r.status_code for r in private.values()].count(200) == 5
    for name, r in {**public, **private}.items():
        assert r.headers["content-security-policy"] == csp, name
        assert r.headers["x-content-type-options"] == "nosniff", name
        assert r.headers["x-frame-options"] == "DENY", name
    for name, r in private.items():
        assert r.headers["referrer-policy"] == "no-referrer", name
        assert r.headers["cache-control"] == "no-store", name
    for name in ("page", "day page", "rss feed", "atom feed", "stylesheet", "web stylesheet"):
        r = public[name]
        assert r.headers["referrer-policy"] == "strict-origin-when-cross-origin", name
        assert r.headers.get("cache-control") != "no-store", name
    # The archive keeps its revalidation; the signup form is not cached.
    assert public["rss feed"].headers["cache-control"] == "no-cache"
    assert public["signup form"].headers["cache-control"] == "no-store"


def test_the_access_log_shows_no_token(project: Project) -> None:
    ada = project.add("ada@example.com")
    tokens = [
        sign_id(NEW.encode(), "unsubscribe", ada),
        sign_id(NEW.encode(), "manage", ada),
        sign_id(NEW.encode(), "confirm", ada, time.time()),
        sign(NEW.encode(), "unsubscribe", "ada@example.com"),  # the old form, address inside
        "forged-token-never-valid",
    ]
    with serving(project, PUBLISHER_SECRET=NEW) as (base, log):
        seen = []
        for token in tokens:
            for page in TOKEN_PAGES:
                seen.append(httpx.get(f"{base}{page}/{token}?utm_source=x").status_code)
            seen.append(httpx.get(f"{base}preferences/{token}/data.json").status_code)
        seen.append(post_one_click(f"{base}unsubscribe/{tokens[0]}").status_code)
        seen.append(httpx.post(f"{base}confirm/{tokens[2]}").status_code)
        seen.append(httpx.get(base + "feed.xml").status_code)
    # serving() has stopped the server and waited for it to exit: every line is in the file.
    text = log.read_text(errors="replace")
    for token in tokens:
        assert token not in text
    for piece in ("ada@example.com", "YWRhQGV4YW1wbGUuY29t"):
        assert piece not in text
    # The requests are logged, with the token replaced.
    access = [line for line in text.splitlines() if '" 200' in line or '" 400' in line]
    assert len(access) >= len(seen) - 1, text
    for page in TOKEN_PAGES:
        assert f'"GET /{page}/{REDACTED}?utm_source=x HTTP/1.1" 200' in text, text
    assert f'"POST /unsubscribe/{REDACTED} HTTP/1.1" 200' in text
    assert f'"GET /preferences/{REDACTED}/data.json HTTP/1.1" 200' in text
    assert '"GET /feed.xml HTTP/1.1" 200' in text
    # The one-click POST unsubscribed, the confirm POST after it subscribed again.
    assert project.status("ada@example.com") == (st.ACTIVE, False)


def test_confirm_token_reaches_expiry_on_the_real_server(project: Project) -> None:
    ada = project.add("late@example.com", status=st.PENDING)
    issued = time.time() - dt.timedelta(days=8).total_seconds()
    with serving(project, PUBLISHER_SECRET=NEW) as (base, _):
        url = f"{base}confirm/{sign_id(NEW.encode(), 'confirm', ada, issued)}"
        for r in (httpx.get(url), httpx.post(url)):
            assert r.status_code == 400
            assert f'href="{base}subscribe"' in r.text
    assert project.status("late@example.com") == (st.PENDING, False)


def test_a_state_database_that_goes_away_answers_503_with_the_headers_and_one_log_line(
    project: Project, pg_cluster: Cluster, pg_url: str
) -> None:
    """The PostgreSQL database stops taking connections while `publisher serve` runs (its
    sessions are ended and new ones refused, as in a failover or a maintenance window): the
    one-click unsubscribe, the stored-data page and the signup answer 503 with Retry-After and
    every security header, the archive is still served, and the log names the database in one
    line, with no traceback and no token."""
    config = project.root / "config.toml"
    config.write_text(
        re.sub(r'(?m)^database = ".*"$', f'database = "{pg_url}"', config.read_text())
    )
    project = dataclasses.replace(project, cfg=load_config(config))
    ada = project.add("ada@example.com")
    name = pg_url.rsplit("/", 1)[1]
    admin = psycopg.connect(
        host="127.0.0.1", port=pg_cluster.port, user=pg_cluster.user, dbname="postgres"
    )
    admin.autocommit = True
    try:
        with serving(project, PUBLISHER_SECRET=NEW) as (base, log):
            unsub = f"{base}unsubscribe/{sign_id(NEW.encode(), 'unsubscribe', ada)}"
            manage = f"{base}preferences/{sign_id(NEW.encode(), 'manage', ada)}"
            assert httpx.get(manage + "/data.json").status_code == 200
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            answers = {
                "one-click": post_one_click(unsub),
                "stored data": httpx.get(manage + "/data.json"),
                "signup": httpx.post(base + "subscribe", data={"email": "new@example.com"}),
            }
            archive = httpx.get(base)
    finally:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        admin.close()
    assert archive.status_code == 200
    csp = content_security_policy(project.cfg)
    for what, r in answers.items():
        assert r.status_code == 503, (what, r.status_code, r.text)
        assert r.headers["retry-after"] == "60", what
        assert r.headers["content-security-policy"] == csp, what
        assert r.headers["x-content-type-options"] == "nosniff", what
        assert r.headers["cache-control"] == "no-store", what
    text = log.read_text(errors="replace")  # complete: serving() waited for the server to exit
    lines = [line for line in text.splitlines() if "cannot use the PostgreSQL server" in line]
    assert len(lines) == len(answers) and all(name in line for line in lines), text
    assert f"/unsubscribe/{REDACTED}" in lines[0], text
    assert "Traceback" not in text  # (serving() checks it too)


def test_a_bug_answers_500_with_the_security_headers(tmp_path: Path) -> None:
    """Starlette answers an unhandled exception from outside every middleware; the 500 still
    carries the headers (a token path: no-store and no-referrer too)."""
    from starlette.routing import Route

    from publisher.web import create_app

    from .webhelpers import live_server, web_config

    def make_app(base: str):  # noqa: ANN202
        app = create_app(web_config(tmp_path, base), secret=NEW.encode())

        async def boom(request: object) -> None:
            raise RuntimeError("a bug")

        # Before the archive's catch-all mount.
        app.router.routes[:0] = [Route("/unsubscribe/{token}/boom", boom), Route("/boom", boom)]
        return app

    with live_server(make_app) as base:  # uvicorn closes the connection after a 500
        public = httpx.get(base + "boom")
        private = httpx.get(base + "unsubscribe/tok/boom")
    for r in (public, private):
        assert r.status_code == 500
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
        assert "a bug" not in r.text
    assert public.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert private.headers["referrer-policy"] == "no-referrer"


# ---------------------------------------------------------------------------------------------
# Signup mail to one victim (issue 27)


VICTIM_SPELLINGS = [
    "victim@gmail.com",
    "victim+1@gmail.com",
    "victim+news@gmail.com",
    "Victim+2@GMAIL.com",
    "v.ictim@gmail.com",
    "vic.tim+3@gmail.com",
    "v.i.c.t.i.m@googlemail.com",
    "victim+4@googlemail.com",
]


def test_one_mailbox_gets_one_confirmation_whatever_the_spellings_and_clients(
    project: Project,
) -> None:
    """20 clients (X-Forwarded-For from the loopback proxy) ask for 20 spellings of one Gmail
    mailbox: it gets one confirmation mail, and a different mailbox still gets its own."""
    with serving(project, PUBLISHER_SECRET=NEW) as (base, log):
        for i in range(20):
            address = VICTIM_SPELLINGS[i % len(VICTIM_SPELLINGS)].replace("+", f"+{i}x", 1)
            r = httpx.post(
                base + "subscribe",
                data={"email": address, "name": ""},
                headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
        r = httpx.post(base + "subscribe", data={"email": "other+1@gmail.com"}, timeout=30)
        assert r.status_code == 200
    assert "@gmail.com" not in log.read_text(), log.read_text()  # the server's log: no address
    to_victim = [rcpt for rcpt, _ in project.inbox.messages if "other" not in rcpt]
    assert len(to_victim) == 1, to_victim
    assert [rcpt for rcpt, _ in project.inbox.messages if "other" in rcpt] == ["other+1@gmail.com"]
    # The address is stored as the reader typed it (lower-cased), tag and dots kept.
    with project.store() as store:
        assert store.get("victim@gmail.com") is not None
        assert store.get("other+1@gmail.com") is not None
        assert store.get("other@gmail.com") is None


# ---------------------------------------------------------------------------------------------
# 405 and the trailing-slash redirect (issue 27)


def _allow(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["allow"].split(",")}


def test_405_names_the_methods_the_path_takes(project: Project) -> None:
    with serving(project, PUBLISHER_SECRET=NEW) as (base, _):
        for method, path, allowed in [
            ("PUT", "subscribe", {"GET", "HEAD", "POST"}),
            ("DELETE", "subscribe", {"GET", "HEAD", "POST"}),
            ("PUT", "preferences/abc", {"GET", "HEAD", "POST"}),
            ("PUT", "unsubscribe/abc", {"GET", "HEAD", "POST"}),
            ("POST", "web.css", {"GET", "HEAD"}),
            ("POST", "feed.xml", {"GET", "HEAD"}),
            ("PUT", "2024/05/15/", {"GET", "HEAD"}),
        ]:
            r = httpx.request(method, base + path, timeout=30)
            assert r.status_code == 405, (method, path, r.status_code)
            assert _allow(r) == allowed, (method, path, r.headers["allow"])
            assert r.headers["allow"] == ", ".join(sorted(allowed))  # the same every time
            assert r.headers["x-content-type-options"] == "nosniff"


def test_trailing_slash_redirect_is_a_path_never_the_host_header(project: Project) -> None:
    with serving(project, PUBLISHER_SECRET=NEW) as (base, _):
        for host in ("evil.example", "evil.example:8443", None):
            headers = {"Host": host} if host else {}
            r = httpx.get(base + "2024/05", headers=headers, timeout=30)
            assert r.status_code == 307
            assert r.headers["location"] == "/2024/05/", r.headers["location"]
        r = httpx.get(base + "2024/05?x=1", headers={"Host": "evil.example"}, timeout=30)
        assert r.headers["location"] == "/2024/05/?x=1"
        # The browser's way: the path resolves against the address it asked.
        r = httpx.get(base + "2024/05", follow_redirects=True, timeout=30)
        assert r.status_code == 200 and str(r.url) == base + "2024/05/"


# ---------------------------------------------------------------------------------------------
# Preferences: the name, and deleting one's data (issue 27)


def _post_form(url: str, **fields: str) -> httpx.Response:
    return httpx.post(url, data=fields, timeout=30)


def test_preferences_change_the_name_and_delete_the_data_for_good(project: Project) -> None:
    r = run_cli(project, "send", PUBLISHER_SECRET=NEW)  # ada, from the CSV, gets an issue
    assert r.returncode == 0, r.stdout + r.stderr
    with project.store() as store:
        ada = store.get("ada@example.com")
        assert ada is not None and ada.name == "Ada"
        assert store.stored_data("ada@example.com")["sends"]
    with serving(project, PUBLISHER_SECRET=NEW) as (base, _):
        manage = f"{base}preferences/{sign_id(NEW.encode(), 'manage', ada.id)}"
        page = httpx.get(manage, timeout=30)
        assert page.status_code == 200
        assert 'name="name"' in page.text and 'value="Ada"' in page.text
        assert 'value="delete"' in page.text

        r = _post_form(manage, action="rename", name="  Ada\tLovelace ")
        assert r.status_code == 200 and 'value="Ada Lovelace"' in r.text
        with project.store() as store:
            assert store.get("ada@example.com").name == "Ada Lovelace"  # type: ignore[union-attr]

        r = _post_form(manage, action="delete")
        assert r.status_code == 200, r.text
        deleted = strings(project.cfg.site.language)["deleted_title"]
        assert deleted in r.text and "ada@example.com" in r.text
        assert r.headers["cache-control"] == "no-store"
        # The link names a subscriber who is gone: nothing to show, nothing to download.
        assert httpx.get(manage, timeout=30).status_code == 400
        assert httpx.get(manage + "/data.json", timeout=30).status_code == 400

    with project.store() as store:
        assert store.get("ada@example.com") is None
        data = store.stored_data("ada@example.com")
        assert data["subscriber"] is None and data["sends"] == [] and data["suppression"] is None
        with store.engine.connect() as conn:
            kept = [row.email for row in conn.execute(sa.select(suppressions))]
        assert len(kept) == 1 and kept[0].startswith("sha256:")
        assert "ada" not in kept[0]
    # The CSV still lists ada (and changes, so the sync reads it): the row comes back
    # unsubscribed, matched by the hash, and the next send mails grace only.
    (project.root / "subs.csv").write_text(
        "email,name\nada@example.com,Ada\ngrace@example.com,Grace\n", encoding="utf-8"
    )
    before = len(project.inbox.to("ada@example.com"))
    write_digest(project.cfg.digests.inbox, DAYS[-1] + dt.timedelta(days=1))
    r = run_cli(project, "send", PUBLISHER_SECRET=NEW)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(project.inbox.to("ada@example.com")) == before
    assert len(project.inbox.to("grace@example.com")) == 1
    assert project.status("ada@example.com") == (st.UNSUBSCRIBED, True)
