"""The web side's one route table (publisher/urls.py: WEB_ROUTES): the app's routes, the token
paths kept out of logs, caches and Referers, and the links mailed to readers all come from it."""

from __future__ import annotations

from starlette.routing import Route

from publisher import urls
from publisher.web import create_app

from .webhelpers import SECRET, web_config


def test_the_token_paths_are_the_routes_with_a_token() -> None:
    for route in urls.WEB_ROUTES:
        path = "/" + route.path.replace("{token}", "T0k-en_")
        matched = urls.TOKEN_PATH.match(path)
        assert (matched is not None) == route.has_token, route
        if matched:
            assert matched.group(0).endswith("/T0k-en_")


def test_the_links_are_the_routes_below_base_url(tmp_path) -> None:  # noqa: ANN001
    cfg = web_config(tmp_path, "https://papers.example.org/news/")
    base = urls.base_url(cfg)
    assert urls.subscribe_url(cfg) == base + "subscribe"
    assert urls.confirm_url(cfg, "abc") == base + "confirm/abc"
    assert urls.unsubscribe_url(cfg, "abc") == base + "unsubscribe/abc"
    assert urls.preferences_url(cfg, "abc") == base + "preferences/abc"
    assert urls.preferences_data_url(cfg, "abc") == base + "preferences/abc/data.json"


def test_the_app_serves_every_route_of_the_table_and_no_other(tmp_path) -> None:  # noqa: ANN001
    app = create_app(
        web_config(tmp_path, "https://papers.example.org/news/"),
        secret=SECRET,
        sender=lambda *a, **k: None,
    )
    served = [(r.path, set(r.methods or ())) for r in app.routes if type(r) is Route]
    assert served == [
        ("/" + r.path, {*r.methods, "HEAD"} if "GET" in r.methods else set(r.methods))
        for r in urls.WEB_ROUTES
    ]
