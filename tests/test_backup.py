"""Backups and restores as the README gives them: `publisher db backup` of a SQLite database
while `publisher run` is live, and pg_dump / pg_restore of a PostgreSQL one. A restored database
remembers who got what: sending the same digest again from it mails nobody."""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import sqlalchemy as sa

from publisher.state.health import describe

from .conftest import one_error_line, run_publisher
from .pg import Cluster, state_toml
from .sitehelpers import write_digest

SECRET = base64.b64encode(os.urandom(32)).decode()
DAY = dt.date(2024, 5, 15)


def project(tmp: Path, database: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "subs.csv").write_text(
        "email,name\nada@example.com,Ada\nalan@example.com,Alan\ngrace@example.com,Grace\n"
    )
    write_digest(tmp / "inbox", DAY)
    (tmp / "config.toml").write_text(
        f"""
[digests]
inbox = "inbox"
[feed]
search = false
[smtp]
outbox = "outbox"
[subscribers]
file = "subs.csv"
[schedule]
poll_seconds = 0.5
{state_toml(database)}
"""
    )
    return tmp / "config.toml"


def publisher(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PUBLISHER_SECRET": SECRET}
    return run_publisher(*args, "--config", str(cfg), cwd=cfg.parent, env=env)


def send(cfg: Path) -> int:
    """`publisher send` of the digest; how many messages the project's outbox then holds."""
    r = publisher(cfg, "send", "--digest", str(cfg.parent / "inbox/2024/05/15.md"))
    assert r.returncode == 0, r.stdout + r.stderr
    return len(list((cfg.parent / "outbox" / "new").glob("*")))


def test_a_sqlite_backup_taken_while_run_is_live_restores(tmp_path: Path) -> None:
    live = project(tmp_path / "live", "state/publisher.sqlite3")
    assert send(live) == 3
    run = subprocess.Popen(
        [sys.executable, "-m", "publisher.cli", "run", "--config", str(live)],
        env={**os.environ, "PUBLISHER_SECRET": SECRET},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        built = live.parent / "public" / "index.html"
        deadline = time.monotonic() + 60  # a hang guard: until run's first tick has built
        while not built.is_file():
            assert run.poll() is None and time.monotonic() < deadline, "run did not tick"
            time.sleep(0.05)
        copy = tmp_path / "backups" / "publisher.sqlite3"
        copy.parent.mkdir()
        r = publisher(live, "db", "backup", str(copy))
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("backed up ") and str(copy) in r.stdout
    finally:
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600  # it holds every address
    assert not list(copy.parent.glob(".*partial"))

    # Restore on another machine: the copy becomes its database. Nobody is mailed again.
    restored = project(tmp_path / "restored", str(copy))
    assert send(restored) == 0
    listed = publisher(restored, "subscribers", "list", "--counts")
    assert "active" in listed.stdout and "3" in listed.stdout, listed.stdout

    itself = tmp_path / "live/state/publisher.sqlite3"
    line = one_error_line(publisher(live, "db", "backup", str(itself)))
    assert "cannot replace the database itself" in line


def test_a_postgresql_dump_restores_with_the_readme_recipe(
    tmp_path: Path, pg_cluster: Cluster, pg_url: str
) -> None:
    live = project(tmp_path / "live", pg_url)
    assert send(live) == 3
    dump = tmp_path / "publisher.dump"
    name = pg_url.rsplit("/", 1)[1]
    where = ["-h", "127.0.0.1", "-p", str(pg_cluster.port), "-U", pg_cluster.user]
    subprocess.run([pg_cluster.bindir / "pg_dump", *where, "-Fc", "-f", dump, name], check=True)
    fresh = pg_cluster.create_database()
    try:
        subprocess.run(
            [pg_cluster.bindir / "pg_restore", *where, "--no-owner", "-d", fresh, dump],
            check=True,
        )
        restored = project(tmp_path / "restored", pg_cluster.url(fresh))
        assert send(restored) == 0
        engine = sa.create_engine(pg_cluster.url(fresh))
        with engine.connect() as conn:
            sent = conn.execute(sa.text("SELECT count(*) FROM ledger WHERE status='sent'"))
            assert sent.scalar_one() == 3
        engine.dispose()
    finally:
        pg_cluster.drop_database(fresh)
    assert "pg_dump" in one_error_line(publisher(live, "db", "backup", str(tmp_path / "x")))


def test_a_missing_postgresql_password_says_where_it_goes() -> None:
    exc = psycopg.OperationalError(
        'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
        "fe_sendauth: no password supplied"
    )
    line = describe(sa.make_url("postgresql+psycopg://publisher@db.example.org/publisher"), exc)
    assert line is not None
    assert "no password supplied" in line and "~/.pgpass" in line and "mode 600" in line


def test_backing_up_nothing_is_one_line(tmp_path: Path) -> None:
    cfg = project(tmp_path, "state/missing.sqlite3")
    line = one_error_line(publisher(cfg, "db", "backup", str(tmp_path / "copy.sqlite3")))
    assert "no state database here" in line
