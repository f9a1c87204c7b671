"""A digests upstream for the tests: a bare git repository and a working clone that commits and
pushes into it, the way the real upstream's job does (tests/test_pull.py, tests/test_soak.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

from .sitehelpers import write_digest


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Upstream Job", "-c", "user.email=job@example.org", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


class Upstream:
    """A bare repository and a working clone that commits into it, laid out like the real
    upstream: day files under paper_logs/YYYY/MM/DD.md, and other Markdown beside them."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream.git"
        self.work = root / "upstream-work"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        subprocess.run(["git", "clone", "-q", str(self.bare), str(self.work)], check=True)
        git(self.work, "checkout", "-q", "-b", "main")
        self.url = self.bare.as_uri()

    def day(self, date: dt.date, text: str | None = None) -> None:
        write_digest(self.work / "paper_logs", date, text)

    def push(self, message: str, *, force: bool = False) -> str:
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", *(["--force"] if force else []), "origin", "main")
        return git(self.work, "rev-parse", "HEAD")
