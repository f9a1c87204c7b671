"""Who a report may act on (issue 22, "Trust"), as an attacker tries it: the bounce address is
public, so anyone can mail it a DSN or an ARF report naming a reader. With `[email] return_path`
set only a valid VERP token names a reader; a report without one is recorded as `unverified`
and acts on nobody. Without `return_path` a report acts only on an address the ledger shows
was mailed within `[bounces] token_max_age_days`. A suppressed reader is shown with why and the
event that did it, and can come back through the preferences page."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from publisher import state as st
from publisher.state import Store

from .bounce_helpers import (
    DOMAIN,
    SAMPLES,
    add,
    arf,
    cli,
    dsn,
    events,
    mailed,
    verp,
    write_config,
)

DAY = dt.date.today() - dt.timedelta(days=1)
PUBLIC = f"bounces@{DOMAIN}"  # what an attacker mails: the bounce address, no token


def _many_victims_dsn(victims: list[str]) -> bytes:
    blocks = "".join(
        f"Final-Recipient: rfc822; {v}\nAction: failed\nStatus: 5.1.1\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{v}>: User unknown\n\n"
        for v in victims
    )
    return (
        f"From: MAILER-DAEMON@mx.attacker.example\nTo: {PUBLIC}\n"
        "Subject: Undelivered Mail\nDate: Wed, 15 May 2024 07:00:00 +0000\n"
        "Message-ID: <many@attacker.example>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="M"\n\n'
        "--M\nContent-Type: text/plain\n\nFailed.\n\n"
        "--M\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.attacker.example\n\n"
        f"{blocks}--M--\n"
    ).encode()


def test_a_dsn_without_token_naming_readers_acts_on_nobody(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    victims = [f"victim{i}@example.net" for i in range(20)]
    with Store.open(cfg) as store:
        add(store, *victims)
    run = cli(cfg, "bounces", "import", "-", stdin=_many_victims_dsn(victims))
    assert run.returncode == 0, run.stderr
    assert "; 0 addresses suppressed" in run.stdout, run.stdout
    assert "unverified" in run.stdout
    with Store.open(cfg) as store:
        for v in victims:
            sub = store.get(v)
            assert sub.status == "active" and sub.hard_bounces == 0, v
            assert not store.is_suppressed(v), v
    listed = events(cfg)
    assert len(listed) == 20
    for e in listed:
        # recorded for the operator, with what the report claimed, tied to nobody
        assert e["kind"] == "unverified" and e["reported_kind"] == "hard", e
        assert e["status"] == "5.1.1" and "User unknown" in e["reason"], e
        assert "acted on nobody" in e["action"], e
    assert {e["email"] for e in events(cfg, "--kind", "unverified")} == set(victims)


def test_an_arf_without_token_unsubscribes_nobody(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        add(store, "kate@example.net")
    # The complaint names the reader; its returned original carries no VERP Return-Path.
    run = cli(cfg, "bounces", "import", str(SAMPLES / "ses_complaint_arf.eml"))
    assert run.returncode == 0, run.stderr
    with Store.open(cfg) as store:
        assert store.get("kate@example.net").status == "active"
        assert not store.is_suppressed("kate@example.net")
    (event,) = events(cfg)
    assert (event["kind"], event["reported_kind"]) == ("unverified", "complaint")
    assert event["email"] == "kate@example.net" and "ARF" in event["reason"]


def test_a_flufl_detected_bounce_without_token_acts_on_nobody(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        add(store, "ada@example.net")
    run = cli(cfg, "bounces", "import", str(SAMPLES / "exim_unknown_user.eml"))
    assert run.returncode == 0, run.stderr
    with Store.open(cfg) as store:
        assert store.get("ada@example.net").status == "active"
    (event,) = events(cfg)
    assert (event["kind"], event["reported_kind"], event["status"]) == (
        "unverified",
        "hard",
        "5.1.1",
    )


def test_an_arf_with_the_readers_token_still_acts(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        ids = add(store, "kate@example.net", "other@example.net")
    # The feedback loop returns our message with the Return-Path its delivery added.
    run = cli(
        cfg,
        "bounces",
        "import",
        "-",
        stdin=arf("other@example.net", verp(ids["kate@example.net"], DAY)),
    )
    assert run.returncode == 0, run.stderr
    with Store.open(cfg) as store:
        assert store.get("kate@example.net").status == "unsubscribed"
        assert store.get("other@example.net").status == "active"


def test_without_return_path_only_addresses_mailed_recently_are_acted_on(
    tmp_path: Path, db_url: str
) -> None:
    cfg = write_config(tmp_path, db_url, return_path=False, token_max_age_days=30)
    with Store.open(cfg) as store:
        recent = add(store, "recent@example.net")
        old = add(store, "old@example.net")
        add(store, "never@example.net")
        mailed(store, recent, DAY)
        mailed(store, old, dt.date.today() - dt.timedelta(days=45))
    for n, who in enumerate(("recent@example.net", "old@example.net", "never@example.net")):
        run = cli(cfg, "bounces", "import", "-", stdin=dsn(PUBLIC, who, serial=str(n)))
        assert run.returncode == 0, run.stderr
    with Store.open(cfg) as store:
        assert store.get("recent@example.net").status == "bounced"
        assert store.get("old@example.net").status == "active"
        assert store.get("never@example.net").status == "active"
    actions = {e["email"]: e["action"] for e in events(cfg)}
    assert actions["recent@example.net"].startswith("suppressed"), actions
    for who in ("old@example.net", "never@example.net"):
        assert "not mailed within 30 days" in actions[who], actions


def test_dry_run_warns_when_return_path_is_off(tmp_path: Path, db_url: str) -> None:
    from .conftest import ROOT

    for on in (False, True):
        folder = tmp_path / str(on)
        cfg = write_config(folder, db_url, return_path=on)
        text = cfg.path.read_text().replace(
            "[bounces]\n",
            f'[digests]\ninbox = "{ROOT / "digests"}"\n[bounces]\n',
        )
        cfg.path.write_text(text)
        out = str(folder / "preview")
        run = cli(cfg, "send", "--dry-run", "--out", out, "--to", "me@example.net")
        assert run.returncode == 0, run.stderr
        warned = [line for line in run.stdout.splitlines() if line.startswith("warning:")]
        if on:
            assert not warned, warned
        else:
            assert len(warned) == 1 and "[email] return_path" in warned[0], run.stdout
            assert "VERP" in warned[0]


def test_a_suppressed_reader_is_listed_with_why_and_the_event(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        ids = add(store, "gone@example.net", "stays@example.net")
    run = cli(cfg, "bounces", "import", "-", stdin=dsn(verp(ids["gone@example.net"], DAY), "x@y"))
    assert run.returncode == 0, run.stderr
    (event,) = events(cfg)
    listed = cli(cfg, "subscribers", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split("\t")[0]: line for line in listed.stdout.splitlines() if "\t" in line}
    gone = lines["gone@example.net"].split("\t")
    assert gone[1] == "bounced"
    assert "5.1.1" in gone[4] and f"bounce event {event['id']}" in gone[4], gone
    assert lines["stays@example.net"].split("\t")[1:4] == ["active", "cli", ""]
    assert len(lines["stays@example.net"].split("\t")) == 4
    shown = cli(cfg, "bounces", "list", "--email", "gone@example.net")
    (line,) = shown.stdout.splitlines()
    assert line.startswith(f"{event['id']}\t") and "suppressed (hard bounce 1/1)" in line
    assert "User unknown" in line and line.endswith("stdin")


def test_the_preferences_page_brings_a_bounced_reader_back(tmp_path: Path, db_url: str) -> None:
    from publisher.bounces.intake import Intake

    from .bounce_helpers import RETURN_PATH
    from .test_web import T, make_web
    from .webhelpers import SECRET as WEB_SECRET

    for web in make_web(tmp_path, db_url):
        cfg = dataclasses.replace(
            web.cfg, email=dataclasses.replace(web.cfg.email, return_path=RETURN_PATH)
        )
        sub, _ = web.store.add_subscriber("ada@example.com", "Ada", status=st.ACTIVE, source="csv")
        # The token is signed with the web's secret, which the intake is given.
        raw = dsn(verp(sub.id, DAY, secret=WEB_SECRET.decode()), "ada@example.com")
        line = Intake(cfg, web.store, [WEB_SECRET]).process(raw, "test").line
        assert "suppressed" in line, line
        assert web.state("ada@example.com") == (st.BOUNCED, True)

        url = web.manage_url("ada@example.com")
        page = web.http.get(url)
        assert page.status_code == 200 and T["resubscribe_button"] in page.text
        r = web.http.post(url, data={"action": "resubscribe"})
        assert r.status_code == 200 and T["status_active"] in r.text
        assert web.state("ada@example.com") == (st.ACTIVE, False)
        assert web.store.get("ada@example.com").hard_bounces == 0
