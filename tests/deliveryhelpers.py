"""What the delivery tests share with the bounce, concurrency and fault tests: the sample day,
a deterministic message per reader, a config.toml for the loopback SMTP server, and a list of
readers imported into the store."""

from __future__ import annotations

import datetime as dt
import email.policy
from email.message import EmailMessage
from pathlib import Path

from publisher.config import Config, load_config
from publisher.state import Store
from publisher.subscribers import import_csv

from .pg import state_toml

DAY = dt.date(2024, 5, 15)
ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "digests" / "2024" / "05" / "15.md"


def build(email_addr: str, name: str, subscriber_id: int = 0) -> bytes:
    """A deterministic message per subscriber, so what arrives can be compared byte for byte."""
    msg = EmailMessage()
    msg["From"] = "Daily Papers <papers@localhost>"
    msg["To"] = f"{name} <{email_addr}>" if name else email_addr
    msg["Subject"] = f"Daily Papers {DAY}"
    msg.set_content(f"Hello {name or email_addr}\n.leading dot line\n논문 요약\n")
    return msg.as_bytes(policy=email.policy.SMTP)


def write_config(tmp: Path, port: int | None, db_url: str | None = None, **smtp: object) -> Config:
    """config.toml for the loopback server; `db_url` (conftest's fixture) for the state
    database, else the default SQLite file (for tests that never open the store)."""
    lines = ["[smtp]"]
    settings = {
        "host": "127.0.0.1" if port else "",
        "port": port or 25,
        "security": "none",
        "connections": 2,
        "retry_base_seconds": 0.001,
        "max_attempts": 3,
        "timeout": 5.0,
        **smtp,
    }
    for k, v in settings.items():
        lines.append(
            f"{k} = {v!r}".replace("'", '"')
            if not isinstance(v, bool)
            else f"{k} = {str(v).lower()}"
        )
    lines += ["[subscribers]", 'file = "subs.csv"', "[digests]", f'inbox = "{ROOT / "digests"}"']
    state = state_toml(db_url) if db_url else ""
    (tmp / "config.toml").write_text("\n".join(lines) + "\n" + state)
    return load_config(tmp / "config.toml")


def subscribe(cfg: Config, store: Store, emails: list[str]) -> None:
    rows = "".join(f"{e},Name {i}\n" for i, e in enumerate(emails))
    cfg.subscribers.file.write_text("email,name\n" + rows)
    import_csv(cfg, store)
