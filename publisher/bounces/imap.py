"""`publisher bounces fetch`: read an IMAP mailbox over TLS and file away what was dealt with.

imaplib over TLS (IMAP4_SSL, the certificate verified against the system's CAs or
`[bounces] imap_cafile`, the host name checked), the password from the environment variable
`[bounces] imap_password_env` names. Each message is read with BODY.PEEK (its \\Seen flag is left
alone) and goes through the same `Intake.process` as `bounces import`. Only the messages that
were dealt with (recorded now or before) are moved to `imap_processed_folder`, or deleted when
that is empty; mail that is no bounce, complaint or unsubscribe request, and anything that
arrives during the run, stays where it is. Moving uses MOVE (RFC 6851) when the server has it,
else COPY and, with UIDPLUS, a UID EXPUNGE of exactly those messages (a plain EXPUNGE could
remove other mail someone else marked deleted).
"""

from __future__ import annotations

import imaplib
import os
import re
import ssl
from collections.abc import Iterator

from ..config import Config
from ..errors import PublisherError
from .intake import Intake, Outcome

_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapError(PublisherError):
    """The IMAP mailbox cannot be used (connection, certificate, login, folder)."""


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(what: str, typ: str, data: list) -> list:  # noqa: ANN001
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise ImapError(f"IMAP {what} failed: {detail or typ}")
    return data


def connect(cfg: Config) -> imaplib.IMAP4_SSL:
    b = cfg.bounces
    if not b.imap_host:
        raise ImapError(f"{cfg.path}: 'bounces.imap_host' is not set; nothing to fetch")
    password = os.environ.get(b.imap_password_env, "") if b.imap_password_env else ""
    if not password:
        raise ImapError(
            f"{cfg.path}: 'bounces.imap_password_env' names ${b.imap_password_env}, "
            "which is not set"
        )
    ctx = ssl.create_default_context(cafile=str(b.imap_cafile) if b.imap_cafile else None)
    where = f"{b.imap_host}:{b.imap_port}"
    try:
        conn = imaplib.IMAP4_SSL(b.imap_host, b.imap_port, ssl_context=ctx, timeout=60)
    except ssl.SSLCertVerificationError as exc:
        raise ImapError(
            f"IMAP {where}: TLS failed: certificate verify failed: {exc.verify_message} "
            "(a private CA goes in [bounces] imap_cafile)"
        ) from None
    except ssl.SSLError as exc:
        raise ImapError(f"IMAP {where}: TLS failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise ImapError(f"IMAP {where}: cannot connect: {exc.strerror or exc}") from None
    try:
        conn.login(b.imap_user, password)
    except imaplib.IMAP4.error as exc:
        conn.shutdown()
        raise ImapError(f"IMAP {where}: login as {b.imap_user!r} refused: {exc}") from None
    return conn


def fetch(cfg: Config, intake: Intake) -> Iterator[Outcome]:
    """Process every message now in `[bounces] imap_folder`; yield one Outcome each."""
    b = cfg.bounces
    conn = connect(cfg)
    try:
        typ, data = conn.select(_quote(b.imap_folder))
        _check(f"SELECT {b.imap_folder}", typ, data)
        # The capabilities after login (imaplib keeps the greeting's, which may be fewer).
        typ, data = conn.capability()
        caps = set(_check("CAPABILITY", typ, data)[0].decode().upper().split())
        move, uidplus = "MOVE" in caps, "UIDPLUS" in caps
        if b.imap_processed_folder:
            conn.create(_quote(b.imap_processed_folder))  # "already exists" is fine
        typ, data = conn.uid("SEARCH", "ALL")
        uids = _check("UID SEARCH", typ, data)[0].split()
        for uid in uids:
            label = f"imap:{b.imap_folder}/{uid.decode()}"
            typ, data = conn.uid("FETCH", uid, "(RFC822.SIZE)")
            m = _SIZE.search(b" ".join(d if isinstance(d, bytes) else d[0] for d in data if d))
            size = int(m.group(1)) if m else 0
            if size > intake.max_bytes:
                yield intake.too_large(label, size)
                continue
            typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((d[1] for d in _check("UID FETCH", typ, data) if isinstance(d, tuple)), None)
            if raw is None:
                yield Outcome(label, "bad", f"{label}: the server returned no message")
                continue
            outcome = intake.process(raw, label)
            if outcome.processed:
                _file_away(conn, uid, b.imap_processed_folder, move, uidplus)
            yield outcome
    finally:
        try:
            conn.close()
            conn.logout()
        except (imaplib.IMAP4.error, OSError):
            conn.shutdown()


def _file_away(conn: imaplib.IMAP4_SSL, uid: bytes, folder: str, move: bool, uidplus: bool) -> None:
    if folder and move:
        _check("UID MOVE", *conn.uid("MOVE", uid, _quote(folder)))
        return
    if folder:
        _check("UID COPY", *conn.uid("COPY", uid, _quote(folder)))
    _check("UID STORE", *conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"))
    if uidplus:
        _check("UID EXPUNGE", *conn.uid("EXPUNGE", uid))
