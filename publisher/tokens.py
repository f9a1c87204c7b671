"""HMAC-signed tokens for unsubscribe and confirmation links.

A token names its purpose and the subscriber's address and carries an HMAC-SHA256 over both, so
it cannot be forged, altered, or reused for another purpose. The secret comes from the
environment variable that `[web] secret_env` names, never from config.toml.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from .config import Config
from .errors import PublisherError

PURPOSES = frozenset({"unsubscribe", "confirm", "manage"})
# Used only by `send --dry-run` and tests when no secret is set: previews carry links that the
# real server will refuse, which is what a preview should do.
PREVIEW_SECRET = b"publisher-preview-secret-not-for-production"


class TokenError(PublisherError):
    """A token is malformed, tampered with, or for another purpose."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, purpose: str, subject: str) -> bytes:
    msg = f"{purpose}\x00{subject}".encode()
    return hmac.new(secret, msg, hashlib.sha256).digest()[:16]


def sign(secret: bytes, purpose: str, subject: str) -> str:
    """A URL-safe token for `purpose` (e.g. "unsubscribe") naming `subject` (an address)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    return f"{_b64(subject.encode())}.{_b64(_mac(secret, purpose, subject))}"


class Signer:
    """`sign(secret, purpose, subject)` for many subjects: the HMAC keyed with the secret and fed
    the purpose is set up once and copied per token (a fresh hmac.new per reader was a tenth of
    the per-message work of a send). Tokens are identical to `sign`'s."""

    __slots__ = ("_prefix",)

    def __init__(self, secret: bytes, purpose: str) -> None:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        self._prefix = hmac.new(secret, f"{purpose}\x00".encode(), hashlib.sha256)

    def sign(self, subject: str) -> str:
        raw = subject.encode()
        mac = self._prefix.copy()
        mac.update(raw)
        return f"{_b64(raw)}.{_b64(mac.digest()[:16])}"


def verify(secret: bytes, token: str, purpose: str) -> str:
    """The subject named by a valid token for `purpose`; TokenError otherwise."""
    try:
        body, mac = token.split(".")
        subject = _unb64(body).decode()
        given = _unb64(mac)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(given, _mac(secret, purpose, subject)):
        raise TokenError("invalid token")
    return subject


def secret_from_env(cfg: Config, *, required: bool = True) -> bytes:
    """The signing secret from the environment; PREVIEW_SECRET when not required and unset."""
    value = os.environ.get(cfg.web.secret_env, "") if cfg.web.secret_env else ""
    if value:
        return value.encode()
    if required:
        raise PublisherError(
            f"{cfg.path}: 'web.secret_env' names ${cfg.web.secret_env}, which is not set; "
            "set it to a long random string, e.g. "
            f"`export {cfg.web.secret_env}=$(openssl rand -base64 32)`"
        )
    return PREVIEW_SECRET
