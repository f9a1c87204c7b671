"""`publisher serve`: the public web side.

- The static archive from `[feed] output` (pages, feeds with their own content types, ETag and
  Last-Modified with 304s). Dotfiles (the private `.build-manifest.json`) and anything outside the
  folder answer 404.
- Double opt-in: GET /subscribe shows a form; POST /subscribe stores the address as pending and
  mails `{base_url}confirm/TOKEN`; GET /confirm/TOKEN makes it active. The answer to a valid
  address is the same page whether or not it is already on the list, and the mail is
  rate-limited per address and per client, in the database: it survives restarts, and any
  number of `publisher serve` processes on one database behave as one.
- /unsubscribe/TOKEN: GET shows a button and never changes anything (mail scanners prefetch
  links); POST, including RFC 8058's one-click `List-Unsubscribe=One-Click`, unsubscribes and
  suppresses the address and answers 200 with no cookie and no redirect, however often.
- /preferences/TOKEN: status, subscribe again, and a JSON copy of what is stored.

The store is the one source of truth for who is mailed, so an unsubscribe here is honoured by the
very next `queue_pending`/`pending_for`, whatever process runs the send.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

from . import state as st
from .config import Config
from .i18n import strings
from .mailer import unsubscribe_url as mailer_unsubscribe_url
from .site import ATOM_FILE, JSON_FILE, RSS_FILE, base_url
from .state import InvalidAddress, Store, normalize_email
from .templating import jinja_env
from .tokens import TokenError, sign, verify
from .web_mail import MailError, send_confirmation

# A confirmation link older than this no longer works: an old mail found by a scanner months after
# an unsubscribe must not subscribe anyone again.
CONFIRM_MAX_AGE = dt.timedelta(days=7)
# Forms and one-click bodies are a few dozen bytes; anything bigger is not one of ours.
MAX_BODY = 8 * 1024
FEED_TYPES = {
    RSS_FILE: "application/rss+xml; charset=utf-8",
    ATOM_FILE: "application/atom+xml; charset=utf-8",
    JSON_FILE: "application/feed+json; charset=utf-8",
}
# Pages behind a token: never cached, never framed, and the token never leaks in a Referer.
PRIVATE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}

Sender = Callable[[Config, str, str], None]


# ---------------------------------------------------------------------------------------------
# Links (the newsletter's List-Unsubscribe header uses unsubscribe_url)


def unsubscribe_url(cfg: Config, secret: bytes, email: str) -> str:
    """`{base_url}unsubscribe/TOKEN`: the List-Unsubscribe (RFC 8058) and footer link."""
    return mailer_unsubscribe_url(cfg, sign(secret, "unsubscribe", normalize_email(email)))


def manage_url(cfg: Config, secret: bytes, email: str) -> str:
    """`{base_url}preferences/TOKEN`: status, subscribe again, download the stored data."""
    return f"{base_url(cfg)}preferences/{sign(secret, 'manage', normalize_email(email))}"


def confirm_url(cfg: Config, secret: bytes, email: str, issued: float) -> str:
    """`{base_url}confirm/TOKEN`; the token names the address and when it was issued."""
    return f"{base_url(cfg)}confirm/{sign(secret, 'confirm', f'{email}|{int(issued)}')}"


def confirm_subject(secret: bytes, token: str, now: float) -> str:
    """The address a confirmation token names; TokenError if forged, altered or expired."""
    email, sep, issued = verify(secret, token, "confirm").rpartition("|")
    if not sep or not issued.isdigit():
        raise TokenError("malformed confirmation token")
    age = now - int(issued)
    if age < -300 or age > CONFIRM_MAX_AGE.total_seconds():
        raise TokenError("expired confirmation token")
    return email


# ---------------------------------------------------------------------------------------------
# Rate limits


# The per-client and the per-address limits are token buckets in the database
# (publisher/state/limits.py), shared by every `publisher serve` process on it: N processes
# behind one proxy allow what one would.
CLIENT_PERIOD = 3600.0  # signups_per_client_per_hour


def _client_key(client: str) -> str:
    # Keys are at most 100 characters; a client address is short, anything else is hashed.
    if len(client) <= 64 and client.isprintable():
        return "web.client:" + client
    return "web.client#" + hashlib.sha256(client.encode()).hexdigest()[:40]


def _address_key(email: str) -> str:
    # Addresses may be 320 characters, and the table need not show them.
    return "web.confirm:" + hashlib.sha256(email.encode()).hexdigest()[:40]


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
        name = PurePosixPath(path).name
        if name in FEED_TYPES and response.status_code == 200:
            response.headers["content-type"] = FEED_TYPES[name]
        if response.status_code in (200, 304):
            # Revalidate every time: the ETag makes that a cheap 304, and a new day shows at once.
            response.headers["cache-control"] = "no-cache"
        return response


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
    ) -> None:
        self.cfg = cfg
        self.secret = secret
        self.store = store
        self.sender = sender
        self.clock = clock
        self.t = strings(cfg.site.language)

    # -- rendering ---------------------------------------------------------------------------

    def page(self, template: str, heading: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        base = base_url(self.cfg)
        html = (
            jinja_env(self.cfg)
            .get_template(template)
            .render(
                site=self.cfg.site,
                root=base,
                rss_url=base + RSS_FILE,
                atom_url=base + ATOM_FILE,
                heading=heading,
                **ctx,
            )
        )
        return HTMLResponse(html, status_code=status, headers=PRIVATE_HEADERS)

    def message(self, heading: str, *lines: str, status: int = 200) -> HTMLResponse:
        return self.page("web/page.html", heading, status, lines=lines)

    def bad_link(self) -> HTMLResponse:
        return self.message(self.t["bad_link_title"], self.t["bad_link_body"], status=400)

    # -- subscribe ---------------------------------------------------------------------------

    def subscribe_form(
        self, error: str = "", email: str = "", name: str = "", status: int = 200
    ) -> HTMLResponse:
        return self.page(
            "web/subscribe.html",
            self.t["subscribe_title"],
            status,
            action=base_url(self.cfg) + "subscribe",
            error=error,
            email=email,
            name=name,
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
        form = await request.form(max_files=0, max_fields=10)
        raw_email, name, trap = (_field(form, k) for k in ("email", "name", "website"))
        try:
            email = normalize_email(
                raw_email, check_deliverability=self.cfg.subscribers.check_deliverability
            )
        except InvalidAddress:
            return self.subscribe_form(
                self.t["invalid_email"], raw_email[:320], name[:200], status=400
            )
        neutral = self.message(self.t["check_inbox_title"], self.t["check_inbox_body"])
        if trap:
            return neutral
        try:
            await run_in_threadpool(self._signup, email, name.strip()[:200])
        except MailError:
            return self.message(self.t["send_failed"], self.t["send_failed"], status=503)
        return neutral

    def _signup(self, email: str, name: str) -> None:
        """Store the address as pending (an existing subscriber keeps its status and name) and
        mail a confirmation link, at most once per address per `confirm_resend_minutes`."""
        now = self.clock()
        key = _address_key(email)
        period = self.cfg.web.confirm_resend_minutes * 60.0
        # The check and the take are one transaction, shared by every process; the mail goes
        # out after it: a slow SMTP server must not hold up every other signup. A failed send
        # gives the token back so the person may retry.
        if not self.store.take_token(key, 1, period, now):
            return
        # Only a new row takes the form's name: an unconfirmed form must not rename an existing
        # subscriber.
        self.store.add_subscriber(email, name, status=st.PENDING, source="web", rename=False)
        try:
            self.sender(self.cfg, email, confirm_url(self.cfg, self.secret, email, now))
        except MailError:
            self.store.give_back_token(key, 1, period, self.clock())
            raise

    async def confirm(self, request: Request) -> Response:
        try:
            email = confirm_subject(self.secret, request.path_params["token"], self.clock())
            email = normalize_email(email)
        except (TokenError, InvalidAddress):
            return self.bad_link()
        # A confirmed opt-in is fresh consent: it lifts an earlier unsubscribe or bounce.
        await run_in_threadpool(self.store.resubscribe, email, "", "web")
        return self.page(
            "web/page.html",
            self.t["confirmed_title"],
            lines=[self.t["confirmed_body"].format(email=email, title=self.cfg.site.title)],
        )

    # -- unsubscribe -------------------------------------------------------------------------

    def _subject(self, token: str, purposes: tuple[str, ...]) -> str | None:
        for purpose in purposes:
            try:
                return verify(self.secret, token, purpose)
            except TokenError:
                continue
        return None

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        email = self._subject(token, ("unsubscribe",))
        if email is None:
            return self.bad_link()
        if request.method != "POST":
            # Never act on a GET (or HEAD): link scanners and prefetchers fetch every URL in a
            # mail.
            return self.page(
                "web/unsubscribe.html",
                self.t["unsubscribe_title"],
                email=email,
                action=f"{base_url(self.cfg)}unsubscribe/{token}",
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
        email = self._subject(token, ("manage", "unsubscribe"))
        if email is None:
            return self.bad_link()
        if request.method == "POST":
            if await _read_body(request) is None:
                return self.message(self.t["too_large"], self.t["too_large"], status=413)
            form = await request.form(max_files=0, max_fields=5)
            if _field(form, "action") == "resubscribe":
                # The token was mailed to this address: using it is the owner's fresh consent.
                await run_in_threadpool(self.store.resubscribe, email, "", "web")
        sub = await run_in_threadpool(self.store.get, email)
        status = sub.status if sub else None
        if status == st.ACTIVE and not await run_in_threadpool(self.store.is_suppressed, email):
            status_text, active = self.t["status_active"], True
        elif status == st.PENDING:
            status_text, active = self.t["status_pending"], False
        else:
            status_text, active = self.t["status_inactive"], False
        base = base_url(self.cfg)
        return self.page(
            "web/preferences.html",
            self.t["preferences_title"],
            email=email,
            status_text=status_text,
            active=active,
            action=f"{base}preferences/{token}",
            unsubscribe_action=unsubscribe_url(self.cfg, self.secret, email),
            data_url=f"{base}preferences/{token}/data.json",
        )

    async def preferences_data(self, request: Request) -> Response:
        email = self._subject(request.path_params["token"], ("manage", "unsubscribe"))
        if email is None:
            return self.bad_link()
        data = await run_in_threadpool(self.store.stored_data, email)
        body = json.dumps(data, ensure_ascii=False, indent=2, default=_json_default)
        headers = dict(PRIVATE_HEADERS)
        headers["Content-Disposition"] = 'attachment; filename="subscription.json"'
        return Response(body, media_type="application/json", headers=headers)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """404 in the site's look (missing pages, dotfiles, paths outside the archive)."""
        return self.message("404", self.t["bad_link_body"], status=404)


def _json_default(value: object) -> str:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


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
    store: Store | None = None,
    sender: Sender | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The web application; `secret` defaults to the environment (`[web] secret_env`)."""
    if secret is None:
        from .tokens import secret_from_env

        secret = secret_from_env(cfg)
    side = WebSide(cfg, secret, store or Store.open(cfg), sender or send_confirmation, clock)
    routes = [
        Route("/subscribe", side.subscribe, methods=["GET", "POST"]),
        Route("/confirm/{token}", side.confirm, methods=["GET"]),
        Route("/unsubscribe/{token}", side.unsubscribe, methods=["GET", "POST"]),
        Route("/preferences/{token}", side.preferences, methods=["GET", "POST"]),
        Route("/preferences/{token}/data.json", side.preferences_data, methods=["GET"]),
        Mount("/", ArchiveFiles(directory=cfg.feed.output, html=True, check_dir=False)),
    ]
    app = Starlette(routes=routes, exception_handlers={404: side.not_found})
    app.state.web = side
    return app
