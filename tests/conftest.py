"""Shared fixtures. The real corpus lives in ../shared/corpus (present in CI); tests that need it
skip with a reason where it is absent (under CI=true they fail: tests/requires.py). Format
variations are written inline in the tests that need them; tests/fixtures holds the DKIM test
key and state databases made by release 0.1.0 (tests/test_state_upgrade.py).

State-database fixtures: `db_url` (parametrized: each test runs on "sqlite" and "postgresql",
with a fresh database already migrated to the head revision: a copy of a template the session
migrates once), `empty_db_url` (the same, with no tables), `pg_url` (PostgreSQL only, empty) and
the session's `pg_cluster`.

The tiers (`postgresql`, `subprocess`, `browser`, `mta`, `corpus`, and `slow` for any of them)
are inferred for every test by tests/tiers.py, from here (`pytest_collection_modifyitems`)."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from publisher.state import Store

from . import tiers
from .browser import chromium
from .pg import Cluster
from .requires import CORPUS, ROOT, requires

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shipped_copy(dest: Path) -> Path:
    """The shipped config.toml with its sample digests and subscriber list, copied to `dest`
    (relative paths resolve there), so a command under test never writes into the checkout.
    Returns the copied config's path."""
    for name in ("digests", "subscribers"):
        shutil.copytree(ROOT / name, dest / name)
    shutil.copy2(ROOT / "config.toml", dest / "config.toml")
    return dest / "config.toml"


def run_publisher(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`publisher ARGS` as a user runs it: `publisher.cli.main` (the installed entry point, whose
    error handling turns a PublisherError into one `error: ...` line and exit 1) in a subprocess,
    stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line a failed command printed on stderr (exit 1, no traceback);
    fails the test otherwise."""
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def corpus_files() -> list[Path]:
    return sorted(CORPUS.rglob("*.md")) if CORPUS.is_dir() else []


def corpus_date(path: Path) -> dt.date:
    """The day a corpus file is for, from its path (YYYY/MM/DD.md)."""
    return dt.date(*map(int, path.relative_to(CORPUS).with_suffix("").parts))


_HEADING_ID = re.compile(r"arxiv\.org/abs/([0-9.]+)\)\s*$")


def paper_ids(text: str) -> list[str]:
    """Distinct arXiv ids of the `### [` headings, in order: the count a digest must yield
    (read from the text, not through the parser under test)."""
    ids = [
        m.group(1)
        for line in text.splitlines()
        if line.startswith("### [")
        if (m := _HEADING_ID.search(line))
    ]
    return list(dict.fromkeys(ids))


def largest_corpus_digest() -> Path:
    """The corpus file with the most papers (the earliest such day on a tie)."""
    files = corpus_files()
    assert files, f"corpus not found at {CORPUS}"
    return max(files, key=lambda p: len(paper_ids(p.read_text(encoding="utf-8"))))


# Skips without the corpus, except under CI=true, where the corpus is promised: there the
# tests fail rather than pass by skipping (tests/requires.py).
needs_corpus = pytest.mark.requires("corpus")


@pytest.fixture
def corpus() -> Path:
    """The whole corpus (all 260 days): a `corpus` test."""
    return Path(requires("corpus"))


@pytest.fixture(autouse=True)
def own_cache_folder(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test (and every command it runs) has a cache folder of its own, empty
    (publisher/caches.py): no test finds the CSS inlining or a compiled template of another,
    and none writes into the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.requires("tool", ...)`: skip, or fail under CI=true, when one is missing."""
    for mark in item.iter_markers("requires"):
        for tool in mark.args:
            requires(tool)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiers.apply(items, CORPUS)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright (tests/browser.py), one per module."""
    requires("chromium")
    requires("playwright")
    with chromium() as b:
        yield b


# ---------------------------------------------------------------------------------------------
# The state database: every test that touches it runs on SQLite and on a real PostgreSQL that
# the session starts itself (tests/pg.py). `pytest -m "not postgresql"` leaves PostgreSQL out.

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the session, started on first use. Without
    PostgreSQL installed the tests using it skip, except under CI=true where they fail."""
    cluster = Cluster(Path(requires("postgresql")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (dropped after the test), as a SQLAlchemy URL."""
    name = pg_cluster.create_database()
    try:
        yield pg_cluster.url(name)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state database (no tables), once per backend: for the tests of what the
    library does to an empty or an old database (migrations)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/publisher.sqlite3"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite state database the session migrates once; `db_url` copies the file."""
    path = tmp_path_factory.mktemp("template") / "publisher.sqlite3"
    Store(f"sqlite:///{path}").close()
    # Everything into the main file (closing the last connection removes the WAL): one file
    # to copy.
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(scope="session")
def pg_template(pg_cluster: Cluster) -> str:
    """A PostgreSQL database the session migrates once; `db_url` creates each test's database
    from it (CREATE DATABASE ... TEMPLATE, a file copy), with no connection left open to it."""
    name = pg_cluster.create_database()
    Store(pg_cluster.url(name)).close()
    return name


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh state database at the head revision, once per backend: a copy of the session's
    migrated template, as a SQLite file under tmp_path or a new database on the session's
    PostgreSQL (dropped after the test). Build a config with `tests.pg.config_for` (or put it
    in a config.toml with `tests.pg.state_toml`). For an empty one: `empty_db_url`."""
    if request.param == "sqlite":
        path = tmp_path / "state" / "publisher.sqlite3"
        path.parent.mkdir()
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        path.parent.chmod(0o700)  # as publisher makes them: a 0644 copy would be warned about
        path.chmod(0o600)
        yield f"sqlite:///{path}"
        return
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    name = cluster.create_database(template=request.getfixturevalue("pg_template"))
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)
