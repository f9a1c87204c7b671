"""Ledger compaction (`[state] keep_ledger_days`, publisher/state/compaction.py): the expired
editions' rows are folded into `ledger_totals` and deleted, every count the status, the report
and /metrics show stays the same, an edition being sent is left alone, `--dry-run` changes
nothing, and a compacted edition is never sent again. Real SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent

from publisher import metrics
from publisher.cli import cli
from publisher.config import ConfigError, load_config
from publisher.scheduler import Runner
from publisher.state import ChoiceUpdate, EmailStatus, Store, reporting
from publisher.state.bounces import BouncePolicy, InboundEvent
from publisher.state.compaction import compact
from publisher.state.publications import EditionCompacted
from publisher.state.schema import WEEKLY, bounce_events, bounce_messages, ledger, ledger_totals
from publisher.subscribers import import_csv
from publisher.tokens import make_secret

from .deliveryhelpers import DAY, SAMPLE, write_config
from .smtp_server import Recorder, start_server

OLD = DAY  # 2024-05-15, the sample digest: expired at NOW
PARTIAL = DAY + dt.timedelta(days=1)  # expired, its email partial (never retried to final)
NEW = dt.date(2024, 8, 20)  # not expired
OLD_WEEK = dt.date(2024, 5, 6)  # a weekly edition's Monday, due 2024-05-13: expired
NOW = dt.datetime(2024, 8, 25, 12, tzinfo=dt.UTC)  # keep_ledger_days 90: first kept 2024-05-27


def _readers(store: Store) -> None:
    for i in range(6):
        store.add_subscriber(f"r{i}@example.org", f"R{i}", status="active", source="cli")
    store.set_choice("r1@example.org", ChoiceUpdate(topics=frozenset({"agents"})), "cli")
    store.set_choice("r2@example.org", ChoiceUpdate(max_papers=3), "cli")
    for i in (4, 5):
        store.set_choice(f"r{i}@example.org", ChoiceUpdate(cadence="weekly"), "cli")


def _edition(store: Store, day: dt.date, edition: str = "daily", *, final: bool = True) -> None:
    """An edition as a send leaves it: the first reader's row failed (5xx), the rest sent."""
    store.record_publication(day, f"src-{day}", "sha", edition=edition)
    store.update_publication(day, edition=edition, email_status=EmailStatus.SENDING)
    store.queue_pending(day, edition=edition)
    entries = list(store.pending_for(day, edition=edition))
    store.mark_failed(entries[0].id, "550 5.1.1 no such user", final=True)
    recorder = store.sent_recorder()
    recorder.record((e.id, "250 OK", 1) for e in entries[1:])
    recorder.close()
    counts = store.ledger_counts(day, edition=edition)
    status = EmailStatus.SENT if final else EmailStatus.PARTIAL
    store.update_publication(
        day, edition=edition, email_status=status, sent=counts["sent"], failed=counts["failed"]
    )


def _bounces(store: Store) -> None:
    """A hard bounce and a complaint naming OLD (r1 and r2), received back then."""
    ids = {s.email: s.id for s in store.iter_subscribers()}
    events = [
        InboundEvent("r1@example.org", "hard", "5.1.1", "gone", ids["r1@example.org"], OLD),
        InboundEvent("r2@example.org", "complaint", "", "abuse", ids["r2@example.org"], OLD),
    ]
    store.record_inbound(
        sha256="a" * 64,
        source="test",
        raw=b"Subject: bounce\r\n\r\nraw bytes\r\n",
        summary="test",
        events=events,
        policy=BouncePolicy(),
        now=dt.datetime(2024, 5, 16, 8),
    )


@pytest.fixture
def store(tmp_path: Path, db_url: str) -> Store:
    cfg = write_config(tmp_path, None, db_url)
    with Store.open(cfg) as store:
        _readers(store)
        for day, final in ((OLD, True), (PARTIAL, False), (NEW, True)):
            _edition(store, day, final=final)
        _edition(store, OLD_WEEK, WEEKLY)
        _bounces(store)
        yield store


def _ledger_rows(store: Store) -> dict[tuple[str, dt.date], int]:
    q = sa.select(ledger.c.edition, ledger.c.digest_date, sa.func.count()).group_by(
        ledger.c.edition, ledger.c.digest_date
    )
    with store.engine.connect() as conn:
        return {(e, d): n for e, d, n in conn.execute(q)}


def _raw_sizes(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return [len(r) for r in conn.execute(sa.select(bounce_messages.c.raw)).scalars()]


def _numbers(cfg, store: Store) -> object:  # noqa: ANN001
    """Everything the status, the report and /metrics count of the sends."""
    counts = {
        (edition, day): store.ledger_counts(day, edition=edition)
        for edition, day in (("daily", OLD), ("daily", PARTIAL), ("daily", NEW), (WEEKLY, OLD_WEEK))
    }
    return counts, reporting.sends(store.engine, dt.date(2024, 1, 1), cfg.tz), metrics.read(store)


def test_compaction_folds_exactly_the_expired_editions_and_every_count_stays(
    tmp_path: Path, store: Store
) -> None:
    cfg = load_config(tmp_path / "config.toml")
    before, rows = _numbers(cfg, store), _ledger_rows(store)
    assert rows == {
        ("daily", OLD): 4,
        ("daily", PARTIAL): 4,
        ("daily", NEW): 4,
        (WEEKLY, OLD_WEEK): 2,
    }

    dry = compact(cfg, store, dry_run=True, now=NOW)
    assert [(e.edition, e.digest_date, e.rows, e.skipped != "") for e in dry.editions] == [
        ("daily", OLD, 4, False),
        ("daily", PARTIAL, 4, False),
        ("weekly", OLD_WEEK, 2, False),
    ]
    assert dry.rows == 10 and dry.raw_messages == 1 and dry.raw_bytes > 0
    assert "dry run: nothing changed" in dry.lines()
    assert _ledger_rows(store) == rows and _raw_sizes(store) == [dry.raw_bytes]
    from click.testing import CliRunner

    res = CliRunner().invoke(cli, ["compact", "--dry-run", "--config", str(cfg.path)])
    assert res.exit_code == 0, res.output
    assert f"would fold daily {OLD}: 4 ledger rows in 3 segment(s)" in res.output
    assert f"would fold daily {PARTIAL}: 4 ledger rows in 3 segment(s)" in res.output
    assert res.output.rstrip().endswith("dry run: nothing changed")
    assert _ledger_rows(store) == rows and _raw_sizes(store) == [dry.raw_bytes]

    report = compact(cfg, store, now=NOW)
    assert report.rows == 10
    assert _ledger_rows(store) == {("daily", NEW): 4}
    assert _numbers(cfg, store) == before  # status, report and /metrics: the same numbers
    with store.engine.connect() as conn:
        totals = {
            (r.edition, r.digest_date, r.topics, r.max_papers): (
                r.queued,
                r.sent,
                r.failed,
                r.nomatch,
                r.bounced,
                r.complained,
            )
            for r in conn.execute(sa.select(ledger_totals))
        }
        assert conn.execute(sa.select(sa.func.count()).select_from(bounce_events)).scalar() == 2
    assert totals == {
        # r0 failed (the first row), r3 sent; r1 (agents) hard-bounced, r2 (cap 3) complained.
        ("daily", OLD, "", 0): (0, 1, 1, 0, 0, 0),
        ("daily", OLD, "agents", 0): (0, 1, 0, 0, 1, 0),
        # The partial edition: the same rows, no bounce named its date.
        ("daily", PARTIAL, "", 0): (0, 1, 1, 0, 0, 0),
        ("daily", PARTIAL, "agents", 0): (0, 1, 0, 0, 0, 0),
        ("daily", PARTIAL, "", 3): (0, 1, 0, 0, 0, 0),
        ("daily", OLD, "", 3): (0, 1, 0, 0, 0, 1),
        ("weekly", OLD_WEEK, "", 0): (0, 1, 1, 0, 0, 0),
    }
    assert _raw_sizes(store) == [0]  # emptied; the events stay
    assert store.suppression_notes(["r1@example.org", "r2@example.org"])  # suppressions stay

    again = compact(cfg, store, now=NOW)
    assert again.rows == 0 and again.raw_messages == 0
    assert _numbers(cfg, store) == before


def test_an_edition_under_a_live_claim_or_being_sent_is_left_alone(
    tmp_path: Path, store: Store
) -> None:
    cfg = load_config(tmp_path / "config.toml")
    # PARTIAL is being sent again (`send --retry-failed`, before it has claimed a row).
    store.update_publication(PARTIAL, email_status=EmailStatus.SENDING)
    # OLD's failed row is taken again by a sender (--retry-failed): a live claim on it.
    assert store.claim(OLD, "sender-1", 10, 3600, retry_failed=True, include_final=True)
    report = compact(cfg, store, now=NOW)
    skipped = {e.digest_date: e.skipped for e in report.editions if e.skipped}
    assert skipped[OLD] == "a send holds a claim on its rows"
    assert skipped[PARTIAL] == "its email is being sent"
    assert _ledger_rows(store)[("daily", PARTIAL)] == 4
    assert _ledger_rows(store)[("daily", OLD)] == 4


def test_a_compacted_edition_is_never_sent_again(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBLISHER_SECRET", make_secret())
    cfg = load_config(tmp_path / "config.toml")
    compact(cfg, store, now=NOW)
    with pytest.raises(EditionCompacted, match="keep_ledger_days"):
        store.update_publication(OLD, email_status=EmailStatus.SENDING)
    from click.testing import CliRunner

    res = CliRunner().invoke(cli, ["send", "--config", str(cfg.path), "--digest", str(SAMPLE)])
    assert res.exit_code == 1
    assert isinstance(res.exception, EditionCompacted)
    assert "keep_ledger_days" in str(res.exception) and "\n" not in str(res.exception)
    assert _ledger_rows(store).get(("daily", OLD)) is None  # nobody queued again


def test_the_run_scheduler_compacts_in_its_daily_job(tmp_path: Path, store: Store) -> None:
    cfg = load_config(tmp_path / "config.toml")
    # keep_ledger_days 90 from today: every 2024 edition is expired, the partial one too.
    runner = Runner(cfg, secret=b"s" * 32)
    assert str(runner._compact_trigger(cfg).fields[5]) == "19"  # send_at 07:00 + 12 h
    ran = threading.Event()

    def done(event: JobExecutionEvent) -> None:
        if event.job_id == "compact":
            ran.set()

    runner.scheduler.add_listener(done, EVENT_JOB_EXECUTED)
    runner.start()
    try:
        assert ran.wait(60)
    finally:
        runner.shutdown()
    assert _ledger_rows(store) == {}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("[state]\nkeep_ledger_days = 6\n", "'state.keep_ledger_days' must be at least 7, not 6"),
        ('[state]\nkeep_ledger_days = "90"\n', "'state.keep_ledger_days' must be an integer"),
        (
            "[state]\nkeep_ledger_days = 10\n[schedule]\nmax_age_days = 10\n",
            "'state.keep_ledger_days' (10) must be more than 'schedule.max_age_days' (10)",
        ),
    ],
)
def test_a_bad_keep_ledger_days_is_a_config_error(tmp_path: Path, lines: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(lines)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(tmp_path / "config.toml")


def test_the_default_keeps_90_days(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    cfg = load_config(tmp_path / "config.toml")
    assert cfg.state.keep_ledger_days == 90
    assert dataclasses.replace(cfg.state, keep_ledger_days=7).keep_ledger_days == 7


def test_publisher_compact_during_a_publisher_send_mails_nobody_twice(
    tmp_path: Path, db_url: str
) -> None:
    """Real processes: `publisher send` holds its claims (the server keeps its first message
    at the end of DATA) while `publisher compact` folds 12,000 rows of old editions; the send
    ends with exit 0, every reader got the digest exactly once, the old counts are the same."""
    n = 600
    readers = [f"reader{i}@example.org" for i in range(n)]
    recorder = Recorder()
    recorder.hold = threading.Event()
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, db_url, connections=2)
        cfg.subscribers.file.write_text("email,name\n" + "".join(f"{e},R\n" for e in readers))
        old = [OLD - dt.timedelta(days=30 + i) for i in range(20)]
        with Store.open(cfg) as store:
            import_csv(cfg, store)
            for day in old:
                store.record_publication(day, f"src-{day}", "sha")
                store.queue_pending(day)
                with store.engine.begin() as conn:
                    conn.execute(
                        ledger.update().where(ledger.c.digest_date == day).values(status="sent")
                    )
                store.update_publication(day, email_status=EmailStatus.SENT, sent=n)
            before = {day: store.ledger_counts(day) for day in old}
        env = {**os.environ, "PUBLISHER_SECRET": make_secret()}
        command = [sys.executable, "-m", "publisher.cli"]
        send = subprocess.Popen(
            [*command, "send", "--config", str(cfg.path), "--digest", str(SAMPLE)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert recorder.held.wait(60), "the send never reached the server"
            folded = subprocess.run(
                [*command, "compact", "--config", str(cfg.path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            recorder.hold.set()
        out, err = send.communicate(timeout=300)
        assert folded.returncode == 0, folded.stderr
        assert f"{len(old)} edition(s)" in folded.stdout
        assert f"{len(old) * n:,} ledger rows were folded" in folded.stdout
        assert send.returncode == 0, err
        assert "Traceback" not in err
    finally:
        server.stop()
    received = recorder.received()
    assert set(received) == set(readers) and set(received.values()) == {1}
    with Store.open(cfg) as store:
        assert {day: store.ledger_counts(day) for day in old} == before
        assert store.ledger_counts(OLD)["sent"] == n  # the digest being sent: untouched


@pytest.mark.parametrize(("keep", "max_age"), [(7, 0), (7, 6), (90, 2), (90, 89)])
def test_run_never_sends_an_expired_edition(tmp_path: Path, keep: int, max_age: int) -> None:
    """keep_ledger_days > max_age_days (a config error otherwise): every daily digest and
    weekly edition old enough to be compacted is one `publisher run` does not send by itself."""
    from publisher.editions import Week
    from publisher.policy import email_due, expired, weekly_due

    (tmp_path / "config.toml").write_text(
        f"[state]\nkeep_ledger_days = {keep}\n[schedule]\nmax_age_days = {max_age}\n"
        'weekly_day = "sun"\n'
    )
    cfg = load_config(tmp_path / "config.toml")
    now = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
    for back in range(keep - 3, keep + 30):
        day = now.date() - dt.timedelta(days=back)
        if expired(cfg, "daily", day, now):
            assert not email_due(cfg, day, now, now).due
        week = Week.of(day)
        if expired(cfg, "weekly", week.monday, now):
            assert not weekly_due(cfg, week, now).due
    assert expired(cfg, "daily", now.date() - dt.timedelta(days=keep + 1), now)
    assert not expired(cfg, "daily", now.date() - dt.timedelta(days=keep), now)


def _partitions(store: Store) -> list[str]:
    """The ledger's monthly partitions (PostgreSQL; none on SQLite)."""
    if store.engine.dialect.name != "postgresql":
        return []
    with store.engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'ledger'::regclass"
                )
            ).scalars()
        )


LATER = dt.datetime(2024, 9, 20, 12, tzinfo=dt.UTC)  # every May edition expired, August kept


def test_a_wholly_expired_month_is_folded_and_its_partition_dropped(
    tmp_path: Path, store: Store
) -> None:
    """On PostgreSQL the ledger is partitioned by month: a month whose every edition has
    expired is folded in one pass and its partition dropped (no row deleted one by one); its
    counts stay. On SQLite the same rows are folded by batches; the numbers are the same."""
    cfg = load_config(tmp_path / "config.toml")
    before = _numbers(cfg, store)
    pg = store.engine.dialect.name == "postgresql"
    assert _partitions(store) == (["ledger_y2024m05", "ledger_y2024m08"] if pg else [])

    report = compact(cfg, store, now=LATER)

    assert report.rows == 10 and not [e for e in report.editions if e.skipped]
    assert report.partitions == (["ledger_y2024m05"] if pg else [])
    assert _partitions(store) == (["ledger_y2024m08"] if pg else [])
    assert _ledger_rows(store) == {("daily", NEW): 4}
    assert _numbers(cfg, store) == before
    if pg:
        assert "dropped the ledger's partitions ledger_y2024m05" in report.lines()
    # a new month gets its partition when its first edition is queued
    _edition(store, dt.date(2024, 10, 1))
    assert _partitions(store) == (["ledger_y2024m08", "ledger_y2024m10"] if pg else [])


def test_a_month_with_an_edition_being_sent_keeps_its_partition(
    tmp_path: Path, store: Store
) -> None:
    """One edition of the month is being sent: the month is not dropped; its other expired
    editions are folded by batches, the one being sent is left alone with its rows."""
    cfg = load_config(tmp_path / "config.toml")
    store.update_publication(PARTIAL, email_status=EmailStatus.SENDING)
    pg = store.engine.dialect.name == "postgresql"

    report = compact(cfg, store, now=LATER)

    assert report.partitions == []
    assert _partitions(store) == (["ledger_y2024m05", "ledger_y2024m08"] if pg else [])
    assert [(e.digest_date, e.skipped) for e in report.editions if e.skipped] == [
        (PARTIAL, "its email is being sent")
    ]
    assert _ledger_rows(store) == {("daily", PARTIAL): 4, ("daily", NEW): 4}


def test_senders_queueing_a_new_month_at_once_make_its_partition_once(
    tmp_path: Path, db_url: str
) -> None:
    """Eight senders queue the first edition of a month at the same moment: one makes the
    month's partition (PostgreSQL), the others find it; none fails. (Found by bench/scale.py's
    four senders: one died with DuplicateTable.)"""
    cfg = write_config(tmp_path, None, db_url)
    day = dt.date(2024, 11, 4)
    with Store.open(cfg) as store:
        _readers(store)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    added: list[int] = []

    def sender() -> None:
        try:
            with Store.open(cfg) as store:
                with store.engine.connect() as conn:  # connected before the race starts
                    conn.execute(sa.text("SELECT 1"))
                barrier.wait()
                added.append(store.queue_pending(day))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(added) == 4  # the four daily readers, queued once
    with Store.open(cfg) as store:
        assert "ledger_y2024m11" in _partitions(store) or store.engine.dialect.name == "sqlite"
