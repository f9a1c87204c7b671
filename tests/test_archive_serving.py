"""`publisher serve` sends the build's precompressed copies: NAME.br or NAME.gz with
Content-Encoding when the client accepts it, the file's own bytes otherwise, `Vary:
Accept-Encoding` on both, an ETag per variant. Real HTTP on loopback (uvicorn + httpx), raw bytes
read undecoded."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import brotli
import httpx
import pytest

from publisher.config import Config
from publisher.state import Store
from publisher.web import accepted_encodings, create_app

from .webhelpers import SECRET, live_server, web_config

TARGETS = {
    "": "index.html",
    "2024/05/15/": "2024/05/15/index.html",
    "2024/05/": "2024/05/index.html",
    "feed.xml": "feed.xml",
    "atom.xml": "atom.xml",
    "feed.json": "feed.json",
    "style.css": "style.css",
    "search.js": "search.js",
    "sitemap.xml": "sitemap.xml",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, str]]:
    tmp_path = tmp_path_factory.mktemp("serve")
    holder: dict[str, object] = {}

    def make_app(base: str):  # noqa: ANN202
        cfg = web_config(tmp_path, base)
        holder["cfg"] = cfg
        holder["store"] = store = Store.open(cfg)
        return create_app(cfg, secret=SECRET, store=store)

    with live_server(make_app) as base:
        yield holder["cfg"], base  # type: ignore[misc]
    holder["store"].close()  # type: ignore[attr-defined]


def _get(base: str, path: str, accept: str | None, **headers: str) -> tuple[httpx.Response, bytes]:
    """GET with exactly this Accept-Encoding (none at all for None); the body as sent."""
    with httpx.Client(timeout=30) as http:
        request = http.build_request("GET", base + path, headers=headers)
        if accept is None:
            del request.headers["Accept-Encoding"]
        else:
            request.headers["Accept-Encoding"] = accept
        response = http.send(request, stream=True)
        raw = b"".join(response.iter_raw())
        response.close()
    return response, raw


@pytest.mark.parametrize("path", list(TARGETS))
def test_br_then_gzip_when_accepted_and_the_files_own_bytes_otherwise(
    served: tuple[Config, str], path: str
) -> None:
    cfg, base = served
    original = (cfg.feed.output / TARGETS[path]).read_bytes()
    plain, plain_raw = _get(base, path, None)
    assert plain.status_code == 200
    assert "content-encoding" not in plain.headers
    assert plain_raw == original  # byte-identical
    assert plain.headers["vary"] == "Accept-Encoding"
    etags = {plain.headers["etag"]}
    for accept, coding, decode in (
        ("gzip, deflate, br", "br", brotli.decompress),
        ("br", "br", brotli.decompress),
        ("gzip", "gzip", gzip.decompress),
        ("br;q=0, gzip;q=0.5", "gzip", gzip.decompress),
        ("*", "br", brotli.decompress),
    ):
        r, raw = _get(base, path, accept)
        assert r.status_code == 200
        assert r.headers["content-encoding"] == coding, accept
        assert r.headers["vary"] == "Accept-Encoding"
        assert r.headers["content-type"] == plain.headers["content-type"]
        assert int(r.headers["content-length"]) == len(raw) < len(original) or len(original) < 200
        assert decode(raw) == original
        etags.add(r.headers["etag"])
    for accept in ("identity", "br;q=0, gzip;q=0", "*;q=0", "deflate"):
        r, raw = _get(base, path, accept)
        assert "content-encoding" not in r.headers and raw == original, accept
    assert len(etags) == 3  # plain, gzip, br: a cache never mixes them up


def test_each_variant_revalidates_to_304_with_its_own_etag(served: tuple[Config, str]) -> None:
    _, base = served
    r, _ = _get(base, "", "br")
    again, raw = _get(base, "", "br", **{"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and raw == b""
    assert again.headers["vary"] == "Accept-Encoding"
    # the br variant's ETag does not validate the gzip variant
    other, raw = _get(base, "", "gzip", **{"If-None-Match": r.headers["etag"]})
    assert other.status_code == 200 and gzip.decompress(raw)


def test_favicon_and_robots_are_served(served: tuple[Config, str]) -> None:
    cfg, base = served
    ico, raw = _get(base, "favicon.ico", None)
    assert ico.status_code == 200 and raw == (cfg.feed.output / "favicon.ico").read_bytes()
    assert raw[:4] == b"\x00\x00\x01\x00"  # an ICO header
    svg, _ = _get(base, "favicon.svg", None)
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    robots, raw = _get(base, "robots.txt", None)
    # built for the default base_url, before the test server's address was known
    assert robots.status_code == 200 and b"\nSitemap: http://localhost:8000/sitemap.xml\n" in raw


def test_feed_json_has_its_content_type(served: tuple[Config, str]) -> None:
    _, base = served
    r, _ = _get(base, "feed.json", "gzip")
    assert r.headers["content-type"] == "application/feed+json; charset=utf-8"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", set()),
        ("gzip, deflate, br, zstd", {"gzip", "deflate", "br", "zstd"}),
        ("BR;Q=0.1", {"br"}),
        ("gzip;q=0, *", {"br"}),
        ("*;q=0", set()),
        ("br;q=nonsense, gzip", {"gzip"}),
    ],
)
def test_accept_encoding_is_read_with_q_values(header: str, expected: set[str]) -> None:
    assert accepted_encodings(header) == expected
