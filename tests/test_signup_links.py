"""Readers can find the signup form: every archive page links to it in its header, the index
has a signup box that `publisher serve` accepts as it is (real HTTP), and every email says
"Forwarded to you? Subscribe" with the link, in both of its parts."""

from __future__ import annotations

import base64
import email
import email.policy
import os
from pathlib import Path
from urllib.parse import urljoin

import html5lib
import httpx

from publisher.config import load_config
from publisher.digest import find_digests, parse_file
from publisher.mailer import MessageFactory
from publisher.newsletter import render_newsletter
from publisher.urls import day_path, month_path, subscribe_url

from .conftest import ROOT
from .sitehelpers import DAYS
from .webhelpers import live_server, web_config

SECRET = base64.b64encode(os.urandom(32))
NS = {"h": "http://www.w3.org/1999/xhtml"}


def test_every_page_links_to_the_signup_and_the_index_form_signs_up(tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    def sender(cfg, address: str, url: str, **_: object) -> None:  # noqa: ANN001 - the mail
        asked.append((address, url))

    def make_app(base: str):  # noqa: ANN202
        from publisher.web import create_app

        return create_app(web_config(tmp_path, base), secret=SECRET, sender=sender)

    with live_server(make_app) as base:
        cfg = web_config(tmp_path, base)
        target = subscribe_url(cfg)
        pages = ["", month_path(2024, 5), day_path(DAYS[0])]
        form = None
        for page in pages:
            url = urljoin(base, page)
            r = httpx.get(url)
            assert r.status_code == 200, url
            tree = html5lib.parse(r.text, namespaceHTMLElements=True)
            links = tree.findall(".//h:header/h:nav/h:a[@class='subscribe']", NS)
            assert [urljoin(url, a.get("href")) for a in links] == [target], url
            if page == "":
                form = tree.find(".//h:form[@class='signup']", NS)
        assert form is not None, "the index has a signup box"
        assert form.get("method") == "post"
        action = urljoin(base, form.get("action"))
        assert action == target
        fields = [i.get("name") for i in form.findall(".//h:input", NS)]
        assert fields == ["email"]
        # What a browser sends when a reader types an address and presses the button.
        r = httpx.post(action, data={"email": "reader@example.com"})
    assert r.status_code == 200, r.text
    assert [a for a, _ in asked] == ["reader@example.com"]


def test_the_email_says_forwarded_to_you_subscribe_in_both_parts() -> None:
    cfg = load_config(ROOT / "config.toml")
    digest = parse_file(find_digests(ROOT / "digests")[-1])
    raw = MessageFactory(render_newsletter(digest, cfg), cfg, SECRET).build("ada@example.com", "")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert f"전달받은 메일인가요? 구독하기: {subscribe_url(cfg)}" in text
    tree = html5lib.parse(html, namespaceHTMLElements=True)
    links = [
        a
        for a in tree.iter("{http://www.w3.org/1999/xhtml}a")
        if a.text == "전달받은 메일인가요? 구독하기"
    ]
    assert [a.get("href") for a in links] == [subscribe_url(cfg)]
