"""Soak: `publisher run` as a real process through four weeks of simulated days.

The run's wall clock is time-machine's, driven from a file by tests/fakeclock.py (which says
why not libfaketime): the test rewrites the file to jump to the next moment of the schedule
(06:00 arrivals, the 07:00 send, the 09:00 `expect_by`, the retries), and the clock runs at real
speed in between. Everything else is real: a bare git upstream the run pulls from, an aiosmtpd
server on loopback, the state database (SQLite, or the session's PostgreSQL).

What happens in the month: a digest arrives most mornings at 06:00 KST; three days have none and
one arrives at 10:00, after `expect_by`; one day is edited after its email went out; the
upstream is force-pushed once; the SMTP server is down for three hours one morning; a 4xx storm
defers every reader one day; one reader's mailbox is full every day (452 forever); the run is
restarted every week; on PostgreSQL the database refuses connections for an hour one morning.

At the end: every digest is in the feeds, every reader got each digest exactly once, the full
mailbox's digests all ended `final` after the configured retries, every missing or late day
raised exactly one alert mail, and the build job was never skipped for more than one poll in a
row.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import sqlalchemy as sa

from .conftest import ROOT
from .pg import Cluster, state_toml
from .sitehelpers import digest_text
from .smtp_server import Recorder, start_server
from .upstream import Upstream, git

KST = ZoneInfo("Asia/Seoul")
SECRET = base64.b64encode(os.urandom(32)).decode()
READERS = [f"{n}@example.com" for n in ("ada", "alan", "grace", "edsger", "barbara")]
FULL = "full@example.com"  # 452 4.2.2 to every RCPT, every day
OPS = "ops@example.org"
DAYS = 28
MISSING = {5, 12, 19}
LATE = 8  # arrives at 10:00, after expect_by: sent the next morning
EDIT = 4  # at 06:00 the previous day's digest is edited, after its email went out
FORCE_PUSH = 15
OUTAGE = 10  # the SMTP server is down 06:30 to 09:30
STORM = 17  # every reader's first two DATA get 451
DB_DOWN = 23  # PostgreSQL only: connections refused 06:30 to 08:00
RESTARTS = {7, 14, 21}


class World:
    """The project, the upstream, the SMTP server, the clock and the run process."""

    def __init__(self, tmp: Path, db_url: str, start: dt.date) -> None:
        self.tmp, self.db_url, self.start = tmp, db_url, start
        self.upstream = Upstream(tmp)
        self.work = self.upstream.work
        (self.work / "README.md").write_text("# daily papers\n")
        self.push("start")
        self.recorder = Recorder()
        self.recorder.full_mailbox.add(FULL)
        self.controller = start_server(self.recorder)
        self.port = self.controller.port
        (tmp / "subs.csv").write_text("email,name\n" + "".join(f"{r},\n" for r in READERS + [FULL]))
        (tmp / "config.toml").write_text(
            f"""
[site]
base_url = "https://papers.example.org/"
timezone = "Asia/Seoul"
[digests]
inbox = "upstream"
git = "{self.upstream.url}"
git_path = "paper_logs"
[feed]
output = "public"
search = false
max_items = 60
[email]
from = "Daily Papers <papers@papers.example.org>"
[smtp]
host = "127.0.0.1"
port = {self.port}
security = "none"
connections = 2
max_attempts = 2
retry_base_seconds = 0.01
timeout = 10
[subscribers]
file = "subs.csv"
[schedule]
send_at = "07:00"
expect_by = "09:00"
poll_seconds = 0.5
retry_failed_times = 2
retry_failed_hours = 0.5
[alerts]
email = "{OPS}"
{state_toml(db_url)}
"""
        )
        self.cfg = tmp / "config.toml"
        self.clock_file = tmp / "clock"
        self.log = tmp / "run.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # pre_ping: after the PostgreSQL outage, a pooled connection is found dead, not used.
        self.engine = sa.create_engine(db_url, pool_pre_ping=True)
        self.now = dt.datetime.combine(start, dt.time(4, 0), KST)

    # -- the upstream --------------------------------------------------------------------------

    def push(self, message: str, *, force: bool = False) -> None:
        self.upstream.push(message, force=force)

    def day(self, n: int) -> dt.date:
        return self.start + dt.timedelta(days=n)

    def publish(self, n: int, papers: int = 3) -> None:
        self.upstream.day(self.day(n), digest_text(self.day(n), n=papers))
        self.push(f"day {n}")

    # -- the clock and the process ---------------------------------------------------------------

    def at(self, n: int, hour: int, minute: int = 0) -> None:
        """Move the run's clock to day n, HH:MM in Seoul (never backwards)."""
        moment = dt.datetime.combine(self.day(n), dt.time(hour, minute), KST)
        assert moment > self.now, (moment, self.now)
        self.now = moment
        tmp = self.clock_file.with_name("clock.tmp")
        tmp.write_text(moment.astimezone(dt.UTC).isoformat())
        tmp.replace(self.clock_file)  # whole, never half-written

    def start_run(self) -> None:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PUBLISHER_SECRET": SECRET, "PYTHONPATH": path}
        command = ["-m", "tests.fakeclock", str(self.clock_file), "run", "--config", str(self.cfg)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *command],
                cwd=self.tmp,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait("started (a first build)", self.ticked_since_jump)

    def stop_run(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.tail()
        self.proc = None

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])

    def wait(self, what: str, ready: Callable[[], bool], limit: float = 90) -> None:
        """Until `ready()`; a hang guard (real seconds), never a speed bound."""
        deadline = time.monotonic() + limit
        while True:
            try:
                if ready():
                    return
            except sa.exc.DBAPIError:
                pass  # no tables yet, the database down on purpose, or busy: ask again
            assert self.proc is not None and self.proc.poll() is None, f"run died\n{self.tail()}"
            if time.monotonic() > deadline:
                pytest.fail(f"day {self.now}: never {what}\n{self.tail()}")
            time.sleep(0.05)

    # -- what the database says ------------------------------------------------------------------

    def publication(self, n: int) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT * FROM publications WHERE digest_date = :d AND edition = 'daily'"),
                {"d": self.day(n)},
            ).first()
        return dict(row._mapping) if row else None

    def status(self, n: int) -> str | None:
        pub = self.publication(n)
        return pub["email_status"] if pub else None

    def ticked_since_jump(self) -> bool:
        with self.engine.connect() as conn:
            last = conn.execute(
                sa.text("SELECT value FROM meta WHERE key = 'run:last_tick'")
            ).scalar()
        return last is not None and dt.datetime.fromisoformat(last) >= self.now

    def log_count(self, needle: str) -> int:
        return self.log.read_text(errors="replace").count(needle)

    def alerts(self) -> list[str]:
        return [m["Subject"] for m in self.recorder.to(OPS)]


def settled(status: str | None) -> bool:
    return status in ("sent", "final")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_month_of_run(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgresql":
        db_url = request.getfixturevalue("pg_url")
        cluster: Cluster | None = request.getfixturevalue("pg_cluster")
    else:
        db_url, cluster = f"sqlite:///{tmp_path}/state/publisher.sqlite3", None
    # Four weeks from a Monday well before today: the run's clock is earlier than the real
    # one, so a digest's file (whose mtime the kernel takes from the real clock) "arrived" when
    # the run first saw it, as publisher/policy.py's `arrived` reads it.
    monday = dt.date.today() - dt.timedelta(days=60)
    start = monday - dt.timedelta(days=monday.weekday())
    w = World(tmp_path, db_url, start)
    sent_days: list[int] = []
    w.at(0, 5)
    w.start_run()
    try:
        for n in range(DAYS):
            if n in RESTARTS:
                w.at(n, 5)
                w.stop_run()
                w.start_run()
            if n == FORCE_PUSH:
                # Upstream rewrites its history (one commit, same files) and force-pushes.
                w.at(n, 5, 30)
                git(w.work, "reset", "-q", "--soft", git(w.work, "rev-list", "--max-parents=0",
                                                         "HEAD"))  # fmt: skip
                w.push("squashed", force=True)
                head = git(w.work, "rev-parse", "HEAD")
                w.wait("followed the force-push", lambda h=head: head_pulled(w, h))

            w.at(n, 6)
            if n == EDIT:
                w.publish(n - 1, papers=4)  # yesterday's digest, corrected upstream
            if n not in MISSING and n != LATE:
                w.publish(n)
                w.wait(f"built day {n}", lambda n=n: w.publication(n) is not None)
                sent_days.append(n)
            if n == EDIT:
                w.wait("saw the edit", lambda n=n: edited_seen(w, n - 1))

            due = [d for d in sent_days if not settled(w.status(d))]  # before any fault
            if n == OUTAGE:
                w.at(n, 6, 30)
                w.controller.stop()
            if n == DB_DOWN and cluster is not None:
                w.at(n, 6, 30)
                database_down(cluster, db_url, True)
            if n == STORM:
                for r in READERS:
                    w.recorder.defer_data[r] = 2  # = max_attempts: the send ends partial

            w.at(n, 7)
            if n == OUTAGE:
                before = w.log_count("send of ")
                w.wait("tried the send in the outage", lambda b=before: w.log_count("send of ") > b)
                due = []
            elif n == DB_DOWN and cluster is not None:
                before = w.log_count("cannot use the PostgreSQL server")
                w.wait(
                    "met the database down",
                    lambda b=before: w.log_count("cannot use the PostgreSQL server") > b + 1,
                )
                database_down(cluster, db_url, False)
                w.at(n, 8)
            for d in due:
                w.wait(f"sent day {d}", lambda d=d: w.status(d) in ("sent", "partial", "final"))

            if n == OUTAGE:
                w.controller = start_server(w.recorder, port=w.port)
                w.at(n, 9, 30)
                w.wait(
                    f"sent day {n} after the outage", lambda n=n: w.status(n) in ("partial", "sent")
                )
            else:
                w.at(n, 9)
                w.wait("ticked after 09:00", w.ticked_since_jump)
            if n in MISSING or n == LATE:
                day = w.day(n).isoformat()
                w.wait(f"alerted {day}", lambda day=day: any(day in s for s in w.alerts()))

            w.at(n, 10, 30)
            if n == LATE:
                w.publish(n)
                w.wait(f"built day {n}", lambda n=n: w.publication(n) is not None)
            settle(w, n, [d for d in sent_days[-3:]])
            if n == LATE:
                sent_days.append(n)  # emailed tomorrow at 07:00
        w.at(DAYS, 8)  # before that day's expect_by: its alert is not this month's
        w.wait("ticked", w.ticked_since_jump)
    finally:
        if w.proc is not None:
            w.stop_run()
        w.controller.stop()

    # Every digest is built and in the feeds.
    feed = json.loads((tmp_path / "public" / "feed.json").read_text())
    in_feed = {item["date_published"][:10] for item in feed["items"]}
    assert in_feed == {w.day(d).isoformat() for d in sent_days}

    # Every reader got each digest exactly once (the edited one too); the full mailbox nothing.
    got: Counter[tuple[str, str]] = Counter()
    for rcpt, raw in w.recorder.messages:
        if rcpt == OPS:
            continue
        subject = email.message_from_bytes(raw, policy=email.policy.default)["Subject"]
        got[(rcpt, re.search(r"\d{4}-\d{2}-\d{2}", subject).group(0))] += 1
    expected = {(r, w.day(d).isoformat()): 1 for r in READERS for d in sent_days}
    assert dict(got) == expected

    # The full mailbox: every digest's email ended final after the configured retries.
    with w.engine.connect() as conn:
        statuses = Counter(
            s
            for (s,) in conn.execute(
                sa.text("SELECT email_status FROM publications WHERE edition = 'daily'")
            )
        )
        # Nobody reads weekly here: each week's weekly edition went to no one, and ended sent.
        weekly = conn.execute(
            sa.text("SELECT email_status, sent FROM publications WHERE edition = 'weekly'")
        ).all()
        full_rows = conn.execute(
            sa.text(
                "SELECT l.status, count(*) FROM ledger l"
                " JOIN subscribers s ON s.id = l.subscriber_id"
                " WHERE s.email = :e GROUP BY l.status"
            ),
            {"e": FULL},
        ).all()
    assert statuses == {"final": len(sent_days)}
    assert weekly and all(row == ("sent", 0) for row in weekly), weekly
    assert dict(full_rows) == {"failed": len(sent_days)}

    # Each missing or late day raised one alert mail (late-digest), no more.
    late = Counter(
        re.search(r"late-digest (\S+)", s).group(1) for s in w.alerts() if "late-digest" in s
    )
    assert late == {w.day(d).isoformat(): 1 for d in sorted(MISSING | {LATE})}

    # No skipped tick was logged for more than one poll in a row: each run of skips of a job is
    # one "skipped" line, closed by its "N ticks skipped" line before the next (or by a
    # restart). N itself may exceed 1 at the clock's jumps, where APScheduler meets hours of
    # missed runs at once while a build (a pull, the site, the alert mail) is under way.
    for job in ("build", "send"):
        opened = False
        for line in w.log.read_text().splitlines():
            if f"{job} tick skipped:" in line:
                assert not opened, f"{job}: a second skip line in one run of skips: {line}"
                opened = True
            elif f"{job} tick: " in line and "ticks skipped" in line or "publisher run:" in line:
                opened = False
    assert "Traceback" not in w.log.read_text()


def settle(w: World, n: int, days: list[int]) -> None:
    """Move the clock on by the hour (from 10:30) until these days' emails are settled: each
    hour a partial send's failed rows are retried (`retry_failed_hours` is 0.5), and once they
    were retried `retry_failed_times` the email is final."""
    hour = 10
    while True:
        open_days = [d for d in days if not settled(w.status(d))]
        if not open_days:
            return
        hour += 1
        assert hour < 20, f"day {n}: {open_days} never settled\n{w.tail()}"
        before = {d: w.publication(d)["email_finished_at"] for d in open_days}
        w.at(n, hour, 30)
        for d in open_days:
            w.wait(
                f"retried day {d}",
                lambda d=d, before=before: (
                    settled(w.status(d)) or w.publication(d)["email_finished_at"] != before[d]
                ),
            )


def head_pulled(w: World, head: str) -> bool:
    with w.engine.connect() as conn:
        value = conn.execute(sa.text("SELECT value FROM meta WHERE key = 'run:pull'")).scalar()
    return value is not None and json.loads(value).get("head") == head


def edited_seen(w: World, n: int) -> bool:
    pub = w.publication(n)
    path = w.tmp / "public" / w.day(n).strftime("%Y/%m/%d") / "index.html"
    return pub is not None and path.is_file() and "Paper 4 of" in path.read_text()


def database_down(cluster: Cluster, db_url: str, down: bool) -> None:
    """PostgreSQL refuses the database's connections (and ends its sessions), or takes them
    again: an outage of the database as every process sees it."""
    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user=cluster.user, dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(not down).lower()}')
        if down:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
