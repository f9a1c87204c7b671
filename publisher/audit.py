"""The audit trail as the operator reads it (`publisher audit`), and who its actors are.

The trail itself is written by publisher/state/lifecycle.py, in the transaction of each change;
this module names the actors (`operator_actor` for the CLI, `web_actor` for a web client, set
for a whole request by `WebActor`) and reads entries back. Addresses are shown whole: the trail
is the operator's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .state import Store
from .state.lifecycle import acting_as
from .state.schema import _key, audit_log


def operator_actor() -> str:
    """Who runs an operator command, as the audit trail names them: `user@host`."""
    import getpass
    import os
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def web_actor(client: str, key: bytes) -> str:
    """A web client as the audit trail names it: `web:` and a keyed hash of its address (the
    site's secret), so the trail tells requests from one client apart without keeping the
    address, and nobody without the secret can test a guess."""
    return "web:" + hmac.new(key, client.encode(), hashlib.sha256).hexdigest()[:16]


class WebActor:
    """ASGI middleware: the changes a request makes are recorded as its client's (`web_actor`;
    the context variable reaches the worker threads `run_in_threadpool` uses)."""

    def __init__(self, app: Any, key: bytes) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("unknown", 0)
        with acting_as(web_actor(str(client[0]), self.key)):
            await self.app(scope, receive, send)


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    at: dt.datetime
    actor: str
    action: str
    subscriber_id: int | None
    email: str
    old: dict[str, Any]
    new: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(timespec="seconds") + "Z",
            "actor": self.actor,
            "action": self.action,
            "subscriber_id": self.subscriber_id,
            "email": self.email,
            "before": self.old,
            "after": self.new,
        }

    def line(self) -> str:
        who = f"#{self.subscriber_id} {self.email}" if self.subscriber_id else self.email or "-"
        change = ", ".join(
            f"{k}: {_show(self.old.get(k))} -> {_show(self.new.get(k))}"
            for k in sorted(set(self.old) | set(self.new))
        )
        at = self.at.isoformat(sep=" ", timespec="seconds")
        return f"{at}  {self.action:<13} {who}  {change}  ({self.actor})"


def _show(value: Any) -> str:
    if value is None:
        return "-"
    return '""' if value == "" else str(value)


def entries(
    store: Store,
    *,
    email: str | None = None,
    since: dt.datetime | None = None,
    action: str | None = None,
    batch: int = 1000,
) -> Iterator[Entry]:
    """The trail, oldest first, filtered; read `batch` rows at a time (memory stays flat)."""
    last = 0
    while True:
        q = sa.select(audit_log).where(audit_log.c.id > last)
        if email:
            q = q.where(audit_log.c.email == _key(email))
        if since:
            q = q.where(audit_log.c.at >= since)
        if action:
            q = q.where(audit_log.c.action == action)
        with store.engine.connect() as conn:
            rows = conn.execute(q.order_by(audit_log.c.id).limit(batch)).all()
        if not rows:
            return
        for r in rows:
            yield Entry(
                r.id,
                r.at,
                r.actor,
                r.action,
                r.subscriber_id,
                r.email,
                json.loads(r.old_values or "{}"),
                json.loads(r.new_values or "{}"),
            )
        last = rows[-1].id
