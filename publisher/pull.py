"""`publisher pull`: keep the inbox a clone of the digests' git repository (`[digests] git`).

The upstream is someone else's repository, written by a job: it fast-forwards, rewrites day
files, and is sometimes force-pushed. So the clone is managed, not merged into: each pull fetches
the one branch and resets the clone to it (`reset --hard` and `clean`), whatever happened
upstream. Nothing of ours lives in the clone; the build reads it (only day-named files under
`git_path`, see `digest.find_digests`) and the state database remembers what was sent, so an
edited day updates its feed entry and is never emailed again.

Why the `git` command-line client (Debian's git) and not a library such as dulwich: it is what
the operator already uses to look at the clone, it speaks every transport and credential set-up
(ssh keys, credential helpers, proxies) the operator's git is configured with, and a fetch and a
hard reset are two well-known commands, not an API to keep up with.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import PublisherError

# A fetch that takes longer than this is given up (and retried at the next poll).
GIT_TIMEOUT_SECONDS = 300


class PullError(PublisherError):
    """The digests' repository could not be cloned or fetched; the inbox is left as it was."""


@dataclass(frozen=True, slots=True)
class PullResult:
    url: str
    branch: str
    before: str | None  # the commit the clone was at; None: it was just cloned
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def summary(self) -> str:
        where = f"{self.url} ({self.branch})"
        if self.before is None:
            return f"cloned {where}: at {self.after[:12]}"
        if not self.changed:
            return f"{where}: up to date at {self.after[:12]}"
        return f"{where}: {self.before[:12]} -> {self.after[:12]}"


def _git(args: list[str], cwd: Path | None = None) -> str:
    exe = shutil.which("git")
    if exe is None:
        raise PullError("'digests.git' is set but git is not installed (apt-get install git)")
    env = dict(os.environ)
    # Never wait for a password on a terminal nobody watches; never page.
    env.update(GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat", LC_ALL="C")
    try:
        done = subprocess.run(
            [exe, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PullError(f"git {args[0]} took over {GIT_TIMEOUT_SECONDS} s; given up") from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        # git's own reason is its first "fatal:" line; the advice after it says little.
        fatal = [ln.removeprefix("fatal: ") for ln in lines if ln.startswith("fatal: ")]
        detail = (fatal or lines or [f"exit {done.returncode}"])[0]
        raise PullError(f"git {args[0]} failed: {detail}")
    return done.stdout.strip()


def pull(cfg: Config) -> PullResult:
    """Clone `[digests] git` into the inbox, or fetch it and reset the clone to the remote
    branch. Raises PullError (one line) when git fails; the inbox is then left as it was."""
    d = cfg.digests
    if not d.git:
        raise PullError(f"{cfg.path}: no 'digests.git' repository is configured to pull from")
    inbox = d.inbox
    ref = f"refs/remotes/origin/{d.git_branch}"
    if not (inbox / ".git").exists():
        if inbox.exists() and any(inbox.iterdir()):
            raise PullError(
                f"{inbox}: 'digests.inbox' is not empty and not a git clone; with 'digests.git' "
                "set it must be a folder publisher manages (missing or empty)"
            )
        inbox.parent.mkdir(parents=True, exist_ok=True)
        clone = ["clone", "--quiet", "--single-branch", "--branch", d.git_branch]
        _git([*clone, "--", d.git, str(inbox)])
        return PullResult(d.git, d.git_branch, None, _git(["rev-parse", "HEAD"], inbox))
    before = _git(["rev-parse", "--verify", "--quiet", "HEAD"], inbox) or None
    if _git(["config", "--default", "", "--get", "remote.origin.url"], inbox) != d.git:
        _git(["remote", "set-url", "origin", d.git], inbox)  # the URL was changed in config.toml
    # `+`: a force-pushed branch replaces ours; --prune: a deleted branch does not linger.
    _git(["fetch", "--quiet", "--prune", "origin", f"+refs/heads/{d.git_branch}:{ref}"], inbox)
    _git(["reset", "--quiet", "--hard", ref], inbox)
    _git(["clean", "--quiet", "-ffdx"], inbox)
    return PullResult(d.git, d.git_branch, before, _git(["rev-parse", "HEAD"], inbox))
