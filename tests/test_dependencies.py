"""Dependency floors and the lock files (issue 27): no floor admits a release with a published
advisory, the locks pin every package with hashes within those floors, and CI runs exactly the
README's test command, which installs from the lock."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .conftest import ROOT

# The first release with the advisories fixed (pyproject.toml names them beside each line).
FIXED = {
    "starlette": "1.1.0",
    "python-multipart": "0.0.30",
    "h11": "0.16.0",
    "brotli": "1.2.0",
    "jinja2": "3.1.6",
}
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\]+) \\$")


def requirements(extra: str | None = None) -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    reqs = (Requirement(line) for line in lines)
    return {canonicalize_name(r.name): r for r in reqs}


def lock(name: str) -> dict[str, Version]:
    """name -> pinned version; every pin must carry at least one sha256 hash."""
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    pins: dict[str, Version] = {}
    for i, line in enumerate(lines):
        m = PIN.match(line)
        if m:
            assert lines[i + 1].strip().startswith("--hash=sha256:"), f"{name}: {line}"
            pins[canonicalize_name(m.group(1).split("[")[0])] = Version(m.group(2))
    return pins


@pytest.mark.parametrize(("name", "fixed"), sorted(FIXED.items()))
def test_no_floor_admits_a_release_with_a_known_advisory(name: str, fixed: str) -> None:
    req = requirements()[name]
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors and max(floors) >= Version(fixed), f"{req}: floor below {fixed}"


@pytest.mark.parametrize(
    ("lockfile", "extra"), [("requirements.lock", None), ("requirements-test.lock", "test")]
)
def test_the_locks_pin_every_dependency_within_its_range_with_hashes(
    lockfile: str, extra: str | None
) -> None:
    pins = lock(lockfile)
    for name, req in requirements(extra).items():
        assert name in pins, f"{lockfile}: {name} is not pinned"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
    for name, fixed in FIXED.items():
        assert pins[name] >= Version(fixed)


def test_the_test_lock_pins_the_runtime_lock_s_versions() -> None:
    runtime, test = lock("requirements.lock"), lock("requirements-test.lock")
    assert {n: test.get(n) for n in runtime} == runtime


def test_ci_runs_the_readme_s_test_command_which_installs_the_lock() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("The tests, in one command", 1)[1].split("```sh\n", 1)[1]
    command = block.split("\n", 1)[0]
    assert "requirements-test.lock" in command and command.endswith("pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci
