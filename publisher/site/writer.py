"""Writing: each file atomically and only when its bytes differ, with deterministic .gz and .br
copies beside it (nginx gzip_static/brotli_static, and `publisher serve`, pick them up)."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import brotli

# Written beside each file as NAME.gz and NAME.br (nginx gzip_static/brotli_static, and
# `publisher serve` pick them up).
COMPRESSIBLE = frozenset({".html", ".xml", ".json", ".css", ".js", ".svg", ".txt", ".ico"})

GZIP_LEVEL = 6

BROTLI_QUALITY = 5  # as small as gzip -9 at a tenth of the time of quality 9+


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically, and only when the bytes differ (so mtimes mean something)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the web server must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


class SiteWriter:
    """Writes the output through `write_if_changed` and records what it did (Pelican's writer):
    each file written, with its .gz and .br copies, and how many were left as they were."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: list[Path] = []
        self.removed: list[Path] = []  # pages of days no longer in the inbox
        self.unchanged = 0

    def is_current(self, path: Path) -> bool:
        """A file present with its compressed copies: a page whose inputs are unchanged may be
        left as it is (counted as unchanged)."""
        if path.is_file() and not compress_missing(path):
            self.unchanged += 1
            return True
        return False

    def write(self, path: Path, data: bytes) -> None:
        if write_if_changed(path, data) or compress_missing(path):
            self.written.append(path)
            precompress(path, data)
        else:
            self.unchanged += 1


def compressed(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".gz"), path.with_name(path.name + ".br")


def compress_missing(path: Path) -> bool:
    if path.suffix not in COMPRESSIBLE:
        return False
    return not all(p.is_file() for p in compressed(path))


def precompress(path: Path, data: bytes) -> None:
    """NAME.gz and NAME.br beside NAME, deterministic (no name or time in the gzip header)."""
    if path.suffix not in COMPRESSIBLE:
        return
    gz, br = compressed(path)
    write_if_changed(gz, gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))
    write_if_changed(br, brotli.compress(data, quality=BROTLI_QUALITY))
