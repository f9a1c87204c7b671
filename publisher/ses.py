"""Amazon SES notifications: bounces, complaints and deliveries, through an SNS HTTPS
subscription (`POST /webhooks/ses` on `publisher serve`) or as JSON mail read by `bounces import`.

**The SNS envelope is verified before anything is read from it** (AWS's documented procedure):

- `SignatureVersion` 1 (RSA PKCS#1 v1.5 over SHA-1) or 2 (over SHA-256), over the message's
  fields in the documented order, each as ``Name\\nValue\\n``;
- the signing certificate comes from `SigningCertURL`, which must be ``https`` on a host
  ``sns.<region>.amazonaws.com`` (``.com.cn`` too) and end in ``.pem``; it is fetched with the
  TLS certificate verified, and cached by URL;
- `TopicArn` must be one of `[bounces] ses_topic_arns`: SNS signs every topic's messages, so a
  valid signature alone says nothing about whose topic it is;
- a `SubscriptionConfirmation` is confirmed by fetching its `SubscribeURL` under the same host
  rule; nothing else is ever fetched.

**Whom a notification is about** comes from the ledger, never from an address in the JSON:
our own Message-ID in `mail.headers` / `mail.commonHeaders.messageId` (the ledger keeps each
sent message's), else SES's `mail.messageId` (SES answers our DATA with ``250 Ok <that id>``,
which the ledger keeps as the row's last reply). The addresses and causes go through the one
classifier (publisher/mailrules.py); a notification that maps to no ledger row is recorded as
`unverified` when `[email] return_path` is set, like any report without a token.

**Test hook.** `PUBLISHER_TEST_SNS_HOST` (a host[:port] then trusted instead of
``sns.<region>.amazonaws.com``) and `PUBLISHER_TEST_SNS_CAFILE` (the CA the fetches verify
against) exist for the test suite only, which signs its own notifications with a certificate it
makes; never set them in production.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import ssl
import threading
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from .bounces.parse import MAX_RECIPIENTS, Failure, Report
from .errors import PublisherError
from .mailrules import COMPLAINT, HARD, IGNORED, SOFT, diagnose

log = logging.getLogger("publisher.ses")

# The most a webhook body may be (an SNS message is at most 256 KB of payload).
MAX_BODY = 300 * 1024
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_FETCH_TIMEOUT = 10.0
_CERT_CACHE: dict[str, Any] = {}
_CERT_LOCK = threading.Lock()
_CACHE_SIZE = 16

_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_FIELDS["UnsubscribeConfirmation"] = _FIELDS["SubscriptionConfirmation"]


class SnsError(PublisherError):
    """An SNS message that is malformed, unsigned, signed wrongly or from an untrusted place."""


# -- the SNS envelope ---------------------------------------------------------------------------


def trusted_url(url: str) -> bool:
    """Whether `url` is one SNS may send us to: https on sns.<region>.amazonaws.com (or the
    test-only host, see the module docstring)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme != "https" or parts.username or parts.password:
        return False
    test_host = os.environ.get("PUBLISHER_TEST_SNS_HOST", "")
    if test_host:
        return parts.netloc == test_host
    return parts.port is None and bool(_SNS_HOST.match(parts.hostname or ""))


def _fetch(url: str, limit: int = 64 * 1024) -> bytes:
    if not trusted_url(url):
        raise SnsError(f"refused to fetch {url[:200]!r}: not https on sns.<region>.amazonaws.com")
    cafile = os.environ.get("PUBLISHER_TEST_SNS_CAFILE") or None
    context = ssl.create_default_context(cafile=cafile)
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context),
        _NoRedirect(),
    )
    try:
        with opener.open(url, timeout=_FETCH_TIMEOUT) as resp:
            return resp.read(limit + 1)[:limit]
    except OSError as exc:
        raise SnsError(f"cannot fetch {url[:200]!r}: {exc}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002
        return None  # a redirect could leave the trusted host


def _public_key(url: str) -> Any:
    from cryptography import x509

    with _CERT_LOCK:
        key = _CERT_CACHE.get(url)
    if key is not None:
        return key
    if not url.endswith(".pem"):
        raise SnsError(f"SigningCertURL {url[:200]!r} is no .pem")
    try:
        cert = x509.load_pem_x509_certificate(_fetch(url))
    except ValueError as exc:
        raise SnsError(f"SigningCertURL {url[:200]!r}: not a certificate ({exc})") from None
    key = cert.public_key()
    with _CERT_LOCK:
        if len(_CERT_CACHE) >= _CACHE_SIZE:
            _CERT_CACHE.pop(next(iter(_CERT_CACHE)))
        _CERT_CACHE[url] = key
    return key


def string_to_sign(message: dict[str, Any]) -> bytes:
    """The bytes SNS signs for `message` (its Type's fields, in order, `Name\\nValue\\n`)."""
    fields = _FIELDS.get(str(message.get("Type")))
    if fields is None:
        raise SnsError(f"unknown SNS message Type {str(message.get('Type'))[:40]!r}")
    out = []
    for name in fields:
        if name == "Subject" and name not in message:
            continue
        value = message.get(name)
        if not isinstance(value, str):
            raise SnsError(f"SNS message without {name}")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode("utf-8")


def verify(message: dict[str, Any], topics: tuple[str, ...] | list[str]) -> None:
    """Raise SnsError unless `message` is signed by SNS for one of `topics`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if message.get("TopicArn") not in topics:
        raise SnsError(
            f"TopicArn {str(message.get('TopicArn'))[:200]!r} is not in [bounces] ses_topic_arns"
        )
    version = message.get("SignatureVersion")
    algorithm = {"1": hashes.SHA1, "2": hashes.SHA256}.get(str(version))
    if algorithm is None:
        raise SnsError(f"unknown SignatureVersion {str(version)[:10]!r}")
    url = message.get("SigningCertURL")
    if not isinstance(url, str) or not trusted_url(url):
        raise SnsError(f"SigningCertURL {str(url)[:200]!r} is not https on sns.*.amazonaws.com")
    try:
        signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
    except ValueError:
        raise SnsError("Signature is not base64") from None
    data = string_to_sign(message)
    key = _public_key(url)
    try:
        key.verify(signature, data, padding.PKCS1v15(), algorithm())  # noqa: S303 - SNS v1
    except (InvalidSignature, TypeError, ValueError):
        raise SnsError("the SNS signature does not match") from None


def confirm(message: dict[str, Any]) -> None:
    """Confirm a (verified) subscription: fetch its SubscribeURL, under the host rule."""
    url = message.get("SubscribeURL")
    if not isinstance(url, str):
        raise SnsError("SubscriptionConfirmation without SubscribeURL")
    _fetch(url)


# -- SES's notification -> a report ------------------------------------------------------------

# SES's bounce subtypes, when the recipient has no diagnostic that names a cause.
_SUBTYPE_CAUSE = {
    "noemail": "userunknown",
    "suppressed": "userunknown",  # SES refused: the address hard-bounced before
    "onaccountsuppressionlist": "userunknown",
    "mailboxfull": "mailboxfull",
    "messagetoolarge": "mesgtoobig",
    "contentrejected": "contenterror",
    "attachmentrejected": "contenterror",
}


def report_from_notification(obj: dict[str, Any]) -> Report:
    """The report an SES notification (the JSON SES publishes, by SNS or mail) makes."""
    kind = str(obj.get("notificationType") or obj.get("eventType") or "")
    mail = obj.get("mail") if isinstance(obj.get("mail"), dict) else {}
    ids = _message_ids(mail)
    provider = [str(mail["messageId"])[:200]] if isinstance(mail.get("messageId"), str) else []
    if kind == "Bounce" and isinstance(obj.get("bounce"), dict):
        report = _bounce(obj["bounce"])
    elif kind == "Complaint" and isinstance(obj.get("complaint"), dict):
        report = _complaint(obj["complaint"])
    elif kind == "Delivery":
        report = Report(IGNORED, "SES delivery notification", cause="delivered")
    else:
        report = Report(IGNORED, f"SES notification of type {kind[:40]!r}: nothing to do")
    report.message_ids = ids
    report.provider_ids = provider
    return report


def _message_ids(mail: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    common = mail.get("commonHeaders")
    if isinstance(common, dict) and isinstance(common.get("messageId"), str):
        ids.append(common["messageId"].strip()[:300])
    headers = mail.get("headers")
    if isinstance(headers, list):
        for h in headers[:200]:
            if (
                isinstance(h, dict)
                and str(h.get("name", "")).lower() == "message-id"
                and isinstance(h.get("value"), str)
            ):
                ids.append(h["value"].strip()[:300])
    return list(dict.fromkeys(i for i in ids if i))


def _recipients(items: Any) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        return []
    return [r for r in items[:MAX_RECIPIENTS] if isinstance(r, dict)]


def _bounce(bounce: dict[str, Any]) -> Report:
    btype = str(bounce.get("bounceType", ""))
    subtype = str(bounce.get("bounceSubType", ""))
    permanent = {"Permanent": True, "Transient": False}.get(btype)
    failures = []
    for r in _recipients(bounce.get("bouncedRecipients")):
        addr = str(r.get("emailAddress", "")).strip().lower()[:320]
        if "@" not in addr:
            continue
        status = str(r.get("status", ""))[:16]
        diagnostic = " ".join(str(r.get("diagnosticCode", "")).split())[:500]
        kind, cause = diagnose(status, diagnostic, permanent=permanent)
        by_subtype = _SUBTYPE_CAUSE.get(subtype.lower())
        if by_subtype and cause in ("undefined", "onhold", "userunknown") and not diagnostic:
            cause = by_subtype
            from .mailrules import CAUSE_KIND

            kind = CAUSE_KIND[cause]
        if kind in (HARD, IGNORED) and permanent is not True:
            kind = SOFT  # Transient or Undetermined: never a hard bounce
        failures.append(Failure(addr, kind, status, diagnostic or f"SES {btype}/{subtype}", cause))
    reason = f"SES bounce notification ({btype or '?'}/{subtype or '?'})"
    if not failures:
        return Report(IGNORED, reason + ": no recipient")
    return Report("bounce", reason, failures)


def _complaint(complaint: dict[str, Any]) -> Report:
    feedback = str(complaint.get("complaintFeedbackType", "abuse") or "abuse")[:40]
    reason = f"SES complaint notification ({feedback})"
    if feedback.lower() == "not-spam":
        return Report(IGNORED, reason, cause="feedback")
    failures = []
    for r in _recipients(complaint.get("complainedRecipients")):
        addr = str(r.get("emailAddress", "")).strip().lower()[:320]
        if "@" in addr:
            failures.append(Failure(addr, COMPLAINT, "", reason, "feedback"))
    return Report(COMPLAINT, reason, failures, cause="feedback")


def parse_body(body: bytes) -> dict[str, Any]:
    """The SNS message in a webhook body; SnsError if it is not a JSON object."""
    try:
        obj = json.loads(body)
    except ValueError:
        raise SnsError("the body is not JSON") from None
    if not isinstance(obj, dict):
        raise SnsError("the body is not a JSON object")
    return obj


def notification(message: dict[str, Any]) -> tuple[Report, bytes]:
    """The report in a verified SNS Notification, and the bytes to keep for it."""
    text = message.get("Message")
    try:
        obj = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return Report(IGNORED, "SNS notification that is no SES JSON"), str(text)[:4096].encode()
    return report_from_notification(obj), json.dumps(obj, indent=2).encode()


# -- POST /webhooks/ses -------------------------------------------------------------------------


def endpoint(cfg: Any, store: Any, secrets: list[bytes]) -> Any:
    """The Starlette endpoint for `POST /webhooks/ses` (urls.WEB_ROUTES; publisher/web/app.py
    serves it): 404 while `[bounces] ses_topic_arns` is empty; 403 for a message that fails
    verification; 200 once a subscription is confirmed or a notification recorded (a repeat of
    one changes nothing)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response

    intake: list[Any] = []

    def record(report: Report, kept: bytes, message_id: str) -> str:
        if not intake:
            from .bounces.intake import Intake

            intake.append(Intake(cfg, store, secrets))
        key = f"sns:{message_id}"
        return intake[0].process_report(report, kept, key, key).line

    async def ses_webhook(request: Request) -> Response:
        topics = cfg.bounces.ses_topic_arns
        if not topics:
            return PlainTextResponse("Not Found", status_code=404)
        body = await _read(request)
        if body is None:
            return PlainTextResponse("too large", status_code=413)
        try:
            message = parse_body(body)
            said = request.headers.get("x-amz-sns-message-type")
            if said is not None and said != message.get("Type"):
                raise SnsError("x-amz-sns-message-type does not match the message's Type")
            await run_in_threadpool(verify, message, topics)
            kind = message["Type"]
            if kind == "SubscriptionConfirmation":
                await run_in_threadpool(confirm, message)
                log.info("SES webhook: confirmed the subscription to %s", message["TopicArn"])
                return PlainTextResponse("subscription confirmed")
            if kind != "Notification":
                return PlainTextResponse("ok")
        except SnsError as exc:
            log.warning("SES webhook: refused: %s", exc)
            return PlainTextResponse("refused", status_code=403)
        report, kept = notification(message)
        line = await run_in_threadpool(record, report, kept, str(message.get("MessageId"))[:200])
        log.info("SES webhook: %s", line)
        return PlainTextResponse("ok")

    return ses_webhook


async def _read(request: Any) -> bytes | None:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
