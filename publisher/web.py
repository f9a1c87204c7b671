"""`publisher serve`: the public web side.

- The static archive from `[feed] output` (pages, feeds with their own content types, ETag and
  Last-Modified with 304s). Dotfiles (the private `.build-manifest.json`) and anything outside the
  folder answer 404.
- Double opt-in: GET /subscribe shows a form; POST /subscribe stores the address as pending and
  mails `{base_url}confirm/TOKEN`; GET /confirm/TOKEN shows a button and changes nothing (mail
  scanners fetch every link), its POST makes the address active. The answer to a valid
  address is the same page whether or not it is already on the list, and the mail is
  rate-limited per address and per client, in the database: it survives restarts, and any
  number of `publisher serve` processes on one database behave as one.
- /unsubscribe/TOKEN: GET shows a button and never changes anything (mail scanners prefetch
  links); POST, including RFC 8058's one-click `List-Unsubscribe=One-Click`, unsubscribes and
  suppresses the address and answers 200 with no cookie and no redirect, however often.
- /preferences/TOKEN: status, subscribe again, change the name, a JSON copy of what is stored,
  and "delete my data" (the address then survives only as a suppression hash).
- Every response carries the security headers (`SecurityHeaders`: Content-Security-Policy,
  nosniff, frame-ancestors 'none', a Referrer-Policy); token pages are never cached and send no
  Referer. `log_config()` is `publisher serve`'s logging: the access log shows no token.

Tokens (publisher/tokens.py) name a subscriber id, never an address; the old form that earlier
releases mailed (the address in clear) still verifies, as do tokens signed with a previous
secret (`<secret_env>_PREVIOUS`).

The store is the one source of truth for who is mailed, so an unsubscribe here is honoured by the
very next `queue_pending`/`pending_for`, whatever process runs the send.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import state as st
from . import urls
from .config import Config
from .i18n import strings
from .mailrules import ReturnPath
from .state import InvalidAddress, Store, normalize_email, normalize_name
from .state.health import StorageError
from .state.limits import canonical_mailbox
from .templating import jinja_env
from .tokens import TokenError, read, sign_id
from .topics import Choice
from .urls import ATOM_FILE, JSON_FILE, RSS_FILE, base_url
from .web_mail import MailError, check_sender, send_confirmation

# A confirmation link older than this no longer works: an old mail found by a scanner months after
# an unsubscribe must not subscribe anyone again.
CONFIRM_MAX_AGE = dt.timedelta(days=7)
# The cadences a reader may pick on the web (publisher send and publisher send --weekly).
WEB_CADENCES = ("daily", "weekly", "paused")
# Forms and one-click bodies are a few dozen bytes; anything bigger is not one of ours.
MAX_BODY = 8 * 1024
FEED_TYPES = {
    RSS_FILE: "application/rss+xml; charset=utf-8",
    ATOM_FILE: "application/atom+xml; charset=utf-8",
    JSON_FILE: "application/feed+json; charset=utf-8",
}
# Pages behind a token or a form: never cached, and no Referer (SecurityHeaders adds the rest,
# and forces these two on every token path, whatever answers there).
PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

# send_confirmation's shape: (cfg, email, url, *, envelope_from=None).
Sender = Callable[..., None]

# ---------------------------------------------------------------------------------------------
# Security headers

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
# The paths whose last segment is a token: the token must not leak through a Referer, a cache
# or a log line.
# The server's own error log (uvicorn's, so its handlers and the token redaction apply).
log = logging.getLogger("uvicorn.error")

TOKEN_PATH = re.compile(r"/(unsubscribe|confirm|preferences)/[^/?#\s\"]+")
REDACTED = "[token]"


def mask_address(email: str) -> str:
    """`ada@example.org` -> `a***@example.org`: enough for an operator to tell readers apart in
    a log, not enough to mail them."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}" if local else "***"


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


# ---------------------------------------------------------------------------------------------
# Logging of `publisher serve`


def redact(text: str) -> str:
    """`text` with the token of every token path replaced by REDACTED."""
    return TOKEN_PATH.sub(lambda m: f"/{m.group(1)}/{REDACTED}", text)


class RedactTokens(logging.Filter):
    """Redacts tokens from a log record (uvicorn's access log passes the path as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            args = record.args.items()
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args}
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging, with RedactTokens on every handler: no token in any line."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    return config


class ExpiredLink(TokenError):
    """A genuine confirmation link, older than CONFIRM_MAX_AGE."""


# ---------------------------------------------------------------------------------------------
# Rate limits


# The per-client and the per-address limits are token buckets in the database
# (publisher/state/limits.py), shared by every `publisher serve` process on it: N processes
# behind one proxy allow what one would.
CLIENT_PERIOD = 3600.0  # signups_per_client_per_hour
# Whatever `confirm_resend_minutes` says (0 turns the spacing off), one mailbox gets at most
# MAILBOX_BURST confirmation mails in a row, then one per MAILBOX_REFILL seconds: a few an hour
# at most, whatever the spellings and clients used to ask (issue 27).
MAILBOX_BURST = 3
MAILBOX_REFILL = 3600.0


def _client_key(client: str) -> str:
    # Keys are at most 100 characters; a client address is short, anything else is hashed.
    if len(client) <= 64 and client.isprintable():
        return "web.client:" + client
    return "web.client#" + hashlib.sha256(client.encode()).hexdigest()[:40]


def _address_key(email: str) -> str:
    # One allowance per mailbox, not per spelling: `victim+1@`, `victim+2@` and Gmail's dotted
    # variants all reach one person (issue 27). Addresses may be 320 characters, and the table
    # need not show them: hashed.
    mailbox = canonical_mailbox(email)
    return "web.confirm:" + hashlib.sha256(mailbox.encode()).hexdigest()[:40]


def _mailbox_key(email: str) -> str:
    # The per-mailbox cap's bucket (MAILBOX_BURST), beside the spacing one above.
    mailbox = canonical_mailbox(email)
    return "web.mailbox:" + hashlib.sha256(mailbox.encode()).hexdigest()[:40]


# ---------------------------------------------------------------------------------------------
# Static archive


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


# ---------------------------------------------------------------------------------------------
# The application


class WebSide:
    """The endpoints, bound to one config, store, secret and clock."""

    def __init__(
        self,
        cfg: Config,
        secret: bytes,
        store: Store,
        sender: Sender,
        clock: Callable[[], float],
        secrets: list[bytes] | None = None,
    ) -> None:
        self.cfg = cfg
        self.secret = secret  # signs
        self.secrets = secrets or [secret]  # verify: the current secret, then previous ones
        self.store = store
        self.sender = sender
        self.clock = clock
        self.t = strings(cfg.site.language)
        self._registry: Any = None  # /metrics' collector registry, made on the first scrape

    # -- rendering ---------------------------------------------------------------------------

    def page(self, template: str, heading: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = (
            jinja_env(self.cfg)
            .get_template(template)
            .render(
                site=self.cfg.site,
                root=base_url(self.cfg),
                rss_url=urls.absolute_url(self.cfg, RSS_FILE),
                atom_url=urls.absolute_url(self.cfg, ATOM_FILE),
                heading=heading,
                **ctx,
            )
        )
        return HTMLResponse(html, status_code=status, headers=PRIVATE_HEADERS)

    def message(self, heading: str, *lines: str, status: int = 200) -> HTMLResponse:
        return self.page("web/page.html", heading, status, lines=lines)

    def bad_link(self) -> HTMLResponse:
        return self.message(self.t["bad_link_title"], self.t["bad_link_body"], status=400)

    def expired_link(self) -> HTMLResponse:
        return self.page(
            "web/expired.html",
            self.t["expired_title"],
            status=400,
            subscribe_url=urls.subscribe_url(self.cfg),
        )

    # -- subscribe ---------------------------------------------------------------------------

    def subscribe_form(
        self, error: str = "", email: str = "", name: str = "", status: int = 200
    ) -> HTMLResponse:
        return self.page(
            "web/subscribe.html",
            self.t["subscribe_title"],
            status,
            action=urls.subscribe_url(self.cfg),
            error=error,
            email=email,
            name=name,
            choice=Choice(),  # the defaults: daily, every paper
            cadences=WEB_CADENCES,
            topics=self.cfg.topics,
        )

    async def subscribe(self, request: Request) -> Response:
        if request.method != "POST":  # GET, and the HEAD Starlette adds to every GET route
            return self.subscribe_form()
        body = await _read_body(request)
        if body is None:
            return self.message(self.t["too_large"], self.t["too_large"], status=413)
        client = request.client.host if request.client else "unknown"
        allowed = await run_in_threadpool(
            self.store.take_token,
            _client_key(client),
            max(self.cfg.web.signups_per_client_per_hour, 1),
            CLIENT_PERIOD,
            self.clock(),
        )
        if not allowed:
            return self.message(self.t["too_many"], self.t["too_many"], status=429)
        form = await request.form(max_files=0, max_fields=10 + len(self.cfg.topics))
        raw_email, name, trap = (_field(form, k) for k in ("email", "name", "website"))
        try:
            # Optional: cadence and topics (a form without them gives daily, every paper).
            choice = _choice_of(form, self.cfg, with_max=False)
        except ValueError:
            return self.subscribe_form(self.t["invalid_choice"], raw_email[:320], status=400)
        try:
            email = normalize_email(
                raw_email, check_deliverability=self.cfg.subscribers.check_deliverability
            )
        except InvalidAddress:
            return self.subscribe_form(
                self.t["invalid_email"], raw_email[:320], normalize_name(name), status=400
            )
        neutral = self.message(self.t["check_inbox_title"], self.t["check_inbox_body"])
        if trap:
            return neutral
        try:
            await run_in_threadpool(self._signup, email, normalize_name(name), choice)
        except MailError:
            return self.message(self.t["send_failed"], self.t["send_failed"], status=503)
        return neutral

    def _signup(self, email: str, name: str, choice: st.ChoiceUpdate | None = None) -> None:
        """Store the address as pending (an existing subscriber keeps its status and name) and
        mail a confirmation link, at most once per mailbox (`canonical_mailbox`: every spelling
        of one address) per `confirm_resend_minutes`, and at most MAILBOX_BURST in a row, then
        one an hour."""
        now = self.clock()
        key = _address_key(email)
        period = self.cfg.web.confirm_resend_minutes * 60.0
        # The check and the take are one transaction, shared by every process; the mail goes
        # out after it: a slow SMTP server must not hold up every other signup. A failed send
        # gives the token back so the person may retry.
        if not self.store.take_token(key, 1, period, now):
            return
        cap = (_mailbox_key(email), MAILBOX_BURST, MAILBOX_BURST * MAILBOX_REFILL)
        if not self.store.take_token(*cap, now):
            self.store.give_back_token(key, 1, period, now)  # nothing was sent
            return
        # Only a new row takes the form's name: an unconfirmed form must not rename an existing
        # subscriber.
        sub, created = self.store.add_subscriber(
            email, name, status=st.PENDING, source="web", rename=False
        )
        if created and choice is not None and choice.values() != {"cadence": "daily", "topics": ""}:
            # Like the name, only a new row takes the form's choice (an unconfirmed form must
            # not change an existing reader's); it is the reader's own: `web`.
            self.store.set_choice(email, choice, "web")
        try:
            token = sign_id(self.secret, "confirm", sub.id, now)  # names when it was issued
            self.sender(
                self.cfg,
                email,
                urls.confirm_url(self.cfg, token),
                envelope_from=self._return_path(sub.id, now),
            )
        except MailError as exc:
            self.store.give_back_token(key, 1, period, self.clock())
            self.store.give_back_token(*cap, self.clock())
            # A row made by this signup goes: nobody can confirm it, and a retry makes it
            # again. An existing one (pending from before, or a subscriber) stays as it was.
            dropped = created and self.store.discard_pending(sub.id)
            # The operator's one line: the cause, and the subscriber's id, not the address
            # (the server's reply may quote it: masked).
            log.error(
                "confirmation mail for subscriber %d not sent (%s): %s",
                sub.id,
                "pending row removed" if dropped else "row kept: it existed before",
                str(exc).replace(email, mask_address(email)),
            )
            raise

    def _return_path(self, subscriber_id: int, now: float) -> str | None:
        """The VERP envelope sender of a confirmation mail (None: the From address)."""
        if not self.cfg.email.return_path:
            return None
        day = dt.datetime.fromtimestamp(now, self.cfg.tz).date()
        return ReturnPath(self.cfg.email.return_path, self.secret).address(subscriber_id, day)

    def _email(self, token: str, purposes: tuple[str, ...], now: float | None = None) -> str:
        """The address a valid token for one of `purposes` names (an id is looked up);
        TokenError otherwise, ExpiredLink for a confirmation older than CONFIRM_MAX_AGE."""
        for purpose in purposes:
            try:
                subject = read(self.secrets, token, purpose)
            except TokenError:
                continue
            if subject.issued is not None and now is not None:
                age = now - subject.issued
                if age < -300 or age > CONFIRM_MAX_AGE.total_seconds():
                    raise ExpiredLink("expired confirmation token")
            if subject.subscriber_id is not None:
                sub = self.store.get_by_id(subject.subscriber_id)
                if sub is None:
                    raise TokenError("no such subscriber")
                return sub.email
            try:
                return normalize_email(subject.email or "")
            except InvalidAddress:
                raise TokenError("not an address") from None
        raise TokenError("invalid token")

    async def _subject(self, token: str, purposes: tuple[str, ...]) -> str | None:
        try:
            return await run_in_threadpool(self._email, token, purposes)
        except TokenError:
            return None

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            email = await run_in_threadpool(self._email, token, ("confirm",), self.clock())
        except ExpiredLink:
            return self.expired_link()
        except TokenError:
            return self.bad_link()
        if request.method != "POST":
            # Never act on a GET (or HEAD): mail scanners and link previewers fetch every link
            # in a message, and an address someone else typed in must not be confirmed by them.
            return self.page(
                "web/confirm.html",
                self.t["confirm_action"],
                email=email,
                action=urls.confirm_url(self.cfg, token),
            )
        if await _read_body(request) is None:
            return self.message(self.t["too_large"], self.t["too_large"], status=413)
        # A confirmed opt-in is fresh consent: it lifts an earlier unsubscribe or bounce.
        # Idempotent: a second POST finds the address active and leaves it so.
        await run_in_threadpool(self.store.resubscribe, email, "", "web")
        return self.page(
            "web/page.html",
            self.t["confirmed_title"],
            lines=[self.t["confirmed_body"].format(email=email, title=self.cfg.site.title)],
        )

    # -- unsubscribe -------------------------------------------------------------------------

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        email = await self._subject(token, ("unsubscribe",))
        if email is None:
            return self.bad_link()
        if request.method != "POST":
            # Never act on a GET (or HEAD): link scanners and prefetchers fetch every URL in a
            # mail.
            return self.page(
                "web/unsubscribe.html",
                self.t["unsubscribe_title"],
                email=email,
                action=urls.unsubscribe_url(self.cfg, token),
                # Instead of leaving: pause (still subscribed, nothing suppressed) or change
                # what they get, on the preferences page (which takes this token too).
                preferences_action=urls.preferences_url(self.cfg, token),
            )
        # RFC 8058: the body is `List-Unsubscribe=One-Click`, urlencoded or multipart. Our own
        # button posts the same. The signed token is the authority, so the body is only size-
        # checked: a client that garbles it must still be able to leave the list.
        if await _read_body(request) is None:
            return self.message(self.t["too_large"], self.t["too_large"], status=413)
        # Suppresses even an address with no subscriber row, so a later CSV row cannot mail it.
        await run_in_threadpool(self.store.unsubscribe, email)
        return self.page(
            "web/page.html",
            self.t["unsubscribed_title"],
            lines=[self.t["unsubscribed_body"].format(email=email, title=self.cfg.site.title)],
        )

    # -- preferences -------------------------------------------------------------------------

    async def preferences(self, request: Request) -> Response:
        token = request.path_params["token"]
        email = await self._subject(token, ("manage", "unsubscribe"))
        if email is None:
            return self.bad_link()
        notice = ""
        choice_saved = choice_error = False
        if request.method == "POST":
            if await _read_body(request) is None:
                return self.message(self.t["too_large"], self.t["too_large"], status=413)
            form = await request.form(max_files=0, max_fields=8 + len(self.cfg.topics))
            action = _field(form, "action")
            if action == "resubscribe":
                # The token was mailed to this address: using it is the owner's fresh consent.
                await run_in_threadpool(self.store.resubscribe, email, "", "web")
            elif action == "rename":
                if await run_in_threadpool(self.store.rename, email, _field(form, "name")):
                    notice = self.t["name_saved"]
            elif action == "delete":
                # Erasure: the row, its sends and bounces go; the address stays only as a
                # suppression hash, so a CSV sync cannot add it back. (No audit trail exists
                # yet to record it in.)
                await run_in_threadpool(self.store.delete_data, email)
                return self.page(
                    "web/page.html",
                    self.t["deleted_title"],
                    lines=[self.t["deleted_body"].format(email=email, title=self.cfg.site.title)],
                )
            elif action == "choice":
                choice_saved, choice_error = await self._save_choice(email, form)
            elif action in ("pause", "weekly"):
                # The unsubscribe page's "pause instead" and "switch to weekly": only the
                # cadence changes.
                pause = st.ChoiceUpdate(cadence="paused" if action == "pause" else "weekly")
                try:
                    await run_in_threadpool(self.store.set_choice, email, pause, "web")
                    choice_saved = True
                except st.UnknownSubscriber:
                    choice_error = True
        sub = await run_in_threadpool(self.store.get, email)
        status = sub.status if sub else None
        # The page's unsubscribe button: a token naming the id, or the very token the reader
        # came with when the address has no row (an old-form link).
        unsubscribe_action = urls.unsubscribe_url(
            self.cfg, sign_id(self.secret, "unsubscribe", sub.id) if sub else token
        )
        if status == st.ACTIVE and not await run_in_threadpool(self.store.is_suppressed, email):
            status_text, active = self.t["status_active"], True
        elif status == st.PENDING:
            status_text, active = self.t["status_pending"], False
        else:
            status_text, active = self.t["status_inactive"], False
        return self.page(
            "web/preferences.html",
            self.t["preferences_title"],
            email=email,
            status_text=status_text,
            active=active,
            action=urls.preferences_url(self.cfg, token),
            unsubscribe_action=unsubscribe_action,
            data_url=urls.preferences_data_url(self.cfg, token),
            has_row=sub is not None,
            name=sub.name if sub else "",
            notice=notice,
            choice=sub,  # its cadence, topics and max_papers; None: no row, no choice form
            cadences=WEB_CADENCES,
            topics=self.cfg.topics,
            signup=False,
            choice_saved=choice_saved,
            choice_error=choice_error,
            status=400 if choice_error else 200,
        )

    async def _save_choice(self, email: str, form: Any) -> tuple[bool, bool]:
        """The preferences form's cadence, topics and cap, stored as the reader's own choice
        (`web`: a CSV import never overwrites it). (saved, invalid)."""
        try:
            update = _choice_of(form, self.cfg, with_max=True)
        except ValueError:
            return False, True
        try:
            await run_in_threadpool(self.store.set_choice, email, update, "web")
        except st.UnknownSubscriber:
            return False, True
        return True, False

    async def preferences_data(self, request: Request) -> Response:
        email = await self._subject(request.path_params["token"], ("manage", "unsubscribe"))
        if email is None:
            return self.bad_link()
        data = await run_in_threadpool(self.store.stored_data, email)
        body = json.dumps(data, ensure_ascii=False, indent=2, default=_json_default)
        headers = dict(PRIVATE_HEADERS)
        headers["Content-Disposition"] = 'attachment; filename="subscription.json"'
        return Response(body, media_type="application/json", headers=headers)

    async def web_css(self, request: Request) -> Response:
        """The web pages' own styles (templates/web/web.css): a file, so the CSP needs no
        'unsafe-inline'."""
        env = jinja_env(self.cfg)
        css, _, _ = env.loader.get_source(env, "web/web.css")  # type: ignore[union-attr]
        return Response(css, media_type="text/css; charset=utf-8")

    def _may_scrape(self, request: Request) -> bool:
        """/metrics is never public by accident: a loopback client that did not come through a
        proxy (no forwarding header), or the bearer token from `[metrics] token_env`."""
        token = os.environ.get(self.cfg.metrics.token_env, "") if self.cfg.metrics.token_env else ""
        given = request.headers.get("authorization", "")
        if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        proxied = any(h in request.headers for h in ("forwarded", "x-forwarded-for", "x-real-ip"))
        host = request.client.host if request.client else ""
        try:
            return not proxied and ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    async def metrics(self, request: Request) -> Response:
        """The Prometheus text format, read from the state database (publisher/metrics.py)."""
        if not self._may_scrape(request):
            return await self.not_found(request, HTTPException(404))
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self._registry is None:
            from .metrics import registry_for

            self._registry = registry_for(self.store)
        body = await run_in_threadpool(generate_latest, self._registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    async def healthz(self, request: Request) -> Response:
        """For a load balancer or a monitor: 200 when the state database answers, 503 when it
        does not; no detail either way (the log and `publisher status` have those)."""
        try:
            await run_in_threadpool(self.store.ping)
        except Exception:  # any failure to answer is "not healthy", and says nothing more
            return PlainTextResponse("unavailable\n", 503, headers={"Cache-Control": "no-store"})
        return PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """404 in the site's look (missing pages, dotfiles, paths outside the archive)."""
        return self.message("404", self.t["bad_link_body"], status=404)

    async def unavailable(self, request: Request, exc: Exception) -> Response:
        """503 when the state database cannot be used (a full disk, a damaged file, PostgreSQL
        down): the reader is told to try again, the log gets the one line that names the
        database and what to do (state/health.py), not a traceback."""
        log.error("%s %s: %s", request.method, redact(request.url.path), exc)
        response = self.message(self.t["unavailable"], self.t["unavailable"], status=503)
        response.headers["Retry-After"] = "60"
        return response

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """500 for a bug. Starlette answers it from outside every middleware (and then lets
        uvicorn log the traceback), so the security headers are set here too."""
        private = TOKEN_PATH.match(request.url.path) is not None
        return HTMLResponse(
            f"<!doctype html><title>500</title><p>{self.t['server_error']}</p>",
            status_code=500,
            headers={**PRIVATE_HEADERS, **security_headers(self.cfg, private=private)},
        )


def _json_default(value: object) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _choice_of(form: Any, cfg: Config, *, with_max: bool) -> st.ChoiceUpdate:
    """A reader choice from a form: `cadence`, `topic` (ticked boxes, none: every paper) and,
    `with_max`, `max_papers`; ValueError for an unknown cadence or topic or a bad number."""
    cadence = _field(form, "cadence") or "daily"
    if cadence not in WEB_CADENCES:
        raise ValueError(f"unknown cadence {cadence!r}")
    names = [v for v in form.getlist("topic") if isinstance(v, str)]
    known = set(cfg.topic_names)
    if any(n not in known for n in names):
        raise ValueError("unknown topic")
    max_papers = None
    if with_max:
        raw = _field(form, "max_papers").strip() or "0"
        if not raw.isdigit() or int(raw) > 1000:
            raise ValueError(f"bad max_papers {raw!r}")
        max_papers = int(raw)
    return st.ChoiceUpdate(cadence=cadence, topics=frozenset(names), max_papers=max_papers)


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return "" if value is None or isinstance(value, UploadFile) else str(value)


async def _read_body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None if it is larger than `limit` bytes (read no further)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    # Starlette's form parser reads from here instead of the (consumed) stream.
    request._body = body
    return body


def create_app(
    cfg: Config,
    *,
    secret: bytes | None = None,
    previous_secrets: list[bytes] | None = None,
    store: Store | None = None,
    sender: Sender | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The web application. `secret` signs new links; it and `previous_secrets` verify them.
    Without `secret`, both come from the environment (`[web] secret_env` and
    `<secret_env>_PREVIOUS`), weak ones refused (publisher/tokens.py)."""
    if secret is None:
        from .tokens import secrets_from_env

        secret, *previous_secrets = secrets_from_env(cfg)
    if sender is None:
        check_sender(cfg)  # a From the confirmation cannot use stops the start, not a signup
    secrets = [secret, *(previous_secrets or [])]
    side = WebSide(
        cfg, secret, store or Store.open(cfg), sender or send_confirmation, clock, secrets
    )
    routes = [
        Route("/subscribe", side.subscribe, methods=["GET", "POST"]),
        Route("/web.css", side.web_css, methods=["GET"]),
        Route("/healthz", side.healthz, methods=["GET"]),
        Route("/metrics", side.metrics, methods=["GET"]),
        Route("/confirm/{token}", side.confirm, methods=["GET", "POST"]),
        Route("/unsubscribe/{token}", side.unsubscribe, methods=["GET", "POST"]),
        Route("/preferences/{token}", side.preferences, methods=["GET", "POST"]),
        Route("/preferences/{token}/data.json", side.preferences_data, methods=["GET"]),
    ]
    for route in routes:
        if route.methods:
            # A set in Starlette: in order, a 405's Allow header reads the same every time.
            route.methods = dict.fromkeys(sorted(route.methods)).keys()  # type: ignore[assignment]
    archive = ArchiveFiles(directory=cfg.feed.output, html=True, check_dir=False)
    routes.append(ArchiveMount(archive, list(routes)))
    app = Starlette(
        routes=routes,
        exception_handlers={
            404: side.not_found,
            StorageError: side.unavailable,
            500: side.server_error,
        },
        middleware=[Middleware(SecurityHeaders, cfg=cfg)],
    )
    app.state.web = side
    return app
