"""`publisher bounces fetch` against a real IMAP server (Debian's Dovecot, a throwaway instance
on IMAPS with a test certificate: tests/mta.py): the messages it dealt with are moved to the
processed folder (or deleted), and only those; other mail stays in the inbox. The certificate
is verified: without the test CA the fetch stops with one line and touches nothing."""

from __future__ import annotations

import datetime as dt
import imaplib
from pathlib import Path

from publisher.state import Store

from .bounce_helpers import SAMPLES, add, arf, cli, dsn, verp, write_config
from .mta import Dovecot
from .statehelpers import suppression_reason


def _folder(conn: imaplib.IMAP4_SSL, name: str) -> list[bytes]:
    """The messages now in `name`, in order."""
    typ, _ = conn.select(f'"{name}"')
    assert typ == "OK", name
    _, data = conn.uid("SEARCH", "ALL")
    out = []
    for uid in data[0].split():
        _, parts = conn.uid("FETCH", uid, "(BODY.PEEK[])")
        out.append(next(p[1] for p in parts if isinstance(p, tuple)))
    return out


def test_fetch_moves_only_what_it_processed(tmp_path: Path, db_url: str, monkeypatch) -> None:  # noqa: ANN001
    server = Dovecot()
    try:
        day = dt.date.today() - dt.timedelta(days=1)
        imap = {
            "imap_host": "127.0.0.1",
            "imap_port": server.port,
            "imap_user": server.user,
            "imap_cafile": str(server.cert),
        }
        cfg = write_config(tmp_path, db_url, **imap)
        with Store.open(cfg) as store:
            ids = add(store, "gone@example.net", "angry@example.net", "fine@example.net")
        human = (SAMPLES / "human_mail.eml").read_bytes()
        seed = [
            dsn(verp(ids["gone@example.net"], day), "gone@example.net"),
            human,
            arf("angry@example.net", verp(ids["angry@example.net"], day)),
            (SAMPLES / "vacation_auto_submitted.eml").read_bytes(),
        ]
        client = server.client()
        for raw in seed:
            assert client.append("INBOX", None, None, raw.replace(b"\n", b"\r\n"))[0] == "OK"
        client.logout()

        # The certificate is checked: without the test CA nothing is read or moved.
        untrusted = write_config(tmp_path / "untrusted", db_url, **{**imap, "imap_cafile": ""})
        monkeypatch.setenv("PUBLISHER_IMAP_PASSWORD", server.password)
        refused = cli(untrusted, "bounces", "fetch")
        assert refused.returncode == 1
        assert refused.stderr.startswith("error: IMAP 127.0.0.1:") and "TLS" in refused.stderr
        assert "certificate verify failed" in refused.stderr, refused.stderr

        run = cli(cfg, "bounces", "fetch")
        assert run.returncode == 0, run.stderr
        assert "4 messages: 3 recorded" in run.stdout, run.stdout
        assert "1 not bounces (left alone)" in run.stdout
        client = server.client()
        inbox = _folder(client, "INBOX")
        processed = _folder(client, "Processed")
        client.logout()
        assert [m.replace(b"\r\n", b"\n") for m in inbox] == [human]
        assert len(processed) == 3
        with Store.open(cfg) as store:
            assert store.get("gone@example.net").status == "bounced"
            assert suppression_reason(store, "angry@example.net") == "complaint"
            assert store.get("fine@example.net").status == "active"
        sources = {e.source for e in Store.open(cfg).iter_bounce_events()}
        assert all(s.startswith("imap:INBOX/") for s in sources), sources

        # With no processed folder the messages dealt with are deleted; the rest still stays.
        client = server.client()
        soft = dsn(
            verp(ids["fine@example.net"], day),
            "fine@example.net",
            "4.2.2",
            "smtp; 452 4.2.2 Mailbox full",
            action="delayed",
            serial="2",
        )
        client.append("INBOX", None, None, soft.replace(b"\n", b"\r\n"))
        client.logout()
        deleting = write_config(tmp_path / "deleting", db_url, **imap, imap_processed_folder="")
        run = cli(deleting, "bounces", "fetch")
        assert run.returncode == 0 and "2 messages: 1 recorded (soft 1)" in run.stdout, run.stdout
        client = server.client()
        assert [m.replace(b"\r\n", b"\n") for m in _folder(client, "INBOX")] == [human]
        assert len(_folder(client, "Processed")) == 3
        client.logout()
    finally:
        server.stop()
