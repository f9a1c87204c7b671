"""The suite's own rules: a missing tool skips, or fails under CI=true (tests/requires.py), and
each test's tier is inferred from what it uses (tests/tiers.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from . import tiers
from .conftest import corpus_files, run_publisher
from .requires import TOOLS, requires


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(TOOLS, "nothing", (lambda: None, "nothing is installed (apt-get nothing)"))
    return "nothing"


def test_a_missing_tool_skips_outside_ci(
    monkeypatch: pytest.MonkeyPatch, nothing_installed: str
) -> None:
    for value in (None, "", "false", "0"):
        if value is None:
            monkeypatch.delenv("CI", raising=False)
        else:
            monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception, match=r"nothing is installed \(apt-get"):
            requires(nothing_installed)


def test_a_missing_tool_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, nothing_installed: str
) -> None:
    for value in ("true", "TRUE"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="CI=true and nothing is installed"):
            requires(nothing_installed)


def test_a_present_tool_is_where_it_was_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setitem(TOOLS, "here", (lambda: "/opt/here", "never shown"))
    assert requires("here") == "/opt/here"
    with pytest.raises(KeyError, match="unknown"):
        requires("no-such-tool")


# Sample "tests" for the inference; never collected (no test_ prefix).
def _pure() -> None:
    assert sorted([2, 1]) == [1, 2]


def _runs_publisher(tmp: Path) -> None:
    run_publisher("--help", cwd=tmp)


def _command() -> list[str]:
    return [sys.executable, "-m", "publisher.cli", "--help"]


def _starts_a_command_built_elsewhere() -> None:
    subprocess.run(_command(), check=True)


importlib.import_module("tests.webhelpers")  # loaded, but no name of this module


def _imports_its_helper_inside(tmp: Path) -> None:
    from .webhelpers import start_serve

    start_serve(tmp / "config.toml", 0, tmp / "log", {})


def _opens_chromium() -> None:
    requires("chromium")


def _reads_the_corpus() -> None:
    assert corpus_files() is not None


class _Item:
    """What tiers.kinds reads of a pytest item."""

    def __init__(self, func: Any, fixturenames: tuple[str, ...] = (), **params: Any) -> None:
        self.obj = func
        self.fixturenames = fixturenames
        if params:
            self.callspec = type("CallSpec", (), {"params": params})()

    def iter_markers(self, name: str | None = None) -> list[Any]:
        return []


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        pytest.param(_Item(_pure), set(), id="pure"),
        pytest.param(_Item(_pure, db_url="sqlite"), set(), id="sqlite"),
        pytest.param(_Item(_pure, db_url="postgresql"), {"postgresql"}, id="db_url-postgresql"),
        pytest.param(_Item(_pure, ("tmp_path", "pg_url")), {"postgresql"}, id="pg_url"),
        pytest.param(_Item(_pure, ("browser",)), {"browser"}, id="browser-fixture"),
        pytest.param(_Item(_runs_publisher), {"subprocess"}, id="run_publisher"),
        pytest.param(_Item(_starts_a_command_built_elsewhere), {"subprocess"}, id="sys.executable"),
        pytest.param(_Item(_imports_its_helper_inside), {"subprocess"}, id="local-import"),
        pytest.param(_Item(_opens_chromium), {"browser"}, id="requires-chromium"),
        pytest.param(_Item(_reads_the_corpus), {"corpus"}, id="corpus_files"),
        pytest.param(
            _Item(_pure, path=Path("/corpus/2024/05/15.md")), {"corpus"}, id="corpus-parameter"
        ),
    ],
)
def test_the_tier_is_inferred_from_what_a_test_uses(item: _Item, expected: set[str]) -> None:
    assert tiers.kinds(item, tiers._Scanner(), Path("/corpus")) == expected  # type: ignore[arg-type]
