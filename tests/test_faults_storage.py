"""Storage faults, caused for real: a damaged SQLite file, a read-only state folder (a read-only
bind mount), a full disk under the state database and under the Maildir outbox (a small tmpfs),
an unreachable PostgreSQL server. Each ends in one line naming the file and what to do, a
non-zero exit, and a state the next run completes: nobody missing, nobody mailed twice but the
messages in flight.

Mounting needs root (CI runs as root); without it those tests skip and say so."""

from __future__ import annotations

import mailbox
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .deliveryhelpers import SAMPLE
from .net import free_port

SECRET = "gZIlGIcxRCoFkrc6iztO8B2urlwz9ZpEebazRyrf5OM"


def project(tmp: Path, n: int, state: str = "state/publisher.sqlite3", outbox: str = "outbox"):
    (tmp / "subs.csv").write_text(
        "email,name\n" + "".join(f"r{i}@example.com,R {i}\n" for i in range(n))
    )
    (tmp / "config.toml").write_text(
        f'[digests]\ninbox = "{SAMPLE.parent.parent.parent}"\n'
        '[subscribers]\nfile = "subs.csv"\n'
        f'[smtp]\noutbox = "{outbox}"\n'
        f'[state]\ndatabase = "{state}"\n'
    )
    return tmp / "config.toml"


def publisher(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PUBLISHER_SECRET": SECRET},
    )


def send(config: Path) -> subprocess.CompletedProcess[str]:
    return publisher(config, "send", "--digest", str(SAMPLE))


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def delivered(outbox: Path) -> Counter[str]:
    box = mailbox.Maildir(str(outbox), create=False)
    return Counter(msg["To"].split("<")[-1].rstrip(">") for msg in box)


def _mount(args: list[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs or a read-only bind needs root (CI runs as root)")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount refused here: {done.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs at tmp_path/small (grown later by the test)."""
    where = tmp_path / "small"
    where.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)])
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def grow(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=256m", str(where)], check=True)


def test_a_damaged_database_refuses_to_send_and_status_says_so(tmp_path: Path) -> None:
    config = project(tmp_path, 3000)
    assert publisher(config, "subscribers", "import").returncode == 0
    db = tmp_path / "state" / "publisher.sqlite3"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    pages = [
        r[0]
        for r in con.execute(
            "SELECT pageno FROM dbstat WHERE name = 'ix_subscribers_status' AND pagetype = 'leaf'"
        )
    ]
    con.close()
    assert pages
    with db.open("r+b") as fh:  # garble one page of the subscriber-status index
        fh.seek((pages[len(pages) // 2] - 1) * page_size + 100)
        fh.write(os.urandom(page_size - 200))
    one_line_error(send(config), str(db), "damaged", "nothing was sent")
    assert not (tmp_path / "outbox").exists() or not delivered(tmp_path / "outbox")
    one_line_error(publisher(config, "status"), str(db), "damaged")


def test_a_read_only_state_folder_is_one_line(tmp_path: Path) -> None:
    config = project(tmp_path, 20)
    assert publisher(config, "subscribers", "import").returncode == 0
    state = tmp_path / "state"
    _mount(["--bind", str(state), str(state)])
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(state)], check=True)
        line = one_line_error(send(config), str(state / "publisher.sqlite3"))
        assert "writable" in line
        one_line_error(publisher(config, "status"), str(state / "publisher.sqlite3"))
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert send(config).returncode == 0  # writable again: the send completes
    assert set(delivered(tmp_path / "outbox")) == {f"r{i}@example.com" for i in range(20)}


def test_a_full_disk_under_the_database_then_freed_resumes_the_send(
    tmp_path: Path, tmpfs: Path
) -> None:
    n = 3000
    config = project(tmp_path, n, state="small/publisher.sqlite3")
    first = send(config)
    line = one_line_error(first, str(tmpfs / "publisher.sqlite3"), "full")
    assert "run the same command again" in line
    grow(tmpfs)
    again = send(config)
    assert again.returncode == 0, again.stderr
    counts = delivered(tmp_path / "outbox")
    assert set(counts) == {f"r{i}@example.com" for i in range(n)}
    assert sum(counts.values()) - n <= 1  # one Maildir writer: at most its message in flight


def test_a_full_outbox_disk_then_freed_resumes_the_send(tmp_path: Path, tmpfs: Path) -> None:
    n = 600
    config = project(tmp_path, n, outbox="small/outbox")
    line = one_line_error(send(config), str(tmpfs / "outbox"), "Maildir outbox")
    assert "run the same command again" in line
    sent_before = len(delivered(tmpfs / "outbox"))
    assert 0 < sent_before < n
    grow(tmpfs)
    assert send(config).returncode == 0
    counts = delivered(tmpfs / "outbox")
    assert set(counts) == {f"r{i}@example.com" for i in range(n)}
    assert sum(counts.values()) - n <= 1


def test_an_unreachable_postgresql_server_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://publisher@127.0.0.1:{free_port()}/publisher"
    config = project(tmp_path, 3, state=url)
    line = one_line_error(publisher(config, "status"), "cannot use the PostgreSQL server")
    assert "127.0.0.1" in line


@pytest.mark.parametrize("damage", ["header", "truncated"])
def test_a_file_that_is_no_longer_a_database_is_one_line(tmp_path: Path, damage: str) -> None:
    config = project(tmp_path, 500)
    assert publisher(config, "subscribers", "import").returncode == 0
    db = tmp_path / "state" / "publisher.sqlite3"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = db.read_bytes()
    if damage == "header":
        db.write_bytes(b"\0" * 100 + data[100:])  # the 100-byte header zeroed
    else:
        db.write_bytes(data[: len(data) // 3])  # the last two thirds of the file gone
    for command in (["send", "--digest", str(SAMPLE)], ["status"]):
        one_line_error(publisher(config, *command), str(db))
    assert not (tmp_path / "outbox").exists() or not delivered(tmp_path / "outbox")
