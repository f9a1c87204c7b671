"""One code path for every inbound message, wherever it comes from.

`Intake.process(raw, source)` reads one message (a file, a Maildir or mbox entry, standard
input, an IMAP message), works out what it is (publisher/bounces/parse.py) and whom it is about
(a VERP token in the address it was sent to; else the recipients the report names), and hands
the events to the store's policy (publisher/state/bounces.py) in one transaction. It never
raises for a bad message: every outcome is an `Outcome` with one line to print.

Whom a message is about, in order:

1. mail to the List-Unsubscribe mailto address (``unsubscribe+{token}@...``, RFC 2369) that is
   no bounce and no auto-reply: an unsubscribe request by the reader the token names;
2. a report sent to the VERP return path (``bounces+{token}@...``): the token's reader and
   digest, whatever address the report names (forwarding and aliases change that);
3. otherwise, with `return_path` set: nobody. The bounce address is public (it is in every
   message's envelope) and anyone can mail it a report naming any reader, so a report (DSN,
   ARF, flufl.bounce) without a valid token is recorded as `unverified`, with the kind it
   claimed, and acts on nobody;
4. without `return_path`: the recipients the report names, matched against the subscriber
   list, but only those the ledger shows were sent a digest within `token_max_age_days`.

A forged or expired token is reported and recorded as `ignored`; it never falls back to the
addresses in the report, so a forged bounce cannot suppress anyone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import mailbox
import os
import sys
from collections import Counter
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses, parseaddr
from pathlib import Path

from ..config import Config
from ..errors import PublisherError
from ..mailrules import (
    BLOCKED,
    COMPLAINT,
    HARD,
    IGNORED,
    SOFT,
    UNSUBSCRIBE,
    UNVERIFIED,
    VERP,
    BadToken,
    TokenCodec,
    TokenData,
    address_pattern,
)
from ..state import BouncePolicy, InboundEvent
from ..state.bounces import InboundMessage
from ..state.protocols import InboundStore
from ..tokens import message_ledger_ids, secrets_from_env
from .parse import HEADER_CHARS, Report, analyse, is_auto_reply

# Headers naming where the message was delivered (the envelope recipient when the MTA adds it).
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Cc")
_SEVERITY = {HARD: 3, SOFT: 2, BLOCKED: 1}
# Messages recorded per transaction by `Intake.run` (an import, a Maildir of thousands), and
# the most bytes read ahead for one batch (its duplicates are found in one query, unparsed).
BATCH = 200
BATCH_BYTES = 32 * 1024 * 1024
# A message is parsed on its first PARSE_BYTES: every report puts what is read (the human part,
# the delivery-status or feedback-report part, the returned headers) at its start, and the
# `email` package's cost grows with lines times nesting, which a hostile sender chooses. For
# the same reason a message with more than MAX_BOUNDARIES multipart boundaries there is not
# read: a bounce has two or three.
PARSE_BYTES = 512 * 1024
MAX_BOUNDARIES = 16


class IntakeError(PublisherError):
    """An input that cannot be read at all (a missing path, an unreadable mailbox)."""


@dataclass(slots=True)
class Outcome:
    source: str
    # "recorded", "duplicate", "skipped" (not ours, left alone) or "bad" (unusable input)
    status: str
    line: str
    kinds: list[str] = field(default_factory=list)
    suppressed: int = 0

    @property
    def processed(self) -> bool:
        """Whether the message was dealt with (recorded now or before): a mailbox may drop it."""
        return self.status in ("recorded", "duplicate")


@dataclass(slots=True)
class Summary:
    outcomes: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0

    def add(self, outcome: Outcome) -> None:
        self.outcomes += 1
        self.statuses[outcome.status] += 1
        self.kinds.update(outcome.kinds)
        self.suppressed += outcome.suppressed

    def line(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "none"
        s = self.statuses
        return (
            f"{self.outcomes} messages: {s['recorded']} recorded ({kinds}), "
            f"{s['duplicate']} already imported, {s['skipped']} not bounces (left alone), "
            f"{s['bad']} unusable; {self.suppressed} addresses suppressed"
        )


def secrets_for(cfg: Config) -> list[bytes]:
    """The secrets a token may be signed with: the current one, then ${secret_env}_PREVIOUS
    (rotation, as for the web links)."""
    return secrets_from_env(cfg)


def _mailto_target(cfg: Config) -> str:
    value = cfg.email.unsubscribe_mailto
    return value.removeprefix("mailto:").partition("?")[0] if "{token}" in value else ""


class Intake:
    """Reads inbound messages for one config and store; build once, `process` many."""

    def __init__(
        self, cfg: Config, store: InboundStore, secrets: Sequence[bytes] | None = None
    ) -> None:
        self.cfg = cfg
        self.store = store
        secrets = list(secrets) if secrets is not None else secrets_for(cfg)
        self._secrets = secrets
        self._verp = TokenCodec(secrets, VERP)
        self._unsub = TokenCodec(secrets, UNSUBSCRIBE)
        self._verp_re = address_pattern(cfg.email.return_path) if cfg.email.return_path else None
        target = _mailto_target(cfg)
        self._unsub_re = address_pattern(target) if target else None
        self.policy = BouncePolicy(
            hard_limit=cfg.subscribers.bounce_limit,
            soft_limit=cfg.bounces.soft_limit,
            soft_window_days=cfg.bounces.soft_window_days,
            mailed_within_days=cfg.bounces.token_max_age_days,
        )
        self.max_bytes = cfg.bounces.max_message_bytes
        self.keep_bytes = cfg.bounces.keep_raw_bytes

    # -- one message ---------------------------------------------------------------------

    def process(self, raw: bytes, source: str, *, today: dt.date | None = None) -> Outcome:
        """Read, record and act on one message."""
        if len(raw) > self.max_bytes:
            return self.too_large(source, len(raw))
        raw, sha = _normalized(raw)
        known = self.store.known_bounce_messages([sha])
        prepared = self.prepare(raw, source, today=today, sha=sha, known=known)
        if isinstance(prepared, Outcome):
            return prepared
        (actions,) = self.store.record_inbound_batch([prepared], self.policy)
        return _outcome(prepared, actions)

    def prepare(
        self,
        raw: bytes,
        source: str,
        *,
        today: dt.date | None = None,
        sha: str | None = None,
        known: Container[str] = (),
    ) -> Outcome | InboundMessage:
        """What one message says, ready to record; an Outcome when there is nothing to record
        (too big, unusable, not ours, or its SHA-256 in `known`: imported before, not parsed
        again). With `sha`, `raw` is already normalized (_normalized)."""
        if len(raw) > self.max_bytes:
            return self.too_large(source, len(raw))
        if sha is None:
            raw, sha = _normalized(raw)
        if sha in known:
            return _duplicate(source)
        head = raw[:PARSE_BYTES]
        boundaries = head.lower().count(b"boundary")
        if boundaries > MAX_BOUNDARIES:
            return Outcome(
                source,
                "bad",
                f"{source}: {boundaries} MIME boundaries in its first {PARSE_BYTES} bytes, more "
                f"than {MAX_BOUNDARIES}: no mail system's report, not read",
            )
        try:
            msg = message_from_bytes(head)
            keys = msg.keys()
        except Exception as exc:  # noqa: BLE001 - the email package on hostile input
            return Outcome(source, "bad", f"{source}: unreadable message ({type(exc).__name__})")
        if not keys or not any(k.lower() in ("from", "to", "subject", "date") for k in keys):
            return Outcome(source, "bad", f"{source}: not an email message (no headers)")
        try:
            events, summary = self._events(msg, head, today)
        except Exception as exc:  # noqa: BLE001 - one odd message must not stop the batch
            why = f"{type(exc).__name__}: {exc}"[:200]
            return Outcome(source, "bad", f"{source}: malformed message ({why})")
        if events is None:
            return Outcome(source, "skipped", f"{source}: {summary}; left alone")
        return InboundMessage(sha, source, self._kept(raw), summary, events, size=len(raw))

    def _kept(self, raw: bytes) -> bytes:
        """What is kept of a message for `bounces show`: its first [bounces] keep_raw_bytes,
        with a note when that is not all of it."""
        if len(raw) <= self.keep_bytes:
            return raw
        note = (
            f"\n\n[publisher: truncated: the first {self.keep_bytes} of {len(raw)} bytes are "
            "kept ([bounces] keep_raw_bytes)]\n"
        )
        return raw[: self.keep_bytes] + note.encode()

    def too_large(self, source: str, size: int) -> Outcome:
        return Outcome(
            source,
            "bad",
            f"{source}: {size} bytes, more than [bounces] max_message_bytes = {self.max_bytes}; "
            "not read",
        )

    def _tokens(self, msg: Message, pattern, headers: Iterable[str]) -> list[str]:  # noqa: ANN001
        if pattern is None:
            return []
        found = []
        for name in headers:
            for value in msg.get_all(name, []):
                value = str(value)[:HEADER_CHARS]
                if not pattern.search(value):
                    continue  # the cheap test first: most headers name no token address
                for _, addr in getaddresses([value]):
                    m = pattern.fullmatch(addr.strip())
                    if m and m.group(1).lower() not in found:
                        found.append(m.group(1).lower())
        return found

    def _verify(self, codec: TokenCodec, token: str, today: dt.date | None) -> TokenData | str:
        # A VERP token only has to outlive the bounces of its digest; an unsubscribe request
        # may come from a mail read months later, and is honoured like the web link.
        max_age = self.cfg.bounces.token_max_age_days if codec.purpose == VERP else 0
        try:
            return codec.verify(token, today=today, max_age_days=max_age)
        except BadToken as exc:
            return str(exc)

    def _events(
        self, msg: Message, raw: bytes, today: dt.date | None
    ) -> tuple[list[InboundEvent] | None, str]:
        """The events in `msg` (parsed from `raw`) and a summary; (None, why) when the message
        is not ours."""
        unsub = self._tokens(msg, self._unsub_re, _RECIPIENT_HEADERS)
        report = analyse(msg, raw)
        return self.events_for(report, msg, today, unsub)

    def events_for(
        self,
        report: Report,
        msg: Message | None,
        today: dt.date | None,
        unsub: Sequence[str] = (),
    ) -> tuple[list[InboundEvent] | None, str]:
        """The events a report makes (`msg`, the message it was read from, if any: its
        addresses carry the tokens); (None, why) when it is not ours."""
        if unsub and msg is not None and report.kind == IGNORED and not is_auto_reply(msg):
            data = self._verify(self._unsub, unsub[0], today)
            if isinstance(data, str):
                return [InboundEvent("", IGNORED, reason=data)], "unsubscribe request"
            event = InboundEvent(
                "",
                UNSUBSCRIBE,
                reason="mail to the List-Unsubscribe address",
                subscriber_id=data.subscriber_id,
                digest_date=data.digest_date,
            )
            return [event], "unsubscribe request (RFC 2369 mailto)"
        verp = self._tokens(msg, self._verp_re, _RECIPIENT_HEADERS) if msg is not None else []
        if not verp and report.original is not None:
            verp = self._tokens(report.original, self._verp_re, ("Return-Path",))
        if verp:
            data = self._verify(self._verp, verp[0], today)
            if isinstance(data, str):
                return [InboundEvent("", IGNORED, reason=data)], report.reason or report.kind
            return self._for_token(report, data), report.reason or report.kind
        if report.kind == IGNORED:
            if report.reason.startswith("no bounce found"):
                return None, "not a bounce, complaint or unsubscribe request"
            sender = parseaddr(str(msg.get("From", "")))[1].lower() if msg is not None else ""
            event = InboundEvent(sender, IGNORED, reason=report.reason, cause=report.cause)
            return [event], report.reason
        sent = self.store.ledger_by_message_id(
            message_ledger_ids(self._secrets, report.message_ids), report.provider_ids
        )
        if sent is not None:
            # The returned original's Message-ID (or SES's id for it) is one the ledger
            # recorded for a reader: the report is about that reader, whatever it names.
            return self._for_token(report, sent), report.reason + " (matched by Message-ID)"
        if self._verp_re is not None:
            events = [
                InboundEvent(
                    f.email,
                    UNVERIFIED,
                    f.status,
                    f.diagnostic,
                    reported_kind=f.kind,
                    cause=f.cause,
                )
                for f in report.failures
            ]
            return events, report.reason + " (no VERP token: unverified)"
        if report.message_ids or report.provider_ids:
            # An SES notification names the message it is about: a report whose message the
            # ledger does not know acts on nobody, whatever address its JSON names.
            events = [
                InboundEvent(
                    f.email,
                    UNVERIFIED,
                    f.status,
                    f.diagnostic,
                    reported_kind=f.kind,
                    cause=f.cause,
                )
                for f in report.failures
            ]
            if report.reason.startswith("SES"):
                return events, report.reason + " (no message we sent: unverified)"
        events = [
            InboundEvent(f.email, f.kind, f.status, f.diagnostic, cause=f.cause)
            for f in report.failures
        ]
        return events, report.reason + " (no VERP token: matched by address)"

    @staticmethod
    def _for_token(report: Report, data: TokenData) -> list[InboundEvent]:
        if report.kind == IGNORED:
            return [
                InboundEvent(
                    "",
                    IGNORED,
                    reason=report.reason,
                    subscriber_id=data.subscriber_id,
                    digest_date=data.digest_date,
                    cause=report.cause,
                )
            ]
        if report.kind == COMPLAINT or not report.failures:
            kind = COMPLAINT if report.kind == COMPLAINT else IGNORED
            return [
                InboundEvent(
                    "",
                    kind,
                    reason=report.reason,
                    subscriber_id=data.subscriber_id,
                    digest_date=data.digest_date,
                    cause="feedback" if kind == COMPLAINT else report.cause,
                )
            ]
        worst = max(report.failures, key=lambda f: _SEVERITY.get(f.kind, 0))
        return [
            InboundEvent(
                worst.email,
                worst.kind,
                worst.status,
                worst.diagnostic,
                subscriber_id=data.subscriber_id,
                digest_date=data.digest_date,
                cause=worst.cause,
            )
        ]

    def process_report(
        self, report: Report, raw: bytes, source: str, key: str, *, today: dt.date | None = None
    ) -> Outcome:
        """Record and act on a report that came as no mail (an SES notification by SNS);
        `key` identifies it (a second report with the same key changes nothing)."""
        sha = hashlib.sha256(key.encode()).hexdigest()
        if self.store.known_bounce_messages([sha]):
            return _duplicate(source)
        try:
            events, summary = self.events_for(report, None, today)
        except Exception as exc:  # noqa: BLE001 - one odd notification must not stop the server
            why = f"{type(exc).__name__}: {exc}"[:200]
            return Outcome(source, "bad", f"{source}: malformed notification ({why})")
        if events is None:
            events, summary = [], report.reason
        item = InboundMessage(sha, source, self._kept(raw), summary, events, size=len(raw))
        (actions,) = self.store.record_inbound_batch([item], self.policy)
        return _outcome(item, actions)

    # -- many messages ---------------------------------------------------------------------

    def run(
        self, sources: Iterable[tuple[str, bytes | Outcome]], batch: int = BATCH
    ) -> Iterator[Outcome]:
        """Process many messages, recording them `batch` at a time (one transaction each);
        the outcomes come in the order of `sources`."""
        waiting: list[tuple[str, bytes | Outcome]] = []
        size = 0

        def flush() -> Iterator[Outcome]:
            nonlocal size
            # The duplicates first, in one query and before any parsing: a re-imported Maildir
            # costs a hash per message.
            read: list[tuple[str, bytes | Outcome, str]] = []
            for source, item in waiting:
                if isinstance(item, bytes) and len(item) <= self.max_bytes:
                    item, sha = _normalized(item)
                    read.append((source, item, sha))
                else:
                    read.append((source, item, ""))
            known = set(self.store.known_bounce_messages([sha for *_, sha in read if sha]))
            prepared: list[Outcome | InboundMessage] = []
            for source, item, sha in read:
                if isinstance(item, Outcome):
                    prepared.append(item)
                    continue
                done = self.prepare(item, source, sha=sha or None, known=known)
                prepared.append(done)
                if isinstance(done, InboundMessage):
                    known.add(sha)  # the same message twice in one batch: the second is known
            items = [p for p in prepared if isinstance(p, InboundMessage)]
            results = iter(self.store.record_inbound_batch(items, self.policy) if items else [])
            for p in prepared:
                yield _outcome(p, next(results)) if isinstance(p, InboundMessage) else p
            waiting.clear()
            size = 0

        try:
            for source, item in sources:
                waiting.append((source, item))
                size += len(item) if isinstance(item, bytes) else 0
                if len(waiting) >= batch or size >= BATCH_BYTES:
                    yield from flush()
        except IntakeError:
            yield from flush()  # what was read before the unreadable path is still recorded
            raise
        yield from flush()


def _normalized(raw: bytes) -> tuple[bytes, str]:
    """The message with LF line ends, and its key (the SHA-256 of that)."""
    raw = raw.replace(b"\r\n", b"\n")
    return raw, hashlib.sha256(raw).hexdigest()


def _duplicate(source: str) -> Outcome:
    return Outcome(source, "duplicate", f"{source}: already imported, nothing changed")


def _outcome(item: InboundMessage, actions: list[str] | None) -> Outcome:
    source = item.source
    if actions is None:
        return _duplicate(source)
    parts = [
        f"{e.kind}{f' ({e.reported_kind})' if e.reported_kind else ''} {e.email or '?'}"
        + (f" {e.status}" if e.status else "")
        + f": {a}"
        + (f" [{e.cause}]" if e.cause else "")
        + (f" ({e.reason})" if e.kind == IGNORED else "")
        for e, a in zip(item.events, actions, strict=True)
    ]
    return Outcome(
        source,
        "recorded",
        f"{source}: {item.summary}: " + ("; ".join(parts) or "nothing to do"),
        [e.kind for e in item.events],
        sum(a.startswith("suppressed") for a in actions),
    )


def read_paths(paths: Sequence[str], max_bytes: int) -> Iterator[tuple[str, bytes | Outcome]]:
    """(source, message bytes) for every message in `paths`: files, Maildir folders, mbox
    files, folders of message files, and `-` for one message on standard input. A message
    over `max_bytes` comes as an Outcome (reported, never read into memory); a path that
    cannot be read raises IntakeError after the ones before it were given."""
    for path in paths:
        if path == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
            if len(data) > max_bytes:
                yield "stdin", _big("stdin", max_bytes)
                continue
            yield "stdin", data
            continue
        p = Path(path)
        if p.is_dir():
            yield from _read_folder(p, max_bytes)
        elif p.is_file():
            yield from _read_file(p, max_bytes)
        else:
            raise IntakeError(f"{p}: no such file or folder")


def _big(source: str, max_bytes: int) -> Outcome:
    return Outcome(
        source, "bad", f"{source}: more than [bounces] max_message_bytes = {max_bytes}; not read"
    )


def _read_one(p: Path, max_bytes: int) -> bytes | Outcome:
    try:
        size = p.stat().st_size
        if size > max_bytes:
            return Outcome(
                str(p),
                "bad",
                f"{p}: {size} bytes, more than [bounces] max_message_bytes = {max_bytes}; not read",
            )
        return p.read_bytes()
    except OSError as exc:
        return Outcome(str(p), "bad", f"{p}: cannot read: {exc.strerror or exc}")


def _read_folder(p: Path, max_bytes: int) -> Iterator[tuple[str, bytes | Outcome]]:
    # A Maildir (tmp/ holds deliveries in progress), or a folder of message files.
    maildir = (p / "new").is_dir() and (p / "cur").is_dir()
    folders = [p / "new", p / "cur"] if maildir else [p]
    for folder in folders:
        try:
            names = sorted(os.listdir(folder))
        except OSError as exc:
            raise IntakeError(f"{folder}: cannot list: {exc.strerror or exc}") from None
        for name in names:
            f = folder / name
            if name.startswith(".") or not f.is_file():
                continue
            yield str(f), _read_one(f, max_bytes)


def _read_file(p: Path, max_bytes: int) -> Iterator[tuple[str, bytes | Outcome]]:
    try:
        with p.open("rb") as fh:
            head = fh.read(5)
    except OSError as exc:
        raise IntakeError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if head != b"From ":
        yield str(p), _read_one(p, max_bytes)
        return
    box = mailbox.mbox(str(p), create=False)
    try:
        for n, key in enumerate(box.iterkeys(), 1):
            source = f"{p}#{n}"
            start, stop = box._toc[key]  # noqa: SLF001 - the size without reading the message
            if stop - start > max_bytes:
                yield source, _big(source, max_bytes)
                continue
            yield source, box.get_bytes(key)
    finally:
        box.close()
