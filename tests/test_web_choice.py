"""Reader choice on the web: the preferences page's POST form (cadence, topics, cap) applies
from the next edition; the signup form optionally takes cadence and topics. Over real HTTP,
with a real SMTP server on loopback, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from publisher import state as st
from publisher.config import TopicConfig
from publisher.digest import parse_file
from publisher.i18n import strings
from publisher.publish import send_digest
from publisher.state import Store
from publisher.web import create_app

from .pg import with_database
from .smtp_server import smtp_server
from .test_segments import titles, write_digest
from .test_web import Web
from .webhelpers import SECRET, Clock, live_server, web_config

T = strings("ko")
TOPICS = (
    TopicConfig("agents", "에이전트", ("agent",)),
    TopicConfig("efficiency", "효율화·양자화", ("quantiz",)),
    TopicConfig("rl", "강화학습", ("reinforcement",)),
)


@pytest.fixture
def web(tmp_path: Path, db_url: str) -> Iterator[Web]:
    clock = Clock()
    with smtp_server() as (inbox, port):
        holder: dict[str, object] = {}

        def make_app(base: str):  # noqa: ANN202
            cfg = with_database(web_config(tmp_path, base, port), db_url)
            cfg = dataclasses.replace(cfg, topics=TOPICS)
            store = Store.open(cfg)
            holder.update(cfg=cfg, store=store)
            return create_app(cfg, secret=SECRET, store=store, clock=clock)

        with (
            live_server(make_app) as base,
            httpx.Client(follow_redirects=False, timeout=30) as http,
        ):
            yield Web(holder["cfg"], base, holder["store"], inbox, clock, http)  # type: ignore[arg-type]
        holder["store"].close()  # type: ignore[attr-defined]


def checked(page: str, name: str) -> set[str]:
    return set(re.findall(rf'name="{name}" value="([^"]+)" checked', page))


def test_the_preferences_form_changes_the_choice_from_the_next_edition(
    web: Web, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBLISHER_SECRET", SECRET.decode())
    web.store.add_subscriber("ada@example.com", "Ada", status=st.ACTIVE, source="cli")
    url = web.manage_url("ada@example.com")
    page = web.http.get(url)
    assert page.status_code == 200 and T["choice_title"] in page.text
    assert checked(page.text, "cadence") == {"daily"} and checked(page.text, "topic") == set()

    first = parse_file(write_digest(tmp_path / "20.md", "2024-05-20"))
    send_digest(web.cfg, web.store, first, secret=SECRET)
    (mail,) = web.inbox.to("ada@example.com")
    assert len(titles(mail)) == 8  # daily, every paper

    r = web.http.post(
        url,
        data={"action": "choice", "cadence": "daily", "topic": ["agents", "efficiency"],
              "max_papers": "1"},
    )  # fmt: skip
    assert r.status_code == 200 and T["choice_saved"] in r.text
    assert checked(r.text, "topic") == {"agents", "efficiency"}
    assert 'name="max_papers" type="number" min="0" max="1000" step="1" value="1"' in r.text
    sub = web.store.get("ada@example.com")
    assert (sub.cadence, sub.topics, sub.max_papers, sub.choice_source) == (
        "daily",
        {"agents", "efficiency"},
        1,
        "web",
    )
    # The next edition follows the new choice: the most-voted paper of the two topics.
    second = parse_file(write_digest(tmp_path / "21.md", "2024-05-21"))
    send_digest(web.cfg, web.store, second, secret=SECRET)
    mails = web.inbox.to("ada@example.com")
    assert len(mails) == 2 and titles(mails[1]) == ["Quantized LLM B"]
    assert (
        "받는 내용: 매일 · 에이전트, 효율화·양자화 · 상위 1편"
        in mails[1].get_body(("plain",)).get_content()
    )

    # Paused: the reader stays subscribed and gets nothing.
    r = web.http.post(url, data={"action": "choice", "cadence": "paused", "max_papers": "0"})
    assert r.status_code == 200 and checked(r.text, "cadence") == {"paused"}
    third = parse_file(write_digest(tmp_path / "22.md", "2024-05-22"))
    send_digest(web.cfg, web.store, third, secret=SECRET)
    assert len(web.inbox.to("ada@example.com")) == 2
    assert web.state("ada@example.com") == (st.ACTIVE, False)

    # A bad value changes nothing.
    for bad in ({"cadence": "hourly"}, {"topic": "robots"}, {"max_papers": "-3"}):
        r = web.http.post(url, data={"action": "choice", **bad})
        assert r.status_code == 400 and T["invalid_choice"] in r.text
    sub = web.store.get("ada@example.com")
    assert (sub.cadence, sub.topics, sub.max_papers) == ("paused", frozenset(), 0)


def test_the_signup_form_takes_cadence_and_topics_for_a_new_address_only(web: Web) -> None:
    form = web.http.get(web.base + "subscribe")
    assert 'name="cadence" value="paused"' in form.text and 'value="agents"' in form.text
    # The weekly edition is offered too.
    assert 'name="cadence" value="weekly"' in form.text
    assert web.signup("wk@example.com", cadence="weekly", topic="rl").status_code == 200
    assert (web.store.get("wk@example.com").cadence, web.store.get("wk@example.com").topics) == (
        "weekly",
        {"rl"},
    )
    assert web.signup("hr@example.com", cadence="hourly").status_code == 400
    r = web.signup("new@example.com", "New", cadence="daily", topic=["agents", "rl"])
    assert r.status_code == 200
    sub = web.store.get("new@example.com")
    assert (sub.status, sub.cadence, sub.topics, sub.choice_source) == (
        st.PENDING,
        "daily",
        {"agents", "rl"},
        "web",
    )
    # Someone else's form for a known address does not change that reader's choice.
    web.store.add_subscriber("old@example.com", "Old", status=st.ACTIVE, source="cli")
    web.clock.advance(3600)
    web.signup("old@example.com", cadence="paused")
    assert web.store.get("old@example.com").cadence == "daily"
    # Without the fields: daily, every paper; an unknown topic is refused.
    web.signup("plain@example.com")
    plain = web.store.get("plain@example.com")
    assert (plain.cadence, plain.topics, plain.choice_source) == ("daily", frozenset(), None)
    assert web.signup("x@example.com", topic="robots").status_code == 400
    assert web.store.get("x@example.com") is None


def test_the_unsubscribe_page_offers_weekly_and_pause_and_one_click_still_unsubscribes(
    web: Web,
) -> None:
    web.store.add_subscriber("ada@example.com", "Ada", status=st.ACTIVE, source="cli")
    web.store.set_choice("ada@example.com", st.ChoiceUpdate(topics=frozenset({"rl"})), "cli")
    link = web.unsub_url("ada@example.com")
    page = web.http.get(link)
    assert page.status_code == 200 and T["pause_button"] in page.text
    pause_to = re.search(r'action="([^"]+/preferences/[^"]+)"', page.text)
    assert pause_to is not None
    assert web.state("ada@example.com") == (st.ACTIVE, False)  # the GET changed nothing
    # "Switch to weekly": the cadence only, still subscribed.
    assert T["weekly_button"] in page.text and 'name="action" value="weekly"' in page.text
    r = web.http.post(pause_to.group(1), data={"action": "weekly"})
    assert r.status_code == 200 and T["choice_saved"] in r.text
    sub = web.store.get("ada@example.com")
    assert (sub.cadence, sub.topics, sub.status) == ("weekly", {"rl"}, st.ACTIVE)
    r = web.http.post(pause_to.group(1), data={"action": "pause"})
    assert r.status_code == 200 and T["choice_saved"] in r.text
    sub = web.store.get("ada@example.com")
    assert (sub.cadence, sub.topics, sub.status) == ("paused", {"rl"}, st.ACTIVE)
    assert not web.store.is_suppressed("ada@example.com")
    # RFC 8058's one-click POST is untouched: it unsubscribes at once.
    assert web.post_one_click(link).status_code == 200
    assert web.state("ada@example.com") == (st.UNSUBSCRIBED, True)


def test_a_browser_changes_the_choice_on_the_preferences_page_and_reads_it_back(
    tmp_path: Path,
) -> None:
    """Headless Chromium (tests/browser.py) ticks topics, picks paused, sets a cap, saves,
    then reloads the page and finds what it chose."""
    from .browser import CHROMIUM, MISSING, chromium

    if not CHROMIUM.exists():
        pytest.skip(MISSING)
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from publisher.tokens import sign_id
    from publisher.urls import preferences_url

    with smtp_server() as (_inbox, port):
        stores: list[Store] = []

        def make_app(base: str):  # noqa: ANN202
            cfg = dataclasses.replace(web_config(tmp_path, base, port), topics=TOPICS)
            stores.append(Store.open(cfg))
            stores[0].add_subscriber("ada@example.com", "Ada", status=st.ACTIVE, source="cli")
            return create_app(cfg, secret=SECRET, store=stores[0])

        with live_server(make_app) as base, chromium() as browser:
            store = stores[0]
            ada = store.get("ada@example.com")
            cfg = dataclasses.replace(web_config(tmp_path, base, port), topics=TOPICS)
            url = preferences_url(cfg, sign_id(SECRET, "manage", ada.id))
            page = browser.new_page()
            page.goto(url)
            page.check("input[name=topic][value=agents]")
            page.check("input[name=topic][value=rl]")
            page.check("input[name=cadence][value=paused]")
            page.fill("#max_papers", "7")
            with page.expect_navigation():
                page.click("form.choice button[type=submit]")
            assert page.locator("[role=status]").inner_text() == T["choice_saved"]
            page.goto(url)  # read back: a fresh GET shows what is stored
            assert page.is_checked("input[name=cadence][value=paused]")
            assert page.is_checked("input[name=topic][value=agents]")
            assert page.is_checked("input[name=topic][value=rl]")
            assert not page.is_checked("input[name=topic][value=efficiency]")
            assert page.input_value("#max_papers") == "7"
            page.close()
            sub = store.get("ada@example.com")
            assert (sub.cadence, sub.topics, sub.max_papers) == ("paused", {"agents", "rl"}, 7)
        stores[0].close()
