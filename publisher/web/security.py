"""Security headers on every response of `publisher serve`: the Content-Security-Policy, nosniff,
frame-ancestors and a Referrer-Policy (`SecurityHeaders`, an ASGI middleware); token pages are
never cached and send no Referer."""

from __future__ import annotations

import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Config
from ..urls import TOKEN_PATH, base_url

# Pages behind a token or a form: never cached, and no Referer (SecurityHeaders adds the rest,
# and forces these two on every token path, whatever answers there).
PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

# The Content-Security-Policy of every response. The pages have no script at all and no inline
# style (the web pages' own CSS is /web.css); the archive's thumbnails come from https CDNs.
# An archive search (Pagefind) would add "'self' 'wasm-unsafe-eval'" to script-src here.
CSP_DIRECTIVES: dict[str, str] = {
    "default-src": "'none'",
    "script-src": "'none'",
    "style-src": "'self'",
    "img-src": "'self' https: data:",
    "media-src": "'self' https:",
    "font-src": "'self'",
    "connect-src": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}


def content_security_policy(cfg: Config) -> str:
    """CSP_DIRECTIVES as a header value; forms may also post to `site.base_url`'s origin (the
    public address behind a proxy), and scripts from 'self' run when `[feed] search` is on."""
    directives = dict(CSP_DIRECTIVES)
    if cfg.feed.search:
        # the archive's search: Pagefind's own script and its WebAssembly (no inline script)
        directives["script-src"] = "'self' 'wasm-unsafe-eval'"
    origin = re.match(r"https?://[^/]+", base_url(cfg))
    if origin:
        directives["form-action"] += " " + origin.group(0)
    return "; ".join(f"{k} {v}" for k, v in directives.items())


def security_headers(cfg: Config, private: bool) -> dict[str, str]:
    """The headers every response carries; `private` (token pages) adds no-store and
    no-referrer, which always win over what the endpoint set."""
    headers = {
        "Content-Security-Policy": content_security_policy(cfg),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Referrer-Policy": "no-referrer" if private else "strict-origin-when-cross-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if private:
        headers["Cache-Control"] = "no-store"
    return headers


class SecurityHeaders:
    """ASGI middleware: `security_headers` on every HTTP response, whatever produced it (the
    endpoints, the static archive, a 404 or 405, an error page)."""

    def __init__(self, app: ASGIApp, cfg: Config) -> None:
        self.app = app
        self.public = security_headers(cfg, private=False)
        self.private = security_headers(cfg, private=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = TOKEN_PATH.match(scope.get("path", "")) is not None
        extra = self.private if private else self.public

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    if private or name.lower() not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
