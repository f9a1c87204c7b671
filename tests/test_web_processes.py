"""Two `publisher serve` processes on one database behave as one: real subprocesses on loopback
ports, a real aiosmtpd server for the confirmation mail, concurrent clients (threads with httpx),
on SQLite and on PostgreSQL (`db_url`). Plus the shared rate-limit buckets at the store level."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from publisher import state as st
from publisher.config import Config, load_config
from publisher.state import Store
from publisher.state.limits import PRUNE_EVERY
from publisher.state.schema import rate_limits, subscribers
from publisher.tokens import sign_id
from publisher.urls import preferences_url, unsubscribe_url

from .net import free_port
from .pg import state_toml
from .smtp_server import Recorder, smtp_server
from .webhelpers import SECRET, start_serve, wait_serving

ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}
Request = Callable[[httpx.Client], httpx.Response]


@dataclass
class Servers:
    cfg: Config
    bases: list[str]  # one base URL per `publisher serve` process
    inbox: Recorder

    def store(self) -> Store:
        return Store(self.cfg.database_url, upgrade=False)

    def subscriber_rows(self, address: str) -> int:
        with self.store() as store, store.engine.connect() as conn:
            q = sa.select(sa.func.count()).where(subscribers.c.email == address)
            return conn.execute(q).scalar_one()


def write_config(tmp_path: Path, db_url: str, base: str, smtp_port: int, **web: int) -> Config:
    lines = "".join(f"{k} = {v}\n" for k, v in web.items())
    (tmp_path / "config.toml").write_text(
        f"""
[site]
base_url = "{base}"
[digests]
inbox = "inbox"
[feed]
output = "public"
[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
timeout = 10.0
[web]
{lines}"""
        + state_toml(db_url),
        encoding="utf-8",
    )
    (tmp_path / "inbox").mkdir(exist_ok=True)
    return load_config(tmp_path / "config.toml")


@pytest.fixture
def start_servers(tmp_path: Path, db_url: str) -> Iterator[Callable[..., Servers]]:
    """`start_servers(**web)`: two `publisher serve` processes on one config and database,
    started together (so they also race to create the schema); stopped at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    stack = ExitStack()

    def start(**web: int) -> Servers:
        inbox, smtp_port = stack.enter_context(smtp_server())
        ports = [free_port(), free_port()]
        bases = [f"http://127.0.0.1:{p}/" for p in ports]
        # One public address, as behind a proxy: links in the mail name the first server.
        cfg = write_config(tmp_path, db_url, bases[0], smtp_port, **web)
        env = {**os.environ, "PUBLISHER_SECRET": SECRET.decode()}
        for port in ports:
            log = tmp_path / f"serve-{port}.log"
            procs.append(start_serve(cfg.path, port, log, env))
            logs.append(log)
        deadline = time.monotonic() + 60
        for proc, base, log in zip(procs, bases, logs, strict=True):
            wait_serving(proc, base, log, deadline)
        # Warm both up (imports, templates, the database connection, SMTP), so that the bursts
        # below meet two servers equally ready.
        for base in bases:
            assert call(signup(base, f"warm.{base[-6:-1]}@example.com")).status_code == 200
        inbox.messages.clear()
        return Servers(cfg, bases, inbox)

    with stack:
        try:
            yield start
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for log in logs:
                # A 500 is logged with its traceback; show it with the failure.
                text = log.read_text(errors="replace")
                assert "Traceback" not in text, text


def burst(requests: list[Request]) -> list[int]:
    """Run every request at once, each on its own thread and connection; their status codes."""
    barrier = threading.Barrier(len(requests))
    codes: list[int] = [0] * len(requests)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with httpx.Client(timeout=60) as http:
                barrier.wait(30)
                codes[i] = requests[i](http).status_code
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return codes


def call(request: Request) -> httpx.Response:
    with httpx.Client(timeout=60) as http:
        return request(http)


def get(url: str) -> Request:
    return lambda http: http.get(url)


def post(url: str, data: dict[str, str], headers: dict[str, str] | None = None) -> Request:
    return lambda http: http.post(url, data=data, headers=headers)


def one_click(url: str) -> Request:
    """RFC 8058's one-click unsubscribe request."""
    return lambda http: http.post(url, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)


def signup(base: str, address: str, client: str | None = None) -> Request:
    headers = {"X-Forwarded-For": client} if client else {}
    return post(base + "subscribe", {"email": address, "name": "Racer"}, headers)


# ---------------------------------------------------------------------------------------------
# Two processes


def test_same_address_on_both_servers_at_once_is_one_row_and_one_mail(
    start_servers: Callable[..., Servers],
) -> None:
    srv = start_servers(signups_per_client_per_hour=1000, confirm_resend_minutes=10)
    # Each address is hammered from both servers at once, several addresses in one burst, a few
    # bursts: the race between two processes is a matter of milliseconds.
    for burst_no in range(3):
        addresses = [f"race{burst_no}.{i}@example.com" for i in range(4)]
        reqs = [signup(srv.bases[i % 2], a) for a in addresses for i in range(12)]
        codes = burst(reqs)
        assert Counter(codes) == {200: len(reqs)}
        with srv.store() as store:
            for address in addresses:
                assert srv.subscriber_rows(address) == 1
                assert store.get(address).status == st.PENDING
                assert len(srv.inbox.to(address)) == 1  # one mail per confirm_resend_minutes


def test_per_client_limit_is_shared_by_both_servers(
    start_servers: Callable[..., Servers],
) -> None:
    n, k = 5, 7
    srv = start_servers(signups_per_client_per_hour=n)
    client = "198.51.100.7"  # one reader behind the proxy both servers trust (127.0.0.1)
    reqs = [signup(srv.bases[i % 2], f"c{i}@example.com", client) for i in range(n + k)]
    codes = burst(reqs)
    assert Counter(codes) == {200: n, 429: k}
    assert len(srv.inbox.messages) == n
    with srv.store() as store:
        assert sum(store.get(f"c{i}@example.com") is not None for i in range(n + k)) == n
    # Sequentially too, alternating: the bucket is empty on both servers for that client...
    for base in srv.bases:
        assert call(signup(base, "late@example.com", client)).status_code == 429
    # ...and only for that client.
    assert call(signup(srv.bases[1], "other@example.com", "198.51.100.8")).status_code == 200


def test_confirm_and_unsubscribe_at_once_on_both_servers_never_fail(
    start_servers: Callable[..., Servers],
) -> None:
    srv = start_servers(signups_per_client_per_hour=1000)
    addresses = [f"flip{i}@example.com" for i in range(3)]
    links: dict[str, str] = {}
    for address in addresses:
        assert call(signup(srv.bases[1], address)).status_code == 200
        (msg,) = srv.inbox.to(address)
        text = msg.get_body(("plain",)).get_content()
        (links[address],) = [w for w in text.split() if w.startswith(srv.bases[0] + "confirm/")]

    def on(base: str, url: str) -> str:
        return base + url.removeprefix(srv.bases[0])

    reqs: list[Request] = []
    with srv.store() as store:
        ids = {address: store.get(address).id for address in addresses}  # type: ignore[union-attr]
    for address in addresses:
        unsub = unsubscribe_url(srv.cfg, sign_id(SECRET, "unsubscribe", ids[address]))
        manage = preferences_url(srv.cfg, sign_id(SECRET, "manage", ids[address]))
        for i in range(4):
            base = srv.bases[i % 2]
            reqs.append(post(on(base, links[address]), {}))
            reqs.append(one_click(on(base, unsub)))
            reqs.append(post(on(base, manage), {"action": "resubscribe"}))
    for _ in range(3):
        codes = burst(reqs)
        assert Counter(codes) == {200: len(reqs)}
        with srv.store() as store:
            for address in addresses:
                assert srv.subscriber_rows(address) == 1
                sub = store.get(address)
                assert sub is not None and sub.status in (st.ACTIVE, st.UNSUBSCRIBED)
                # Whoever came last, the row and the suppression list agree.
                assert (sub.status == st.UNSUBSCRIBED) == store.is_suppressed(address)


# ---------------------------------------------------------------------------------------------
# The shared buckets at the store level


def test_buckets_are_shared_between_stores_and_refill(db_url: str, tmp_path: Path) -> None:
    one, two = Store(db_url), Store(db_url)
    try:
        now = time.time()
        takes = [s.take_token("web.client:a", 3, 3600, now) for s in (one, two, one, two)]
        assert takes == [True, True, True, False]
        assert two.take_token("web.client:b", 3, 3600, now)  # another key, another bucket
        assert one.take_token("web.client:a", 3, 3600, now + 1200)  # 20 minutes refill one
        assert not two.take_token("web.client:a", 3, 3600, now + 1200)
        # Capacity 1: at most once per period; a failure gives the token back.
        assert one.take_token("web.confirm:x", 1, 600, now)
        assert not two.take_token("web.confirm:x", 1, 600, now + 599)
        assert two.take_token("web.confirm:x", 1, 600, now + 600)
        two.give_back_token("web.confirm:x", 1, 600, now + 601)
        assert one.take_token("web.confirm:x", 1, 600, now + 601)
        assert not one.take_token("web.confirm:x", 1, 600, now + 602)
        assert one.take_token("anything", 1, 0, now)  # a period of 0: no limit
    finally:
        one.close()
        two.close()


def test_refilled_buckets_are_pruned_a_batch_at_a_time(db_url: str) -> None:
    with Store(db_url) as store:
        now = time.time()
        for i in range(30):
            store.take_token(f"k{i}", 1, 60, now)  # prunes on its own now and then: nothing due

        def rows() -> int:
            with store.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(rate_limits)).scalar()

        assert rows() == 30
        assert store.prune_limits(now + 59) == 0
        assert store.prune_limits(now + 60, limit=20) == 20
        assert rows() == 10
        # The takes themselves prune: a later burst leaves only the buckets still refilling.
        for i in range(PRUNE_EVERY):
            store.take_token(f"later{i}", 1, 60, now + 120)
        assert rows() == PRUNE_EVERY
        with store.engine.connect() as conn:
            expires = conn.execute(sa.select(sa.func.min(rate_limits.c.expires_at))).scalar()
        assert expires > dt.datetime.fromtimestamp(now + 120, dt.UTC).replace(tzinfo=None)
