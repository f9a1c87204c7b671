"""What a test needs from the machine, and the one rule for when it is missing.

`requires("chromium")` returns where the tool is (a path, or True for what has none). When it is
missing the test skips, saying what to install; under `CI=true` it fails instead, since CI
promises every tool (`.ci/apt-packages`, the test extras, the corpus), so a missing one must not
pass as a skip. `@pytest.mark.requires("spamassassin", ...)` (and `pytestmark`) does the same
before a test runs (tests/conftest.py). Each name is also what the suite's tiers are inferred
from (tests/tiers.py): a test that requires "chromium" is a `browser` test, "postfix" an `mta`
one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from .browser import CHROMIUM, MISSING

ROOT = Path(__file__).resolve().parent.parent
# Beside the checkout (../shared/corpus, as in CI), or where PUBLISHER_TEST_CORPUS points (a
# git worktree elsewhere: PUBLISHER_TEST_CORPUS=/work/shared/corpus/daily_papers_ko).
CORPUS = Path(
    os.environ.get("PUBLISHER_TEST_CORPUS") or ROOT.parent / "shared" / "corpus" / "daily_papers_ko"
)


def _program(name: str) -> Callable[[], str | None]:
    """Finds `name` on the PATH or in /usr/sbin (Postfix, Dovecot: not on a user's PATH)."""

    def find() -> str | None:
        return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")

    return find


def _module(name: str) -> Callable[[], str | None]:
    def find() -> str | None:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            return None
        return spec.origin if spec is not None else None

    return find


def _postgresql() -> str | None:
    from .pg import find_bindir

    bindir = find_bindir()
    return str(bindir) if bindir else None


# name -> (how to find it, what to install when it is missing)
TOOLS: dict[str, tuple[Callable[[], str | None], str]] = {
    "chromium": (
        lambda: str(CHROMIUM) if CHROMIUM.exists() else None,
        MISSING,
    ),
    "playwright": (_module("playwright.sync_api"), "the playwright package (test extras)"),
    "axe": (
        _module("axe_playwright_python.sync_playwright"),
        "the axe-playwright-python package (test extras)",
    ),
    "postgresql": (
        _postgresql,
        "PostgreSQL is not installed: no initdb/pg_ctl/postgres in /usr/lib/postgresql/*/bin "
        "nor in `pg_config --bindir` (Debian: apt-get install postgresql)",
    ),
    "psql": (_program("psql"), "psql is not installed (Debian: apt-get install postgresql-client)"),
    "postfix": (_program("postfix"), "postfix is not installed (Debian: apt-get install postfix)"),
    "smtp-sink": (
        _program("smtp-sink"),
        "Postfix's smtp-sink is not installed (Debian: apt-get install postfix)",
    ),
    "dovecot": (
        _program("dovecot"),
        "dovecot is not installed (Debian: apt-get install dovecot-imapd)",
    ),
    "spamassassin": (
        _program("spamassassin"),
        "spamassassin is not installed (Debian: apt-get install spamassassin)",
    ),
    "setpriv": (_program("setpriv"), "setpriv is not installed (Debian: util-linux)"),
    "corpus": (
        lambda: str(CORPUS) if CORPUS.is_dir() else None,
        f"corpus not found at {CORPUS} (present in CI)",
    ),
}


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def missing(reason: str) -> None:
    """Skip the test for `reason`; under CI=true fail it (CI promises what tests need)."""
    if under_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def available(tool: str) -> str | None:
    """Where `tool` is, or None; never skips."""
    find, _hint = TOOLS[tool]
    return find()


def requires(tool: str) -> str:
    """Where `tool` is (see TOOLS); skips the test when it is missing, fails it under CI=true."""
    if tool not in TOOLS:
        raise KeyError(f"requires({tool!r}): unknown; known: {', '.join(sorted(TOOLS))}")
    found = available(tool)
    if found is None:
        missing(TOOLS[tool][1])
    assert found is not None
    return found
