"""Search: the Pagefind index over the built day pages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import BuildError, ConfigError
from .writer import precompress

SEARCH_FOLDER = "pagefind"  # Pagefind's bundle, under the output root


def index_search(out: Path) -> None:
    """Run Pagefind over the built day pages (only they carry data-pagefind-body); its bundle
    goes to out/pagefind/. Pagefind has no incremental mode: the whole index is rebuilt, in a
    time measured by bench/build_site.py, into a hidden folder (never served) that then takes
    the old bundle's place, so no stale index file piles up (Pagefind leaves them behind)."""
    try:
        from pagefind.service import get_executable
    except ImportError:  # pragma: no cover - a dependency, but say so plainly if it is missing
        get_executable = None  # type: ignore[assignment]
    exe = get_executable() if get_executable else None
    if exe is None:
        raise ConfigError(
            "'feed.search' is on but the Pagefind binary is missing: pip install 'pagefind[bin]' "
            "(or set search = false under [feed])"
        )
    fresh, old = out / f".{SEARCH_FOLDER}-new", out / f".{SEARCH_FOLDER}-old"
    for leftover in (fresh, old):
        shutil.rmtree(leftover, ignore_errors=True)
    cmd = [str(exe), "--site", str(out), "--output-path", str(fresh), "--quiet"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BuildError(f"cannot run pagefind ({exe}): {exc.strerror or exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        last = f": {detail[-1]}" if detail else ""
        raise BuildError(f"pagefind failed on {out} (exit {done.returncode}){last}")
    for path in sorted(fresh.glob("*")):
        if path.is_file() and path.suffix in (".js", ".css", ".json"):
            precompress(path, path.read_bytes())
    bundle = out / SEARCH_FOLDER
    if bundle.exists():
        bundle.rename(old)
    fresh.rename(bundle)
    shutil.rmtree(old, ignore_errors=True)
