"""The application of `publisher serve`: the endpoints (`WebSide`) and `create_app`, which puts
them, the archive and the security headers together."""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import state as st
from .. import urls
from ..audit import WebActor
from ..config import Config
from ..i18n import strings
from ..mailrules import ReturnPath
from ..ses import endpoint as ses_endpoint
from ..state import InvalidAddress, Store, normalize_email, normalize_name
from ..state.health import StorageError
from ..state.protocols import WebStore
from ..templating import jinja_env
from ..tokens import TokenError, read, secrets_from_env, sign_id
from ..topics import Choice
from ..urls import ATOM_FILE, RSS_FILE, TOKEN_PATH, base_url
from ..web_mail import MailError, check_sender, send_confirmation
from .archive import ArchiveFiles, ArchiveMount
from .forms import WEB_CADENCES, choice_of, field, json_default, read_body
from .logs import mask_address, redact
from .ratelimit import (
    CLIENT_PERIOD,
    MAILBOX_BURST,
    MAILBOX_REFILL,
    address_key,
    client_key,
    mailbox_key,
)
from .security import PRIVATE_HEADERS, SecurityHeaders, security_headers

# A confirmation link older than this no longer works: an old mail found by a scanner months after
# an unsubscribe must not subscribe anyone again.
CONFIRM_MAX_AGE = dt.timedelta(days=7)

# send_confirmation's shape: (cfg, email, url, *, envelope_from=None).
Sender = Callable[..., None]

# The server's own error log (uvicorn's, so its handlers and the token redaction apply).
log = logging.getLogger("uvicorn.error")


class ExpiredLink(TokenError):
    """A genuine confirmation link, older than CONFIRM_MAX_AGE."""


class WebSide:
    """The endpoints, bound to one config, store, secret and clock."""

    def __init__(
        self,
        cfg: Config,
        secret: bytes,
        store: WebStore,
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
        # POST /webhooks/ses: Amazon SES notifications by SNS (publisher/ses.py)
        self.ses_webhook = ses_endpoint(cfg, store, self.secrets)

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
        body = await read_body(request)
        if body is None:
            return self.message(self.t["too_large"], self.t["too_large"], status=413)
        client = request.client.host if request.client else "unknown"
        allowed = await run_in_threadpool(
            self.store.take_token,
            client_key(client),
            max(self.cfg.web.signups_per_client_per_hour, 1),
            CLIENT_PERIOD,
            self.clock(),
        )
        if not allowed:
            return self.message(self.t["too_many"], self.t["too_many"], status=429)
        form = await request.form(max_files=0, max_fields=10 + len(self.cfg.topics))
        raw_email, name, trap = (field(form, k) for k in ("email", "name", "website"))
        try:
            # Optional: cadence and topics (a form without them gives daily, every paper).
            choice = choice_of(form, self.cfg, with_max=False)
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
        key = address_key(email)
        period = self.cfg.web.confirm_resend_minutes * 60.0
        # The check and the take are one transaction, shared by every process; the mail goes
        # out after it: a slow SMTP server must not hold up every other signup. A failed send
        # gives the token back so the person may retry.
        if not self.store.take_token(key, 1, period, now):
            return
        cap = (mailbox_key(email), MAILBOX_BURST, MAILBOX_BURST * MAILBOX_REFILL)
        if not self.store.take_token(*cap, now):
            self.store.give_back_token(key, 1, period, now)  # nothing was sent
            return
        # Only a new row takes the form's name: an unconfirmed form must not rename an existing
        # subscriber.
        sub, created = self.store.add_subscriber(
            email, name, status=st.PENDING, source="web", rename=False, action="signup"
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

    async def _address(
        self, token: str, purposes: tuple[str, ...], now: float | None = None
    ) -> str:
        """The address a valid token for one of `purposes` names (an id is looked up);
        TokenError otherwise, ExpiredLink for a confirmation older than CONFIRM_MAX_AGE (with
        `now`)."""
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
                sub = await run_in_threadpool(self.store.get_by_id, subject.subscriber_id)
                if sub is None:
                    raise TokenError("no such subscriber")
                return sub.email
            try:
                return normalize_email(subject.email or "")
            except InvalidAddress:
                raise TokenError("not an address") from None
        raise TokenError("invalid token")

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            email = await self._address(token, ("confirm",), self.clock())
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
        if await read_body(request) is None:
            return self.message(self.t["too_large"], self.t["too_large"], status=413)
        # A confirmed opt-in is fresh consent: it lifts an earlier unsubscribe or bounce.
        # Idempotent: a second POST finds the address active and leaves it so.
        await run_in_threadpool(self.store.resubscribe, email, "", "web", "confirm")
        return self.page(
            "web/page.html",
            self.t["confirmed_title"],
            lines=[self.t["confirmed_body"].format(email=email, title=self.cfg.site.title)],
        )

    # -- unsubscribe -------------------------------------------------------------------------

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            email = await self._address(token, ("unsubscribe",))
        except TokenError:
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
        if await read_body(request) is None:
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
        try:
            email = await self._address(token, ("manage", "unsubscribe"))
        except TokenError:
            return self.bad_link()
        notice = ""
        choice_saved = choice_error = False
        if request.method == "POST":
            if await read_body(request) is None:
                return self.message(self.t["too_large"], self.t["too_large"], status=413)
            form = await request.form(max_files=0, max_fields=8 + len(self.cfg.topics))
            action = field(form, "action")
            if action == "resubscribe":
                # The token was mailed to this address: using it is the owner's fresh consent.
                await run_in_threadpool(self.store.resubscribe, email, "", "web")
            elif action == "rename":
                if await run_in_threadpool(self.store.rename, email, field(form, "name")):
                    notice = self.t["name_saved"]
            elif action == "delete":
                # Erasure: the row, its sends and bounces go; the address stays only as a
                # suppression hash, so a CSV sync cannot add it back; the audit trail keeps
                # the hash in place of the address.
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
            update = choice_of(form, self.cfg, with_max=True)
        except ValueError:
            return False, True
        try:
            await run_in_threadpool(self.store.set_choice, email, update, "web")
        except st.UnknownSubscriber:
            return False, True
        return True, False

    async def preferences_data(self, request: Request) -> Response:
        try:
            email = await self._address(request.path_params["token"], ("manage", "unsubscribe"))
        except TokenError:
            return self.bad_link()
        data = await run_in_threadpool(self.store.stored_data, email)
        body = json.dumps(data, ensure_ascii=False, indent=2, default=json_default)
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
        # prometheus_client loads on the first scrape, not at every `publisher serve` start.
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self._registry is None:
            from ..metrics import registry_for

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


def create_app(
    cfg: Config,
    *,
    secret: bytes | None = None,
    previous_secrets: list[bytes] | None = None,
    store: WebStore | None = None,
    sender: Sender | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The web application. `secret` signs new links; it and `previous_secrets` verify them.
    Without `secret`, both come from the environment (`[web] secret_env` and
    `<secret_env>_PREVIOUS`), weak ones refused (publisher/tokens.py)."""
    if secret is None:
        secret, *previous_secrets = secrets_from_env(cfg)
    if sender is None:
        check_sender(cfg)  # a From the confirmation cannot use stops the start, not a signup
    secrets = [secret, *(previous_secrets or [])]
    side = WebSide(
        cfg, secret, store or Store.open(cfg), sender or send_confirmation, clock, secrets
    )
    routes = [
        Route("/" + r.path, getattr(side, r.endpoint), methods=list(r.methods))
        for r in urls.WEB_ROUTES
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
        # The changes a request makes are its client's on the audit trail (publisher/audit.py).
        middleware=[Middleware(SecurityHeaders, cfg=cfg), Middleware(WebActor, key=secret)],
    )
    app.state.web = side
    return app
