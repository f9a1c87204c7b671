"""The suite's tiers: which tests are slow, and why, inferred in one place.

`pytest -m "not slow"` is the fast tier (pure logic, in-process web tests on SQLite). A test is
`slow` when it is any of:

- `postgresql`: it runs on the throwaway PostgreSQL cluster (the "postgresql" parameter of
  `db_url`, or the `pg_url`/`pg_cluster` fixtures);
- `subprocess`: it starts real `publisher` processes (`run_publisher`, `start_serve`, or
  `subprocess` with `sys.executable`);
- `browser`: it drives Chromium (the `browser` fixture, `tests.browser.chromium`);
- `mta`: it runs Postfix, Dovecot, SpamAssassin or smtp-sink (`tests.mta`);
- `corpus`: it reads all 260 days of the corpus (`corpus_files()`, the `corpus` fixture,
  `largest_corpus_digest()`, or a parameter that is a corpus file).

The markers are found from what a test uses, not written on each test: the test function, its
fixtures, and every function, class or module of tests/ they name, followed transitively
(their code's global names, read from the bytecode). So a new test that calls `run_publisher`
or takes `pg_url` is tiered without a decorator. What this cannot see (a process started by
library code the test calls, say) gets an explicit `@pytest.mark.subprocess` (or `pytestmark`),
which also counts as slow. `@pytest.mark.requires("chromium")` and `requires("chromium")` in
the code tier the test by the tool (TOOL_MARKERS).
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

SLOW_KINDS = ("postgresql", "subprocess", "browser", "mta", "corpus")

# Fixtures whose use alone tiers a test.
FIXTURE_MARKERS = {
    "pg_url": "postgresql",
    "pg_cluster": "postgresql",
    "browser": "browser",
    "corpus": "corpus",
}
# Names in tests/ whose use tiers a test, by the name they are defined under.
NAME_MARKERS = {
    "run_publisher": "subprocess",
    "start_serve": "subprocess",
    "chromium": "browser",
    "Postfix": "mta",
    "Dovecot": "mta",
    "corpus_files": "corpus",
    "largest_corpus_digest": "corpus",
}
# What each tool named in `requires(...)` implies.
TOOL_MARKERS = {
    "chromium": "browser",
    "playwright": "browser",
    "axe": "browser",
    "postgresql": "postgresql",
    "psql": "postgresql",
    "postfix": "mta",
    "smtp-sink": "mta",
    "dovecot": "mta",
    "spamassassin": "mta",
    "corpus": None,  # one corpus day is fast; all 260 are what `corpus` marks
}
# What the scanner notes on the way; both together make a `subprocess` test.
_SPAWNS, _PYTHON = "(uses subprocess)", "(uses sys.executable)"
# Parametrized fixtures whose "postgresql" parameter runs on the cluster.
BACKEND_FIXTURES = ("db_url", "empty_db_url")


def _in_tests(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or getattr(obj, "__name__", "")
    return isinstance(module, str) and (module == "tests" or module.startswith("tests."))


def _code_objects(code: types.CodeType) -> Iterable[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


class _Scanner:
    """Follows the global names a function's code uses through tests/, collecting markers."""

    def __init__(self) -> None:
        self.cache: dict[int, set[str]] = {}

    def function(self, func: Any) -> set[str]:
        func = inspect.unwrap(func)
        key = id(func)
        if key in self.cache:
            return self.cache[key]
        found: set[str] = set()
        self.cache[key] = found  # recursion guard: filled in place
        code = getattr(func, "__code__", None)
        globs = getattr(func, "__globals__", None)
        if code is None or globs is None:
            return found
        names: set[str] = set()
        consts: set[str] = set()
        for c in _code_objects(code):
            names.update(c.co_names)
            consts.update(k for k in c.co_consts if isinstance(k, str))
        # `subprocess` and `sys.executable` anywhere in what the test runs (the command is often
        # built by one helper and started by another): a Python process, `publisher` in practice.
        if "subprocess" in names and globs.get("subprocess") is subprocess:
            found.add(_SPAWNS)
        if "executable" in names and globs.get("sys") is sys:
            found.add(_PYTHON)
        if "requires" in names:
            found.update(m for t, m in TOOL_MARKERS.items() if m and t in consts)
        for name in names:
            if name in NAME_MARKERS and _in_tests(globs.get(name)):
                found.add(NAME_MARKERS[name])
            obj = globs.get(name)
            if obj is None:
                # `from .test_run import Run` inside the function: the module (once imported)
                obj = sys.modules.get(f"tests.{name}")
            if obj is None:
                continue
            if isinstance(obj, types.ModuleType) and _in_tests(obj):
                # `webhelpers.start_serve(...)`: the attributes named in this code
                for attr in names:
                    if attr in NAME_MARKERS and hasattr(obj, attr):
                        found.add(NAME_MARKERS[attr])
                    member = getattr(obj, attr, None)
                    if member is not None and not isinstance(member, types.ModuleType):
                        found |= self.obj(member)
            else:
                found |= self.obj(obj)
        return found

    def obj(self, obj: Any) -> set[str]:
        if not _in_tests(obj) or isinstance(obj, types.ModuleType):
            return set()
        if isinstance(obj, type):
            key = id(obj)
            if key in self.cache:
                return self.cache[key]
            found: set[str] = set()
            self.cache[key] = found
            for member in vars(obj).values():
                target = member.fget if isinstance(member, property) else member
                if isinstance(target, staticmethod | classmethod):
                    target = target.__func__
                if inspect.isfunction(target):
                    found |= self.function(target)
            return found
        if inspect.isfunction(obj):
            return self.function(obj)
        if callable(obj) and hasattr(obj, "__wrapped__"):
            return self.function(obj)
        return set()


def _corpus_param(item: pytest.Item, corpus: Path) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    for value in callspec.params.values():
        if isinstance(value, Path) and value.is_relative_to(corpus):
            return True
    return False


def kinds(item: pytest.Item, scanner: _Scanner, corpus: Path) -> set[str]:
    """The slow kinds `item` is, from its parameters, fixtures, code and explicit marks."""
    found: set[str] = {m.name for m in item.iter_markers() if m.name in SLOW_KINDS}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(
        callspec.params.get(name) == "postgresql" for name in BACKEND_FIXTURES
    ):
        found.add("postgresql")
    for mark in item.iter_markers("requires"):
        found.update(TOOL_MARKERS[t] for t in mark.args if TOOL_MARKERS.get(t))
    if _corpus_param(item, corpus):
        found.add("corpus")
    fixturenames = getattr(item, "fixturenames", ())
    found.update(FIXTURE_MARKERS[n] for n in fixturenames if n in FIXTURE_MARKERS)
    func = getattr(item, "obj", None)
    if func is not None:
        found |= scanner.function(func)
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        for name in fixturenames:
            for fixturedef in info.name2fixturedefs.get(name, ()):
                if _in_tests(fixturedef.func):
                    found |= scanner.function(fixturedef.func)
    if {_SPAWNS, _PYTHON} <= found:
        found.add("subprocess")
    return found - {_SPAWNS, _PYTHON}


def apply(items: list[pytest.Item], corpus: Path) -> None:
    """Add the kind markers, and `slow` for any of them, to every collected item."""
    scanner = _Scanner()
    for item in items:
        found = kinds(item, scanner, corpus)
        for kind in sorted(found - {m.name for m in item.iter_markers()}):
            item.add_marker(getattr(pytest.mark, kind))
        if found and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
