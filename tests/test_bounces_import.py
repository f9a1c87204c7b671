"""`publisher bounces import` (a subprocess, on SQLite and PostgreSQL): every source (files,
a folder, Maildir, mbox, standard input), the policy by kind, VERP and mailto tokens, bad input
one line each while the batch goes on, the same message twice counted once, and what
`bounces list` / `bounces show` print."""

from __future__ import annotations

import datetime as dt
import mailbox
from pathlib import Path

import sqlalchemy as sa

from publisher.state import Store
from publisher.state.schema import ledger
from publisher.tokens import Signer, ledger_message_id

from .bounce_helpers import (
    SAMPLES,
    SECRET,
    add,
    cli,
    dsn,
    events,
    ingest,
    mailed,
    stored_events,
    unsub_address,
    verp,
    write_config,
)
from .statehelpers import suppression_reason
from .test_bounces_parse import EXPECTED

# Tokens older than [bounces] token_max_age_days are refused: a recent digest.
OTHER_SECRET = "7IOP3zeBlvbEM3aWAZT1F_tmiMbuLl5L9tfL0irajcY"  # someone else's
DAY = dt.date.today() - dt.timedelta(days=1)

# Who each sample is about, by what the policy must do (tests/fixtures/bounces_expected.tsv).
# An SES notification mail names the message it is about: one the ledger does not know (these
# tests record no Message-IDs) acts on nobody, whatever address its JSON names.


def _about(kind: str, ses_json: bool = False) -> list[str]:
    return [
        rcpt
        for name, (_, _, failures) in sorted(EXPECTED.items())
        if name.startswith("ses_json") == ses_json
        for rcpt, k, _, _ in failures
        if k == kind
    ]


HARD = _about("hard")
BLOCKED = _about("blocked")
SOFT = _about("soft")
COMPLAINED = _about("complaint")
SES_JSON = {k: _about(k, ses_json=True) for k in ("hard", "soft", "complaint")}
UNTOUCHED_SENDERS = ["mia@example.net", "noah@example.net", "olga@example.net"]


def test_samples_folder_acts_by_kind_and_twice_counts_once(tmp_path: Path, db_url: str) -> None:
    # The samples carry no VERP token: they act by the address they name only without
    # `return_path`, and only on readers the ledger shows were mailed lately.
    cfg = write_config(tmp_path, db_url, return_path=False)
    with Store.open(cfg) as store:
        ses = [e for v in SES_JSON.values() for e in v]
        ids = add(store, *HARD, *BLOCKED, *SOFT, *COMPLAINED, *UNTOUCHED_SENDERS, *ses)
        mailed(store, ids, DAY)
    run = cli(cfg, "bounces", "import", str(SAMPLES))
    assert run.returncode == 0, run.stderr
    n = len(list(SAMPLES.glob("*.eml")))
    last = run.stdout.splitlines()[-1]
    assert last.startswith(f"{n} messages: ") and "1 not bounces (left alone)" in last, last
    assert f"; {len(HARD) + len(COMPLAINED)} addresses suppressed" in last, last
    with Store.open(cfg) as store:
        for e in HARD:
            assert store.get(e).status == "bounced" and store.is_suppressed(e), e
        for e in COMPLAINED:
            assert store.get(e).status == "unsubscribed", e
            assert suppression_reason(store, e) == "complaint", e
        for e in BLOCKED + SOFT + UNTOUCHED_SENDERS + ses:
            assert store.get(e).status == "active" and not store.is_suppressed(e), e
    listed = events(cfg)
    assert {k for e in listed for k in ("email", "kind", "status", "reason", "source") if k in e}
    by_email = {e["email"]: e for e in listed if e["email"]}
    assert {e for e, ev in by_email.items() if ev["kind"] == "hard"} == set(HARD)
    assert {e for e, ev in by_email.items() if ev["kind"] == "blocked"} == set(BLOCKED)
    assert {e for e, ev in by_email.items() if ev["kind"] == "soft"} == set(SOFT)
    assert {e for e, ev in by_email.items() if ev["kind"] == "complaint"} == set(COMPLAINED)
    assert {e for e, ev in by_email.items() if ev["kind"] == "unverified"} == set(ses)
    assert by_email["kurt@example.com"]["reported_kind"] == "complaint"
    assert by_email["kurt@example.com"]["cause"] == "feedback"
    assert by_email["paul@notes.example.com"]["cause"] == "userunknown"
    assert by_email["erin@gmail.com"]["status"] == "5.1.1"
    assert "does not exist" in by_email["erin@gmail.com"]["reason"]
    assert by_email["erin@gmail.com"]["source"].endswith("gmail_no_such_user.eml")
    ignored = events(cfg, "--kind", "ignored")
    # every sample read as "ignored" but the one that is no report at all (human mail)
    n_ignored = sum(kind == "ignored" for kind, *_ in EXPECTED.values()) - 1
    assert len(ignored) == n_ignored and all(e["kind"] == "ignored" for e in ignored)
    auto = {e["email"] for e in ignored if e["reason"].startswith("auto-reply")}
    assert auto == {"mia@example.net", "noah@example.net", "olga@example.net"}

    again = cli(cfg, "bounces", "import", str(SAMPLES))
    assert again.returncode == 0, again.stderr
    assert f"{n - 1} already imported" in again.stdout.splitlines()[-1]
    assert len(events(cfg)) == len(listed)

    shown = cli(cfg, "bounces", "show", str(by_email["jack@example.net"]["id"]))
    assert shown.returncode == 0
    assert shown.stdout == (SAMPLES / "ses_bounce.eml").read_text()


def test_samples_folder_with_return_path_acts_on_nobody(tmp_path: Path, db_url: str) -> None:
    # With VERP on, a report without a token is anyone's word: recorded, tied to nobody.
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        ids = add(store, *HARD, *BLOCKED, *SOFT, *COMPLAINED, *UNTOUCHED_SENDERS)
        mailed(store, ids, DAY)
    run = cli(cfg, "bounces", "import", str(SAMPLES))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].endswith("; 0 addresses suppressed"), run.stdout
    with Store.open(cfg) as store:
        for e in ids:
            assert store.get(e).status == "active" and not store.is_suppressed(e), e
    claimed = {e["email"]: e["reported_kind"] for e in events(cfg, "--kind", "unverified")}
    assert claimed == {
        **dict.fromkeys(HARD, "hard"),
        **dict.fromkeys(BLOCKED, "blocked"),
        **dict.fromkeys(SOFT, "soft"),
        **dict.fromkeys(COMPLAINED, "complaint"),
        **{e: k for k, v in SES_JSON.items() for e in v},
    }


def test_maildir_mbox_and_stdin_take_the_same_path(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        ids = add(store, "a@example.net", "b@example.net", "c@example.net", "d@example.net")
    md = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    md.add(dsn(verp(ids["a@example.net"], DAY), "a@example.net", serial="a"))
    msg = mailbox.MaildirMessage(dsn(verp(ids["b@example.net"], DAY), "b@example.net", serial="b"))
    msg.set_subdir("cur")
    md.add(msg)
    mb = mailbox.mbox(str(tmp_path / "bounces.mbox"))
    mb.add(dsn(verp(ids["c@example.net"], DAY), "c@example.net", serial="c"))
    mb.add((SAMPLES / "human_mail.eml").read_bytes())
    mb.close()
    run = cli(cfg, "bounces", "import", str(tmp_path / "Maildir"), str(tmp_path / "bounces.mbox"))
    assert run.returncode == 0, run.stderr
    assert "4 messages: 3 recorded (hard 3)" in run.stdout, run.stdout
    assert "bounces.mbox#2: not a bounce" in run.stdout
    piped = cli(
        cfg,
        "bounces",
        "import",
        "-",
        stdin=dsn(verp(ids["d@example.net"], DAY), "d@example.net", serial="d"),
    )
    assert piped.returncode == 0 and "1 recorded (hard 1)" in piped.stdout, piped.stdout
    with Store.open(cfg) as store:
        assert all(store.get(e).status == "bounced" for e in ids)
    sources = {e["email"]: e["source"] for e in events(cfg)}
    assert sources["d@example.net"] == "stdin"
    assert sources["c@example.net"].endswith("bounces.mbox#1")
    assert "/Maildir/cur/" in sources["b@example.net"]


def test_verp_names_the_reader_whatever_address_the_report_names(
    tmp_path: Path, db_url: str
) -> None:
    # The reader forwards to another mailbox that bounces: only VERP knows who it was.
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        ids = add(store, "reader@example.net")
    raw = dsn(verp(ids["reader@example.net"], DAY), "forward-target@elsewhere.example")
    assert "suppressed" in ingest(cfg, raw)
    with Store.open(cfg) as store:
        assert store.get("reader@example.net").status == "bounced"
    (event,) = stored_events(cfg)
    assert event.email == "reader@example.net" and event.digest_date == DAY


def test_unknown_address_is_kept_and_reported(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url, return_path=False)
    with Store.open(cfg) as store:
        add(store, "someone@example.net")
    run = cli(cfg, "bounces", "import", str(SAMPLES / "ses_bounce.eml"))
    assert run.returncode == 0
    assert "jack@example.net 5.1.1: unknown address" in run.stdout, run.stdout
    (event,) = events(cfg, "--kind", "hard")
    assert event["email"] == "jack@example.net" and event["action"] == "unknown address"
    with Store.open(cfg) as store:
        assert not store.is_suppressed("jack@example.net")


def test_mailto_unsubscribe_and_a_bounce_carrying_it_does_not(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    with Store.open(cfg) as store:
        ids = add(store, "leaver@example.net", "stayer@example.net")
    request = (
        "From: Leaver <leaver-other-address@example.com>\n"
        f"To: {unsub_address(ids['leaver@example.net'], DAY)}\n"
        "Subject: unsubscribe\nMessage-ID: <u1@example.com>\n\nunsubscribe\n"
    ).encode()
    line = ingest(cfg, request)
    assert "unsubscribe request" in line and "suppressed" in line, line
    # A soft bounce whose returned headers carry a mailto with a token: not an unsubscribe.
    soft = dsn(
        verp(ids["stayer@example.net"], DAY),
        "stayer@example.net",
        "4.2.2",
        "smtp; 452 4.2.2 Mailbox full",
        action="delayed",
    )
    assert "soft stayer@example.net 4.2.2: counted" in ingest(cfg, soft)
    with Store.open(cfg) as store:
        assert store.get("leaver@example.net").status == "unsubscribed"
        assert suppression_reason(store, "leaver@example.net") == "unsubscribed by mail"
        assert store.get("stayer@example.net").status == "active"
    assert [e.email for e in stored_events(cfg, "unsubscribe")] == ["leaver@example.net"]


def test_bad_input_is_one_line_each_and_the_batch_goes_on(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url, max_message_bytes=20_000, token_max_age_days=60)
    with Store.open(cfg) as store:
        ids = add(store, "victim@example.net", "old@example.net", "real@example.net")
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "1-garbage").write_bytes(b"\x00\x01\x02 not mail at all \xff\xfe")
    (inbox / "2-huge.eml").write_bytes(dsn("x@y", "victim@example.net") + b"x" * 30_000)
    forged = verp(ids["victim@example.net"], DAY, secret=OTHER_SECRET)
    (inbox / "3-forged.eml").write_bytes(dsn(forged, "victim@example.net", serial="f"))
    expired = verp(ids["old@example.net"], dt.date.today() - dt.timedelta(days=61))
    (inbox / "4-expired.eml").write_bytes(dsn(expired, "old@example.net", serial="e"))
    (inbox / "5-real.eml").write_bytes(
        dsn(verp(ids["real@example.net"], DAY), "real@example.net", serial="r")
    )
    run = cli(cfg, "bounces", "import", str(inbox), str(tmp_path / "missing.mbox"))
    assert run.returncode == 1
    out = run.stdout.splitlines()
    assert any(line.startswith(f"{inbox}/1-garbage: not an email message") for line in out), out
    assert any("2-huge.eml" in line and "max_message_bytes = 20000" in line for line in out)
    assert any("3-forged.eml" in line and "forged verp token" in line for line in out), out
    assert any("4-expired.eml" in line and "expired verp token" in line for line in out), out
    assert any("5-real.eml" in line and "suppressed" in line for line in out), out
    assert run.stderr.strip().splitlines()[-1].endswith("missing.mbox: no such file or folder")
    with Store.open(cfg) as store:
        assert store.get("victim@example.net").status == "active"
        assert store.get("old@example.net").status == "active"
        assert store.get("real@example.net").status == "bounced"


def _soft(cfg, sub_id: int, email: str, day: dt.date) -> str:  # noqa: ANN001
    raw = dsn(
        verp(sub_id, day),
        email,
        "5.2.2",
        "smtp; 552 5.2.2 Mailbox full",
        serial=day.isoformat(),
        when=dt.datetime.combine(day, dt.time(7), dt.UTC),
    )
    return ingest(cfg, raw)


def test_soft_bounces_suppress_on_distinct_days_and_a_delivery_resets(
    tmp_path: Path, db_url: str
) -> None:
    cfg = write_config(tmp_path, db_url, soft_limit=3, soft_window_days=30)
    today = dt.date.today()
    days = [today - dt.timedelta(days=n) for n in (6, 5, 4, 3, 2)]
    with Store.open(cfg) as store:
        ids = add(store, "full@example.net", "reset@example.net")
        for d in days:
            store.ensure_ledger_partition(d)
        # reset@ was sent the digest of days[2] and it did not bounce: a delivery in between.
        with store.engine.begin() as conn:
            for e in ids:
                for d in days:
                    conn.execute(
                        ledger.insert().values(
                            digest_date=d,
                            subscriber_id=ids[e],
                            status="sent",
                            attempts=1,
                            final=False,
                            last_reply="250 OK",
                            updated_at=dt.datetime.combine(d, dt.time(7)),
                        )
                    )
    assert "soft bounce day 1/3" in _soft(cfg, ids["full@example.net"], "full@example.net", days[0])
    # The same digest bouncing twice (a retry report) is still one day.
    again = dsn(
        verp(ids["full@example.net"], days[0]),
        "full@example.net",
        "5.2.2",
        "smtp; 552 5.2.2 Mailbox full",
        serial="dup",
    )
    assert "soft bounce day 1/3" in ingest(cfg, again)
    assert "soft bounce day 2/3" in _soft(cfg, ids["full@example.net"], "full@example.net", days[1])
    assert "suppressed (soft bounces on 3 days)" in _soft(
        cfg, ids["full@example.net"], "full@example.net", days[2]
    )
    for d in (days[0], days[1], days[3]):
        out = _soft(cfg, ids["reset@example.net"], "reset@example.net", d)
    assert "soft bounce day 1/3" in out, out  # days[2] was delivered: the count started again
    assert "soft bounce day 2/3" in _soft(
        cfg, ids["reset@example.net"], "reset@example.net", days[4]
    )
    with Store.open(cfg) as store:
        assert store.get("full@example.net").status == "bounced"
        assert store.get("reset@example.net").status == "active"
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM bounce_messages")).scalar() == 8


def test_stdin_pipe_exits_75_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    # Issue 23: with the database down the pipe exited 1, Postfix bounced the bounce and it
    # was lost. EX_TEMPFAIL (75) makes the MTA keep the message and retry.
    from .net import free_port

    url = f"postgresql+psycopg://publisher@127.0.0.1:{free_port()}/publisher"  # nobody there
    cfg = write_config(tmp_path, url)
    run = cli(cfg, "bounces", "import", "-", stdin=dsn(verp(1, DAY), "a@example.net", serial="x"))
    assert run.returncode == 75, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith("error: ") and "127.0.0.1" in line, line
    assert "exit 75: the mail system will try again" in line, line


def test_an_ses_json_mail_acts_through_the_message_id_the_ledger_sent(
    tmp_path: Path, db_url: str
) -> None:
    # SES "email" notifications: the JSON's `mail` names our Message-ID, which names (signed)
    # the ledger row it was sent for; that (not the address in the JSON) says whom the report
    # is about, VERP or not. The samples' Message-IDs become those of this database's rows.
    cfg = write_config(tmp_path, db_url)
    signer = Signer(SECRET.encode(), "message")
    with Store.open(cfg) as store:
        ids = add(store, "lena@example.com", "kurt@example.com", "mona@example.com")
        mailed(store, ids, DAY)
        with store.engine.connect() as conn:
            rows = dict(conn.execute(sa.select(ledger.c.subscriber_id, ledger.c.id)).all())
    names = ("ses_json_bounce.eml", "ses_json_complaint.eml", "ses_json_transient.eml")
    for name, email in zip(names, ids, strict=True):
        local = name.removesuffix(".eml").replace("_", "")
        ours = ledger_message_id(signer, rows[ids[email]], DAY, "papers.example.org")
        raw = (SAMPLES / name).read_text().replace(f"<{local}@papers.example.org>", ours)
        assert ours in raw, name
        (tmp_path / name).write_text(raw)
    run = cli(cfg, "bounces", "import", *(str(tmp_path / n) for n in names))
    assert run.returncode == 0, run.stderr
    assert "matched by Message-ID" in run.stdout, run.stdout
    with Store.open(cfg) as store:
        assert store.get("lena@example.com").status == "bounced"
        assert store.get("kurt@example.com").status == "unsubscribed"
        assert suppression_reason(store, "kurt@example.com") == "complaint"
        assert store.get("mona@example.com").status == "active"  # transient: one soft day
    by_email = {e["email"]: e for e in events(cfg)}
    assert by_email["lena@example.com"]["cause"] == "userunknown"
    assert by_email["mona@example.com"]["kind"] == "soft"
    assert by_email["mona@example.com"]["cause"] == "mailboxfull"
    listed = cli(cfg, "bounces", "list").stdout.splitlines()
    assert any(line.split("\t")[2:4] == ["hard", "userunknown"] for line in listed), listed
