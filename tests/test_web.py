"""The web side over real HTTP on loopback: uvicorn in a thread, httpx as the client, a real
aiosmtpd server for the confirmation mail and the real store behind it (SQLite and PostgreSQL:
conftest's `db_url`; the static archive's tests only on SQLite, they never read the store)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import feedparser
import httpx
import pytest
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner

from publisher import state as st
from publisher.cli import cli
from publisher.config import Config
from publisher.i18n import strings
from publisher.site import MANIFEST
from publisher.state import Store
from publisher.tokens import sign, sign_id
from publisher.urls import preferences_url, unsubscribe_url
from publisher.web import MAILBOX_BURST, MAILBOX_REFILL, create_app
from publisher.web_mail import MailError, build_confirmation, send_confirmation

from .conftest import one_error_line, run_publisher
from .net import self_signed_cert
from .pg import with_database
from .smtp_server import Recorder, smtp_server
from .webhelpers import SECRET, Clock, live_server, web_config

DAY = dt.date(2024, 5, 16)  # the next issue
T = strings("ko")
ONE_CLICK = b"List-Unsubscribe=One-Click"


@dataclasses.dataclass
class Web:
    cfg: Config
    base: str
    store: Store
    inbox: Recorder
    clock: Clock
    http: httpx.Client

    def post_one_click(self, url: str, multipart: bool = False) -> httpx.Response:
        """The exact request RFC 8058 describes: POST, the one-click body, no cookies."""
        if multipart:
            boundary = "rfc8058boundary"
            body = (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
                f"One-Click\r\n--{boundary}--\r\n"
            ).encode()
            ctype = f"multipart/form-data; boundary={boundary}"
        else:
            body, ctype = ONE_CLICK, "application/x-www-form-urlencoded"
        return self.http.post(url, content=body, headers={"Content-Type": ctype})

    def signup(self, address: str, name: str = "", **extra: str) -> httpx.Response:
        return self.http.post(
            self.base + "subscribe", data={"email": address, "name": name, **extra}
        )

    def unsub_url(self, address: str) -> str:
        """The unsubscribe link the newsletter carries for `address` (its token names the id)."""
        token = sign_id(SECRET, "unsubscribe", self.store.get(address).id)  # type: ignore[union-attr]
        return unsubscribe_url(self.cfg, token)

    def manage_url(self, address: str) -> str:
        token = sign_id(SECRET, "manage", self.store.get(address).id)  # type: ignore[union-attr]
        return preferences_url(self.cfg, token)

    def confirm(self, link: str) -> httpx.Response:
        """The confirmation as a person gives it: the button on the page posts to the link."""
        page = self.http.get(link)
        assert page.status_code == 200, page.text
        assert re.search(r'<form[^>]*method="post"[^>]*action="' + re.escape(link) + '"', page.text)
        return self.http.post(link)

    def state(self, address: str) -> tuple[str | None, bool]:
        sub = self.store.get(address)
        return (sub.status if sub else None), self.store.is_suppressed(address)


def make_web(tmp_path: Path, db_url: str | None = None, **web: object) -> Iterator[Web]:
    """The app on a live server; the store on `db_url`, else the default SQLite file."""
    clock = Clock()
    with smtp_server() as (inbox, port):
        holder: dict[str, object] = {}

        def make_app(base: str):  # noqa: ANN202
            cfg = web_config(tmp_path, base, port, **web)
            if db_url is not None:
                cfg = with_database(cfg, db_url)
            store = Store.open(cfg)
            holder.update(cfg=cfg, store=store)
            return create_app(cfg, secret=SECRET, store=store, clock=clock)

        with (
            live_server(make_app) as base,
            httpx.Client(follow_redirects=False, timeout=30) as http,
        ):
            yield Web(holder["cfg"], base, holder["store"], inbox, clock, http)  # type: ignore[arg-type]
        holder["store"].close()  # type: ignore[attr-defined]


@pytest.fixture
def web(tmp_path: Path, db_url: str) -> Iterator[Web]:
    """The app and its store, once per database backend."""
    yield from make_web(tmp_path, db_url)


@pytest.fixture
def site_web(tmp_path: Path) -> Iterator[Web]:
    """The app on the default SQLite store, for what never touches the store (the archive)."""
    yield from make_web(tmp_path)


def confirmation_link(msg: EmailMessage, base: str) -> str:
    text = msg.get_body(("plain",)).get_content()
    links = re.findall(re.escape(base) + r"confirm/\S+", text)
    assert len(links) == 1, text
    html = msg.get_body(("html",)).get_content()
    assert f'href="{links[0]}"' in html
    return links[0]


# ---------------------------------------------------------------------------------------------
# One-click unsubscribe (RFC 8058)


@pytest.mark.parametrize("multipart", [False, True], ids=["urlencoded", "multipart"])
def test_one_click_post_suppresses_and_the_next_send_leaves_it_out(
    web: Web, multipart: bool
) -> None:
    ada, _ = web.store.add_subscriber("ada@example.com", "Ada", status=st.ACTIVE, source="csv")
    web.store.add_subscriber("bob@example.com", "Bob", status=st.ACTIVE, source="csv")
    # The List-Unsubscribe URL exactly as the newsletter builds it.
    url = f"{web.cfg.site.base_url}unsubscribe/{sign_id(SECRET, 'unsubscribe', ada.id)}"
    assert web.unsub_url("Ada@Example.com") == url

    r = web.post_one_click(url, multipart=multipart)

    assert r.status_code == 200
    assert not r.is_redirect and "set-cookie" not in r.headers
    assert T["unsubscribed_title"] in r.text
    assert web.state("ada@example.com") == (st.UNSUBSCRIBED, True)
    # The very next send: only Bob is queued.
    assert web.store.queue_pending(DAY) == 1
    assert web.store.ledger_entry(DAY, "ada@example.com") is None
    assert web.store.ledger_entry(DAY, "bob@example.com") is not None
    assert [e.email for e in web.store.pending_for(DAY)] == ["bob@example.com"]


def test_one_click_after_queueing_is_still_honoured(web: Web) -> None:
    """Unsubscribing while a send is queued: the rest of that send skips the address."""
    web.store.add_subscriber("ada@example.com", status=st.ACTIVE, source="csv")
    assert web.store.queue_pending(DAY) == 1
    assert web.post_one_click(web.unsub_url("ada@example.com")).status_code == 200
    assert list(web.store.pending_for(DAY)) == []


def test_get_shows_a_button_and_changes_nothing(web: Web) -> None:
    web.store.add_subscriber("ada@example.com", status=st.ACTIVE, source="csv")
    url = web.unsub_url("ada@example.com")
    for _ in range(3):  # scanners fetch, and fetch again
        r = web.http.get(url)
        assert r.status_code == 200
        assert re.search(r'<form[^>]*method="post"[^>]*action="' + re.escape(url) + '"', r.text)
        assert "ada@example.com" in r.text
    assert web.http.head(url).status_code in (200, 405)
    assert web.state("ada@example.com") == (st.ACTIVE, False)


def _tampered(token: str) -> str:
    """`token` with one character of its MAC changed."""
    body, dot, mac = token.rpartition(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    return f"{body}{dot}{flipped}"


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda i: _tampered(sign_id(SECRET, "unsubscribe", i)), id="id-mac"),
        pytest.param(lambda i: sign_id(SECRET, "manage", i), id="id-manage-purpose"),
        pytest.param(lambda i: sign_id(SECRET, "confirm", i, time.time()), id="id-confirm-purpose"),
        pytest.param(lambda i: sign_id(b"another secret" * 3, "unsubscribe", i), id="id-key"),
        pytest.param(
            # Another subscriber's valid token with Ada's id put in.
            lambda i: _with_id(sign_id(SECRET, "unsubscribe", i + 1), i),
            id="id-swapped",
        ),
        pytest.param(lambda i: sign_id(SECRET, "unsubscribe", i) + "A", id="id-longer"),
        pytest.param(lambda i: _tampered(sign(SECRET, "unsubscribe", "ada@example.com")), id="mac"),
        pytest.param(
            # Bob's valid signature glued to Ada's address.
            lambda i: (
                sign(SECRET, "unsubscribe", "ada@example.com").split(".")[0]
                + "."
                + sign(SECRET, "unsubscribe", "bob@example.com").split(".")[1]
            ),
            id="swapped-subject",
        ),
        pytest.param(lambda i: sign(SECRET, "confirm", "ada@example.com"), id="confirm-purpose"),
        pytest.param(lambda i: sign(SECRET, "manage", "ada@example.com"), id="manage-purpose"),
        pytest.param(lambda i: sign(b"another secret", "unsubscribe", "ada@example.com"), id="key"),
        pytest.param(lambda i: "not-a-token", id="garbage"),
        pytest.param(lambda i: "YWRhQGV4YW1wbGUuY29t.", id="no-mac"),
    ],
)
def test_forged_tokens_are_refused_and_change_nothing(web: Web, make_token) -> None:  # noqa: ANN001
    ada, _ = web.store.add_subscriber("ada@example.com", status=st.ACTIVE, source="csv")
    web.store.add_subscriber("bob@example.com", status=st.UNSUBSCRIBED, source="csv")
    url = f"{web.base}unsubscribe/{make_token(ada.id)}"
    assert web.post_one_click(url).status_code == 400
    assert web.http.get(url).status_code == 400
    assert web.state("ada@example.com") == (st.ACTIVE, False)
    assert web.store.queue_pending(DAY) == 1


def _with_id(token: str, subscriber_id: int) -> str:
    """A current-form token with its subscriber id replaced (same length), MAC kept."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    payload = subscriber_id.to_bytes(len(raw) - 17, "big")
    return base64.urlsafe_b64encode(raw[:1] + payload + raw[-16:]).rstrip(b"=").decode()


def test_unsubscribing_twice_is_harmless(web: Web) -> None:
    web.store.add_subscriber("ada@example.com", status=st.ACTIVE, source="csv")
    url = web.unsub_url("ada@example.com")
    assert web.post_one_click(url).status_code == 200
    assert web.post_one_click(url).status_code == 200
    assert web.state("ada@example.com") == (st.UNSUBSCRIBED, True)


def test_unknown_but_signed_address_is_suppressed_for_later_imports(web: Web) -> None:
    # Only an old-form link (the address in clear) can name an address with no row.
    url = f"{web.base}unsubscribe/{sign(SECRET, 'unsubscribe', 'ghost@example.com')}"
    assert web.post_one_click(url).status_code == 200
    assert web.store.is_suppressed("ghost@example.com")
    sub, _ = web.store.add_subscriber("ghost@example.com", status=st.ACTIVE, source="csv")
    assert sub.status == st.UNSUBSCRIBED
    assert web.store.queue_pending(DAY) == 0


def test_oversized_unsubscribe_body_is_refused(web: Web) -> None:
    web.store.add_subscriber("ada@example.com", status=st.ACTIVE, source="csv")
    url = web.unsub_url("ada@example.com")
    r = web.http.post(url, content=b"x" * 100_000, headers={"Content-Type": "text/plain"})
    assert r.status_code == 413
    assert web.state("ada@example.com") == (st.ACTIVE, False)


# ---------------------------------------------------------------------------------------------
# Double opt-in


def test_signup_mail_confirm_then_the_next_issue_includes_it(web: Web) -> None:
    r = web.signup("Grace@Example.com", "Grace")
    assert r.status_code == 200
    assert T["check_inbox_title"] in r.text
    assert web.state("grace@example.com") == (st.PENDING, False)
    assert web.store.queue_pending(DAY) == 0  # pending is not mailable

    [msg] = web.inbox.to("grace@example.com")
    assert msg["Subject"] == T["confirm_subject"].format(title=web.cfg.site.title)
    assert msg["From"] == web.cfg.email.from_
    assert msg["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in msg  # a confirmation is not list mail
    link = confirmation_link(msg, web.cfg.site.base_url)
    assert "grace" not in link.lower()  # the token names an id, not the address

    # A GET (a mail scanner, a link preview) shows a button and changes nothing, however often.
    for _ in range(3):
        r = web.http.get(link)
        assert r.status_code == 200
        assert T["confirm_action"] in r.text and "grace@example.com" in r.text
        assert re.search(r'<form[^>]*method="post"[^>]*action="' + re.escape(link) + '"', r.text)
        assert web.state("grace@example.com") == (st.PENDING, False)
    assert web.http.head(link).status_code in (200, 405)
    assert web.state("grace@example.com") == (st.PENDING, False)

    r = web.http.post(link)
    assert r.status_code == 200
    assert not r.is_redirect and "set-cookie" not in r.headers
    assert T["confirmed_title"] in r.text
    sub = web.store.get("grace@example.com")
    assert (sub.status, sub.name, sub.source) == (st.ACTIVE, "Grace", "web")
    assert web.store.queue_pending(DAY) == 1
    assert web.store.ledger_entry(DAY, "grace@example.com") is not None
    # Posting again (a second click) is harmless: same answer, same state.
    again = web.http.post(link)
    assert again.status_code == 200 and T["confirmed_title"] in again.text
    assert web.state("grace@example.com") == (st.ACTIVE, False)


def test_confirming_lifts_an_earlier_unsubscribe(web: Web) -> None:
    web.store.add_subscriber("ada@example.com", status=st.ACTIVE, source="csv")
    web.store.unsubscribe("ada@example.com")
    assert web.signup("ada@example.com").status_code == 200
    assert web.state("ada@example.com") == (st.UNSUBSCRIBED, True)  # not before the click
    link = confirmation_link(web.inbox.to("ada@example.com")[0], web.base)
    assert web.confirm(link).status_code == 200
    assert web.state("ada@example.com") == (st.ACTIVE, False)


def test_signup_never_reveals_membership_nor_downgrades(web: Web) -> None:
    web.store.add_subscriber("ada@example.com", "Ada", status=st.ACTIVE, source="csv")
    known = web.signup("ada@example.com", "Mallory")
    unknown = web.signup("new@example.com", "Mallory")
    assert known.status_code == unknown.status_code == 200
    assert known.text == unknown.text
    sub = web.store.get("ada@example.com")
    assert (sub.status, sub.name) == (st.ACTIVE, "Ada")


def test_tampered_or_expired_confirmation_changes_nothing(web: Web) -> None:
    web.signup("grace@example.com")
    link = confirmation_link(web.inbox.to("grace@example.com")[0], web.base)
    token = link.rsplit("/", 1)[1]
    grace = web.store.get("grace@example.com").id
    for bad in (
        _tampered(token),
        sign(SECRET, "unsubscribe", token),
        sign(SECRET, "confirm", "grace@example.com"),  # no issue time
        sign(SECRET, "unsubscribe", "grace@example.com"),
        sign_id(SECRET, "unsubscribe", grace),
        sign_id(SECRET, "manage", grace),
    ):
        assert web.http.get(f"{web.base}confirm/{bad}").status_code == 400
        assert web.http.post(f"{web.base}confirm/{bad}").status_code == 400
    web.clock.advance(8 * 86400)  # links live seven days
    for r in (web.http.get(link), web.http.post(link)):
        # Refused, with the way back: the signup form.
        assert r.status_code == 400
        assert T["expired_title"] in r.text
        assert f'href="{web.base}subscribe"' in r.text
    assert web.state("grace@example.com") == (st.PENDING, False)


def test_second_signup_within_the_window_sends_no_second_mail(web: Web) -> None:
    first = web.signup("grace@example.com")
    web.clock.advance(60)
    second = web.signup("grace@example.com")
    assert first.text == second.text and second.status_code == 200
    assert len(web.inbox.to("grace@example.com")) == 1
    web.clock.advance(web.cfg.web.confirm_resend_minutes * 60)
    web.signup("grace@example.com")
    assert len(web.inbox.to("grace@example.com")) == 2


def test_one_mailbox_gets_a_few_mails_an_hour_whatever_the_spacing(
    tmp_path: Path, db_url: str
) -> None:
    """Issue 27: even with `confirm_resend_minutes = 0` (no spacing), the spellings of one
    mailbox share MAILBOX_BURST mails, then one an hour; the addresses are stored as typed."""
    spellings = [
        "victim@gmail.com",
        "victim+a@gmail.com",
        "v.ictim@gmail.com",
        "victim+b@googlemail.com",
        "Vic.Tim+c@gmail.com",
    ]
    for web in make_web(tmp_path, db_url, confirm_resend_minutes=0):
        for address in spellings:
            assert web.signup(address).status_code == 200
            web.clock.advance(60)
        assert len(web.inbox.messages) == MAILBOX_BURST
        assert web.store.get("victim+a@gmail.com") is not None  # as typed, tag kept
        web.clock.advance(MAILBOX_REFILL)
        web.signup("victim+d@gmail.com")
        assert len(web.inbox.messages) == MAILBOX_BURST + 1
        web.signup("someone.else@gmail.com")  # another mailbox has its own allowance
        assert len(web.inbox.to("someone.else@gmail.com")) == 1


def test_per_client_limit_answers_429(tmp_path: Path, db_url: str) -> None:
    for web in make_web(tmp_path, db_url, signups_per_client_per_hour=2):
        assert web.signup("a@example.com").status_code == 200
        assert web.signup("b@example.com").status_code == 200
        r = web.signup("c@example.com")
        assert r.status_code == 429
        assert web.store.get("c@example.com") is None
        assert web.inbox.to("c@example.com") == []
        web.clock.advance(1800)  # half an hour refills one
        assert web.signup("c@example.com").status_code == 200
        assert len(web.inbox.to("c@example.com")) == 1


@pytest.mark.parametrize("address", ["not an address", "a@b", "a@@example.com", ""])
def test_invalid_address_shows_the_form_again(web: Web, address: str) -> None:
    r = web.signup(address)
    assert r.status_code == 400
    assert T["invalid_email"] in r.text and 'name="email"' in r.text
    assert web.inbox.messages == []
    assert web.store.counts_by_status()[st.PENDING] == 0


def test_bot_filling_the_hidden_field_gets_the_page_but_no_mail(web: Web) -> None:
    r = web.signup("bot@example.com", website="http://spam.example")
    assert r.status_code == 200 and T["check_inbox_title"] in r.text
    assert web.inbox.messages == [] and web.store.get("bot@example.com") is None


def test_oversized_signup_is_refused(web: Web) -> None:
    r = web.http.post(
        web.base + "subscribe",
        content=b"email=a%40example.com&name=" + b"x" * 20_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413
    assert web.inbox.messages == []


def test_subscribe_form_is_in_the_site_language(site_web: Web) -> None:
    web = site_web
    r = web.http.get(web.base + "subscribe")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<html lang="ko">' in r.text and T["subscribe_button"] in r.text
    assert f'action="{web.base}subscribe"' in r.text
    assert r.headers["cache-control"] == "no-store"


def test_unreachable_smtp_answers_503_and_may_retry(tmp_path: Path, db_url: str) -> None:
    from .net import free_port

    dead = free_port()  # nothing listens there

    def make_app(base: str):  # noqa: ANN202
        return create_app(with_database(web_config(tmp_path, base, dead), db_url), secret=SECRET)

    with live_server(make_app) as base, httpx.Client() as http:
        r = http.post(base + "subscribe", data={"email": "a@example.com"})
        assert r.status_code == 503
        assert http.post(base + "subscribe", data={"email": "a@example.com"}).status_code == 503


# ---------------------------------------------------------------------------------------------
# Preferences


def test_the_emails_footer_links_to_the_readers_preferences_page(web: Web) -> None:
    """Every newsletter carries a preferences link (HTML and text) next to unsubscribe; it opens
    that reader's page over HTTP and names nothing about the reader in the URL."""
    from publisher.digest import parse_file
    from publisher.mailer import MessageFactory
    from publisher.newsletter import render_newsletter

    from .conftest import ROOT

    ada, _ = web.store.add_subscriber("ada@example.com", "Ada", status=st.ACTIVE, source="csv")
    digest = parse_file(ROOT / "digests" / "2024" / "05" / "15.md")
    raw = MessageFactory(render_newsletter(digest, web.cfg), web.cfg, SECRET).build(
        "ada@example.com", "Ada", ada.id
    )
    msg = email.message_from_bytes(raw, policy=policy.default)
    base = re.escape(web.cfg.site.base_url + "preferences/")
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [from_html] = re.findall(f'href="({base}[^"]+)"', html)
    [from_text] = re.findall(f"({base}\\S+)", text)
    assert from_html == from_text and "ada" not in from_html.lower()

    page = web.http.get(from_html)
    assert page.status_code == 200
    assert "ada@example.com" in page.text and T["status_active"] in page.text
    assert web.state("ada@example.com") == (st.ACTIVE, False)  # looking changes nothing


def test_preferences_resubscribe_and_download(web: Web) -> None:
    web.store.add_subscriber("ada@example.com", "Ada", status=st.ACTIVE, source="csv")
    web.store.queue_pending(DAY)
    web.post_one_click(web.unsub_url("ada@example.com"))

    url = web.manage_url("ada@example.com")
    r = web.http.get(url)
    assert r.status_code == 200
    assert T["status_inactive"] in r.text and T["resubscribe_button"] in r.text
    assert web.state("ada@example.com") == (st.UNSUBSCRIBED, True)  # GET changed nothing

    data = web.http.get(url + "/data.json")
    assert data.status_code == 200
    assert data.headers["content-type"].startswith("application/json")
    stored = json.loads(data.text)
    assert stored["email"] == "ada@example.com"
    assert stored["subscriber"]["name"] == "Ada"
    assert stored["subscriber"]["status"] == st.UNSUBSCRIBED
    assert stored["suppression"]["reason"] == st.UNSUBSCRIBED
    assert [s["digest_date"] for s in stored["sends"]] == [DAY.isoformat()]

    r = web.http.post(url, data={"action": "resubscribe"})
    assert r.status_code == 200 and T["status_active"] in r.text
    assert web.state("ada@example.com") == (st.ACTIVE, False)

    # The unsubscribe token opens the same page; a forged one does not.
    assert (
        web.http.get(f"{web.base}preferences/{_tampered(url.rsplit('/', 1)[1])}").status_code == 400
    )
    unsub_token = web.unsub_url("ada@example.com").rsplit("/", 1)[1]
    assert web.http.get(f"{web.base}preferences/{unsub_token}").status_code == 200


# ---------------------------------------------------------------------------------------------
# The static archive


def test_feeds_have_their_content_types_and_parse(site_web: Web) -> None:
    web = site_web
    for name, ctype, version in (
        ("feed.xml", "application/rss+xml; charset=utf-8", "rss20"),
        ("atom.xml", "application/atom+xml; charset=utf-8", "atom10"),
    ):
        r = web.http.get(web.base + name)
        assert r.status_code == 200 and r.headers["content-type"] == ctype
        parsed = feedparser.parse(r.content)
        assert parsed.version == version and not parsed.bozo and len(parsed.entries) == 3


def test_pages_and_css_are_served(site_web: Web) -> None:
    web = site_web
    home = web.http.get(web.base)
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert home.content == (web.cfg.feed.output / "index.html").read_bytes()
    day = web.http.get(web.base + "2024/05/15/")
    assert day.content == (web.cfg.feed.output / "2024/05/15/index.html").read_bytes()
    assert web.http.get(web.base + "2024/05/15").status_code in (301, 307)
    css = web.http.get(web.base + "style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert web.http.get(web.base + "2024/05/31/").status_code == 404


def test_etag_and_last_modified_give_304(site_web: Web) -> None:
    web = site_web
    r = web.http.get(web.base + "feed.xml")
    etag, modified = r.headers["etag"], r.headers["last-modified"]
    again = web.http.get(web.base + "feed.xml", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    since = web.http.get(web.base + "feed.xml", headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    stale = web.http.get(web.base + "feed.xml", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200


def _raw_get(base: str, target: str) -> tuple[int, bytes]:
    """A request line sent as is: httpx would normalise the dot segments away."""
    host, port = base.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize(
    "target",
    [
        "/.build-manifest.json",
        "/2024/../.build-manifest.json",
        "/%2ebuild-manifest.json",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/2024/05/../../../secret.txt",
        "/..%2fsecret.txt",
        "/.hidden/x.html",
    ],
)
def test_dotfiles_and_traversal_are_404(site_web: Web, target: str) -> None:
    web = site_web
    outside = web.cfg.feed.output.parent / "secret.txt"
    outside.write_text("TOP SECRET")
    (web.cfg.feed.output / ".hidden").mkdir(exist_ok=True)
    (web.cfg.feed.output / ".hidden" / "x.html").write_text("TOP SECRET")
    manifest = (web.cfg.feed.output / MANIFEST).read_bytes()
    assert manifest  # what a leak of the private build manifest would show
    status, raw = _raw_get(web.base, target)
    assert status == 404 or 400 <= status < 500
    assert b"TOP SECRET" not in raw and manifest not in raw


# ---------------------------------------------------------------------------------------------
# The confirmation mail and the command


def test_confirmation_goes_to_the_maildir_without_smtp_host(tmp_path: Path) -> None:
    cfg = web_config(tmp_path, "https://papers.example.org/")
    assert cfg.smtp.host == ""
    send_confirmation(cfg, "ada@example.com", "https://papers.example.org/confirm/x.y")
    [path] = (cfg.smtp.outbox / "new").iterdir()
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert msg["To"] == "ada@example.com"
    assert "https://papers.example.org/confirm/x.y" in msg.get_body(("plain",)).get_content()


def test_confirmation_in_english(tmp_path: Path) -> None:
    cfg = web_config(tmp_path, "https://papers.example.org/")
    cfg = dataclasses.replace(cfg, site=dataclasses.replace(cfg.site, language="en"))
    raw = build_confirmation(cfg, "ada@example.com", "https://papers.example.org/confirm/x.y")
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "Confirm your subscription to Daily Papers"
    assert msg["Message-ID"].endswith("@localhost>")
    html = msg.get_body(("html",)).get_content()
    assert 'lang="en"' in html and "Confirm subscription" in html


def test_confirmation_logs_in_with_the_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def authenticator(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
        ok = (auth_data.login, auth_data.password) == (b"papers", b"s3cret")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends 535

    with smtp_server(authenticator=authenticator, auth_require_tls=False) as (inbox, port):
        cfg = web_config(tmp_path, "https://papers.example.org/", port)
        cfg = dataclasses.replace(cfg, smtp=dataclasses.replace(cfg.smtp, username="papers"))
        monkeypatch.setenv(cfg.smtp.password_env, "wrong")
        with pytest.raises(MailError, match="refused the login"):
            send_confirmation(cfg, "ada@example.com", "https://papers.example.org/confirm/x.y")
        monkeypatch.setenv(cfg.smtp.password_env, "s3cret")
        send_confirmation(cfg, "ada@example.com", "https://papers.example.org/confirm/x.y")
        assert len(inbox.to("ada@example.com")) == 1
        monkeypatch.delenv(cfg.smtp.password_env)
        with pytest.raises(MailError, match=cfg.smtp.password_env):
            send_confirmation(cfg, "ada@example.com", "https://papers.example.org/confirm/x.y")


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A TLS context with a self-signed certificate for 127.0.0.1 (made by openssl)."""
    cert, key = self_signed_cert(tmp_path_factory.mktemp("tls"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_confirmation_over_tls_verifies_the_certificate_unless_told_not_to(
    tmp_path: Path, server_tls: ssl.SSLContext, security: str
) -> None:
    args = (
        {"tls_context": server_tls, "require_starttls": True}
        if security == "starttls"
        else {"ssl_context": server_tls}
    )
    with smtp_server(**args) as (inbox, port):
        cfg = web_config(tmp_path, "https://papers.example.org/", port)
        smtp = dataclasses.replace(cfg.smtp, security=security, timeout=10)
        cfg = dataclasses.replace(cfg, smtp=smtp)
        # The default: a self-signed certificate is refused, nothing is sent.
        with pytest.raises(MailError, match="certificate not trusted"):
            send_confirmation(cfg, "ada@example.com", "https://papers.example.org/confirm/x.y")
        assert inbox.messages == []
        insecure = dataclasses.replace(cfg, smtp=dataclasses.replace(smtp, verify_tls=False))
        send_confirmation(insecure, "ada@example.com", "https://papers.example.org/confirm/x.y")
        assert len(inbox.to("ada@example.com")) == 1


def test_serve_refuses_to_start_without_the_secret(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[web]\nsecret_env = "PUBLISHER_TEST_NO_SUCH_SECRET"\n')
    env = {k: v for k, v in os.environ.items() if k != "PUBLISHER_TEST_NO_SUCH_SECRET"}
    r = run_publisher("serve", "--config", str(tmp_path / "config.toml"), env=env)
    assert "PUBLISHER_TEST_NO_SUCH_SECRET" in one_error_line(r)  # exit 1, no traceback
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "--host" in help_text and "--port" in help_text
