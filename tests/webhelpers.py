"""Helpers for the web tests: the app on a real loopback port, a config (the SMTP server is
tests/smtp_server.py's)."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from publisher.config import Config
from publisher.site import build_site

from .sitehelpers import DAYS, site_config, write_digest

SECRET = b"58ONR3_Mnh0pIjEa8JYGT1OS7KzoB7J9MaFaIoilCV4"


class Clock:
    """A clock the test moves by hand: rate limits and link expiry without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def live_server(make_app: Callable[[str], Starlette]) -> Iterator[str]:
    """Run `make_app(base_url)` under uvicorn in a thread on a free loopback port; yield the
    base URL. The socket is bound first so the app's config can carry the real address."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    app = make_app(base)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def web_config(tmp_path: Path, base: str, smtp_port: int | None = None, **web: object) -> Config:
    """A config rooted in tmp_path whose archive is built, base_url is the live server and SMTP
    (if given) is the loopback server, plain text (security none)."""
    cfg = site_config(tmp_path)
    if not (cfg.feed.output / "index.html").exists():
        for day in DAYS:
            write_digest(cfg.digests.inbox, day)
        build_site(cfg)
    smtp = cfg.smtp
    if smtp_port is not None:
        smtp = dataclasses.replace(smtp, host="127.0.0.1", port=smtp_port, security="none")
    return dataclasses.replace(
        cfg,
        site=dataclasses.replace(cfg.site, base_url=base),
        smtp=smtp,
        web=dataclasses.replace(cfg.web, **web),
    )


def start_serve(
    config: Path, port: int | str, log: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """`publisher serve` as a user starts it (a subprocess), its output to `log`."""
    cmd = [sys.executable, "-m", "publisher.cli", "serve", "--config", str(config)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)


def wait_serving(proc: subprocess.Popen[bytes], base: str, log: Path, deadline: float) -> None:
    """Until `base` answers its signup form; AssertionError with the log if the server exited
    or `deadline` (time.monotonic) passed first."""
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"publisher serve exited:\n{log.read_text()}")
        try:
            if httpx.get(base + "subscribe", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"publisher serve did not start:\n{log.read_text()}")
        time.sleep(0.05)
