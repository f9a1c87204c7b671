"""The static archive from `[feed] output`: the feeds' content types, the build's precompressed
NAME.br / NAME.gz chosen by the client's Accept-Encoding, no dotfiles, path-only redirects."""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import ASGIApp, Scope

from ..urls import ATOM_FILE, JSON_FILE, RSS_FILE

FEED_TYPES = {
    RSS_FILE: "application/rss+xml; charset=utf-8",
    ATOM_FILE: "application/atom+xml; charset=utf-8",
    JSON_FILE: "application/feed+json; charset=utf-8",
}


# `publisher build` writes NAME.br and NAME.gz beside each page, feed and script; preferred in
# this order when the client accepts them.
PRECOMPRESSED = (("br", ".br"), ("gzip", ".gz"))


def accepted_encodings(header: str) -> set[str]:
    """The codings an Accept-Encoding header allows (RFC 9110 12.5.3): `q=0` refuses one, `*`
    stands for any not named."""
    allowed: dict[str, bool] = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        allowed[name] = q > 0
    star = allowed.pop("*", None)
    out = {name for name, ok in allowed.items() if ok}
    if star:
        out |= {coding for coding, _ in PRECOMPRESSED if coding not in allowed}
    return out


class ArchiveFiles(StaticFiles):
    """StaticFiles (ETag, Last-Modified, 304, traversal checks) that also refuses dotfiles, gives
    the feeds their own content types, tolerates an output folder not built yet, and serves the
    build's precompressed NAME.br / NAME.gz with Content-Encoding when the client accepts them
    (`Vary: Accept-Encoding` either way; each variant has its own ETag)."""

    def file_response(
        self,
        full_path: Any,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        path = os.fspath(full_path)
        variants = [(c, path + ext) for c, ext in PRECOMPRESSED if os.path.isfile(path + ext)]
        if not variants:
            return super().file_response(full_path, stat_result, scope, status_code)
        accepted = accepted_encodings(Headers(scope=scope).get("accept-encoding", ""))
        media_type = FileResponse(path, stat_result=stat_result).media_type
        chosen = next(((c, p) for c, p in variants if c in accepted), None)
        if chosen is None:
            response = super().file_response(full_path, stat_result, scope, status_code)
        else:
            coding, variant = chosen
            response = FileResponse(
                variant,
                status_code=status_code,
                stat_result=os.stat(variant),
                media_type=media_type,
                headers={"content-encoding": coding},
            )
            if self.is_not_modified(response.headers, Headers(scope=scope)):
                response = NotModifiedResponse(response.headers)
        response.headers["vary"] = "Accept-Encoding"
        return response

    async def check_config(self) -> None:
        if self.directory is not None and not os.path.isdir(self.directory):
            return  # not built yet: every path is a 404 until `publisher build` runs
        await super().check_config()

    async def get_response(self, path: str, scope: Scope) -> Response:
        raw = scope.get("path", "")
        if any(p.startswith(".") for p in raw.split("/")) or any(
            p.startswith(".") for p in PurePosixPath(path).parts
        ):
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        if isinstance(response, RedirectResponse):
            # StaticFiles' `/2025/04` -> `/2025/04/` builds an absolute URL from the Host
            # header (`Host: evil.example` -> `http://evil.example/2025/04/`): redirect to the
            # path instead, which the browser resolves against the address it asked.
            response.headers["location"] = _slash_location(scope)
        name = PurePosixPath(path).name
        if name in FEED_TYPES and response.status_code == 200:
            response.headers["content-type"] = FEED_TYPES[name]
        if response.status_code in (200, 304):
            # Revalidate every time: the ETag makes that a cheap 304, and a new day shows at once.
            response.headers["cache-control"] = "no-cache"
        return response


def _slash_location(scope: Scope) -> str:
    """The request's own path with a trailing slash, as a path-only Location (query kept)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and not path.startswith(root):  # ASGI servers that leave root_path out of path
        path = root + path
    # One leading slash: `//evil.example/x` would be a scheme-relative URL to another host.
    path = "/" + path.lstrip("/")
    location = quote(path, safe="/:@!$&'()*+,;=-._~") + "/"
    query = scope.get("query_string", b"")
    return f"{location}?{query.decode('latin-1')}" if query else location


class ArchiveMount(Mount):
    """The archive at `/`, below every other route: a path one of them serves (with another
    method) is theirs, so `PUT /subscribe` gets the route's 405 and its `Allow: GET, HEAD,
    POST`, not the archive's `GET, HEAD`."""

    def __init__(self, app: ASGIApp, others: list[Route]) -> None:
        super().__init__("/", app=app)
        self.others = others

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if any(route.matches(scope)[0] != Match.NONE for route in self.others):
            return Match.NONE, {}
        return super().matches(scope)
