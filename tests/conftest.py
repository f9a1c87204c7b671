"""Shared fixtures. The real corpus lives in ../shared/corpus (present in CI); tests that need it
skip with a reason where it is absent, and tests/fixtures covers every format variation.

State-database fixtures: `db_url` (parametrized: each test runs on "sqlite" and "postgresql",
with a fresh empty database), `pg_url` (PostgreSQL only) and the session's `pg_cluster`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .pg import INSTALL_HINT, Cluster, find_bindir

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "daily_papers_ko"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def corpus_files() -> list[Path]:
    return sorted(CORPUS.rglob("*.md")) if CORPUS.is_dir() else []


needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"corpus not found at {CORPUS} (present in CI)"
)


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found at {CORPUS} (present in CI)")
    return CORPUS


# ---------------------------------------------------------------------------------------------
# The state database: every test that touches it runs on SQLite and on a real PostgreSQL that
# the session starts itself (tests/pg.py). `pytest -m "not postgresql"` leaves PostgreSQL out.

BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgresql: runs on the throwaway PostgreSQL cluster (tests/pg.py)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_pg = callspec is not None and callspec.params.get("db_url") == "postgresql"
        if on_pg or "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgresql)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the session, started on first use. Without
    PostgreSQL installed the tests using it skip, except under CI=true where they fail."""
    bindir = find_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL is not installed (no initdb/pg_ctl/postgres in /usr/lib/postgresql/*/bin "
            f"nor in `pg_config --bindir`; {INSTALL_HINT})"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    cluster = Cluster(bindir)
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
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state database, once per backend: a SQLite file under tmp_path, or a new
    database on the session's PostgreSQL. Build a config with `tests.pg.config_for` (or put it
    in a config.toml with `tests.pg.state_toml`). No tables: the library creates its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state/publisher.sqlite3"
    return request.getfixturevalue("pg_url")
