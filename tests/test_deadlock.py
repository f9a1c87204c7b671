"""The deadlock that sent twice (issue 25): on PostgreSQL a sender's mark-sent batch
(`SentRecorder.record`, one transaction holding every row it marks) and its lease renewal
(`renew_claims`, on another connection) locked the same rows in different orders; PostgreSQL
killed one, and when it was the batch, messages the server had accepted lost their `sent` mark
and another sender mailed them again.

Here on real PostgreSQL connections: the two statements interleaved in the conflicting order,
a real deadlock whose victim is the mark-sent batch, a deadlock error injected into every
ledger transaction, and four real `publisher send` processes renewing their leases many times
into an SMTP server that counts every recipient."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from publisher.state import Store
from publisher.state import ledger as ledger_module
from publisher.state.health import StorageError
from publisher.state.schema import ledger, subscribers

from .pg import config_for
from .smtp_server import Recorder, start_server
from .test_concurrency import _csv, _send_cmd, _wait_all
from .test_delivery import DAY, write_config

OWNER = "host:1:owner"
HANG_GUARD = 60.0  # seconds: only a hung test waits this long


@pytest.fixture(autouse=True)
def _signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISHER_SECRET", "_lu6GxSjX3J5LfYEcLW_Qmn0XeO98oXeI-c1DBcTN7I")


@pytest.fixture
def store(tmp_path: Path, pg_url: str) -> Iterator[Store]:
    with Store.open(config_for(tmp_path, pg_url)) as s:
        yield s


def _claimed(store: Store, n: int) -> list[int]:
    """n ledger rows of DAY, claimed by OWNER for a minute; their ids, ascending."""
    now = dt.datetime(2026, 1, 1)
    with store._write() as conn:
        conn.execute(
            subscribers.insert(),
            [
                {"email": f"r{i}@example.com", "name": "N", "status": "active", "source": "csv"}
                | {"created_at": now, "updated_at": now, "hard_bounces": 0}
                for i in range(n)
            ],
        )
    assert store.queue_pending(DAY) == n
    ids = [e.id for e in store.claim(DAY, OWNER, n, 60)]
    assert len(ids) == n
    return ids


def _raw(pg_url: str) -> psycopg.Connection[Any]:
    """A psycopg connection of its own (not the store's pool), in a transaction."""
    return psycopg.connect(sa.make_url(pg_url).set(drivername="postgresql").render_as_string())


def _pid(conn: psycopg.Connection[Any]) -> int:
    return conn.info.backend_pid


def _run(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """fn() in a thread; its result or exception lands in the dict."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def _waiting_on_a_lock(admin: psycopg.Connection[Any], query_start: str) -> set[int]:
    """The backends whose current statement starts with `query_start` and waits for a lock."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        (query_start + "%",),
    ).fetchall()
    return {r[0] for r in rows}


def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition` (polled: it is the database's state, not an event of ours)."""
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


def test_a_renewal_never_waits_for_rows_a_mark_sent_batch_holds(store: Store, pg_url: str) -> None:
    """The cycle of the issue, in its order: the batch holds the last row, the renewal takes the
    first rows and wants the last, then the batch wants the first. Before the fix the renewal
    waited for the batch, which then waited for the renewal: a deadlock."""
    first, middle, last = _claimed(store, 3)
    before = {r["id"]: r["lease_until"] for r in _rows(store)}
    batch = _raw(pg_url)
    admin = _raw(pg_url)
    admin.autocommit = True
    try:
        # The mark-sent batch, its rows out of id order: it holds the last row...
        batch.execute("UPDATE ledger SET status = 'sent' WHERE id = %s", (last,))
        # ...while the renewal runs on the store's own connection.
        renewal, out = _run(lambda: store.renew_claims(OWNER, [first, middle, last], 60))
        _until(
            lambda: not renewal.is_alive() or _waiting_on_a_lock(admin, "UPDATE ledger SET lease"),
            "the renewal to finish or to wait for a lock",
        )
        assert not renewal.is_alive(), "the renewal waits for a row the mark-sent batch holds"
        assert "error" not in out, out
        assert out["result"] == 2  # the row being marked sent is skipped, the others renewed
        # Then the batch takes the first row: nothing holds it any more.
        batch.execute("UPDATE ledger SET status = 'sent' WHERE id = %s", (first,))
        batch.commit()
    finally:
        batch.close()
        admin.close()
    after = {r["id"]: r for r in _rows(store)}
    assert after[middle]["lease_until"] > before[middle]
    assert after[last]["lease_until"] == before[last]
    assert after[first]["status"] == after[last]["status"] == "sent"


def test_a_mark_sent_batch_chosen_as_a_deadlock_victim_runs_again_and_keeps_every_mark(
    store: Store, pg_url: str
) -> None:
    """A real deadlock, with the batch as PostgreSQL's victim (its deadlock_timeout runs out
    first): the batch is run again once the other transaction ends, and every row it marks is
    `sent` once, its attempts counted once."""
    first, middle, last = _claimed(store, 3)
    other = _raw(pg_url)
    admin = _raw(pg_url)
    admin.autocommit = True
    recorder = store.sent_recorder()
    try:
        # The other transaction checks for deadlocks only after a minute: the batch, which waits
        # first, finds the cycle and is the one rolled back.
        other.execute("SET deadlock_timeout = '60s'")
        other.execute("UPDATE ledger SET last_reply = 'other' WHERE id = %s", (middle,))
        marking, out = _run(
            lambda: recorder.record([(last, "250 c", 1), (first, "250 a", 1), (middle, "250 b", 1)])
        )
        _until(
            lambda: (
                _pid(recorder.conn.dbapi_connection)  # type: ignore[arg-type]
                in _waiting_on_a_lock(admin, "UPDATE ledger SET status")
            ),
            "the batch to wait for the middle row",
        )
        # The batch holds the first row and waits for the middle one: this closes the cycle.
        other.execute("UPDATE ledger SET last_reply = 'other' WHERE id = %s", (first,))
        other.commit()
        marking.join(HANG_GUARD)
        assert not marking.is_alive()
        assert "error" not in out, repr(out.get("error"))
    finally:
        recorder.close()
        other.close()
        admin.close()
    rows = {r["id"]: r for r in _rows(store)}
    assert [rows[i]["status"] for i in (first, middle, last)] == ["sent"] * 3
    assert [rows[i]["attempts"] for i in (first, middle, last)] == [1, 1, 1]
    assert [rows[i]["last_reply"] for i in (first, middle, last)] == ["250 a", "250 b", "250 c"]


INJECT = """
CREATE SEQUENCE conflict_seq;
CREATE FUNCTION conflict_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A sequence is not rolled back with the transaction: only the first statement fails.
    IF nextval('conflict_seq') <= current_setting('test.failures')::int THEN
        RAISE EXCEPTION 'injected' USING ERRCODE = '40P01';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER conflict_once BEFORE INSERT OR UPDATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION conflict_once();
"""


@pytest.mark.parametrize("code", ["40P01", "40001"])
def test_every_ledger_write_is_retried_after_a_deadlock_or_serialization_failure(
    store: Store, pg_url: str, code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "CONFLICT_PAUSE", 0.0)
    ids = _claimed(store, 4)
    admin = _raw(pg_url)
    admin.autocommit = True
    dbname = sa.make_url(pg_url).database
    admin.execute(INJECT.replace("40P01", code))
    admin.execute(f'ALTER DATABASE "{dbname}" SET test.failures = 1')
    store.engine.dispose()  # new sessions read the setting

    def once(call: Callable[[], Any]) -> Any:
        admin.execute("SELECT setval('conflict_seq', 1, false)")
        result = call()
        assert admin.execute("SELECT last_value FROM conflict_seq").fetchone() == (2,)
        return result

    try:
        recorder = store.sent_recorder()
        try:
            once(lambda: recorder.record([(ids[0], "250 ok", 1)]))
        finally:
            recorder.close()
        assert once(lambda: store.renew_claims(OWNER, ids, 60)) == 3
        assert once(lambda: store.mark_failed(ids[1], "451 later", final=False, owner=OWNER))
        assert once(lambda: store.release_claims(OWNER, [ids[2]])) == 1
        assert once(lambda: store.expire_claims(DAY, OWNER)) == 2  # the failed one too
        assert [e.id for e in once(lambda: store.claim(DAY, OWNER, 10, 60))] == [ids[2], ids[3]]
        once(lambda: store.queue_pending(DAY + dt.timedelta(days=1)))
        rows = {r["id"]: r for r in _rows(store)}
        assert rows[ids[0]]["status"] == "sent" and rows[ids[0]]["attempts"] == 1
        assert rows[ids[1]]["status"] == "failed" and rows[ids[1]]["attempts"] == 1

        # A conflict every time: a bounded number of attempts, then one clear error.
        admin.execute(f'ALTER DATABASE "{dbname}" SET test.failures = 1000000')
        store.engine.dispose()
        with pytest.raises(StorageError, match="conflict with another transaction"):
            store.renew_claims(OWNER, ids, 60)
    finally:
        admin.close()


def _rows(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(ledger).order_by(ledger.c.id))]


# A slowed database, as one busy with a million readers is: a row whose lease alone moves (a
# renewal) and a row marked sent each take 2 ms more. A renewal of a sender's ~100 open rows then
# lasts about 0.2 s instead of a few ms, and a batch of sent marks holds its first row a while
# before it takes the next: the window of the deadlock, wide enough to hit within seconds. The
# code before the fix, at 6,000 readers: 2 runs of 3 had a sender die of it (exit 1) and mailed
# 3 and 6 readers twice; at 4,000, 4 runs of 5 showed it. At full speed: 0 of 3 at 3,000.
SLOW_LEDGER = """
CREATE FUNCTION slow_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.lease_until IS DISTINCT FROM OLD.lease_until AND NEW.status = OLD.status
       AND NEW.claimed_by IS NOT DISTINCT FROM OLD.claimed_by THEN
        PERFORM pg_sleep(0.002);
    ELSIF NEW.status = 'sent' AND OLD.status <> 'sent' THEN
        PERFORM pg_sleep(0.002);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER slow_ledger BEFORE UPDATE ON ledger
    FOR EACH ROW EXECUTE FUNCTION slow_ledger();
"""


def test_four_senders_renewing_leases_while_they_send_mail_each_reader_once(
    tmp_path: Path, pg_url: str
) -> None:
    """The issue's reproduction at test size: four `publisher send` processes on one
    PostgreSQL database (SLOW_LEDGER), each renewing its lease while it sends (2 s, renewed
    about every 0.75 s: about 22 times each in a 39 s run), into a server that counts each
    recipient. Before the fix a sender died of DeadlockDetected within seconds. The lease is
    long enough that a late renewal on a busy machine does not hand rows over while they are
    being sent (which would be a duplicate of another kind)."""
    n = 6000
    recorder = Recorder()
    recorder.pipelining = True
    server = start_server(recorder)
    try:
        cfg = write_config(tmp_path, server.port, pg_url, connections=3)
        text = cfg.path.read_text().replace("[state]\n", "[state]\nlease_seconds = 2\n")
        cfg.path.write_text(text)
        emails = [f"r{i}@example.com" for i in range(n)]
        _csv(cfg.subscribers.file, emails)
        with Store.open(cfg):  # the tables, for the trigger
            pass
        with _raw(pg_url) as conn:
            conn.execute(SLOW_LEDGER)
        procs = [
            subprocess.Popen(_send_cmd(cfg.path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(4)
        ]
        outs = _wait_all(procs)
        for proc, out in zip(procs, outs, strict=True):
            assert "DeadlockDetected" not in out and "Traceback" not in out, out
            assert proc.returncode == 0, out
        counts = recorder.received()
        assert set(counts) == set(emails)
        twice = [e for e, c in counts.items() if c > 1]
        assert not twice, f"{len(twice)} readers mailed more than once: {twice[:5]}"
        with Store.open(cfg) as store:
            assert store.ledger_counts(DAY) == {"queued": 0, "sent": n, "failed": 0}
    finally:
        server.stop()
