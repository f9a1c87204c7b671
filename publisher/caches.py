"""On-disk caches of what every send would otherwise redo: the CSS inlining of an edition
(premailer), its rendered Markdown (publisher/markdown.py's `render_all`), Jinja's compiled
templates, and a note of a secret found strong. All are keyed by content, so none goes stale.
The edition's entries (inlining, Markdown) are files of `cached(kind, suffix, key, make)`.

**CSS inlining.** premailer is the costly step of a send's start-up: its import (premailer,
cssutils, cssselect, requests) and one pass over an edition took 0.19 s of a one-reader
`publisher send`'s 0.65 s on a 2-core machine. Its output depends only on its input and its
options, so `inline_css` keeps each result in a file named by the SHA-256 of the input HTML, the
options (`_PREMAILER_OPTIONS`) and the versions of premailer, cssutils, cssselect and lxml; a
second send of the same edition (a re-run, a retry, `send --dry-run` then `send`, another sender
process on this machine) reads it back and never imports premailer. Any change to a digest, a
template, the config or a library is a new key, so an entry is never stale, only unused.
Each file holds the SHA-256 of its content on its first line, checked on reading; it is written
to a temporary file and renamed, so a reader never sees half of it. A cache that cannot be read
or written (no home, a read-only disk) is skipped: the HTML is inlined as before. Entries not
used for `MAX_AGE_DAYS` are removed when a new one is written, and at most `MAX_ENTRIES` are
kept (an edition is 40 to 500 KB). Processes that miss the same entry at once (senders started
together) make it once: the first holds the folder's lock while it does, the others wait for it
and read its entry.

**Jinja's templates.** Compiling the email's templates from source took 22 ms of each send.
`TemplateCache` is Jinja's own FileSystemBytecodeCache (keyed by the template's name and the
SHA-1 of its source; a file that does not load is compiled again), in a folder named by the
environment's options, made when needed; a write that fails is skipped, never an error.

**A secret found strong.** zxcvbn's import and estimate took 30 ms of every command that signs
(publisher/tokens.py's check_secret). Once a secret passes, `remember_strong` leaves an empty
file named by a keyed BLAKE2b of the secret, the bar and zxcvbn's version; `known_strong`
finds it and skips the estimate. The secret itself is never written, and only a secret already
found strong (2^128 guesses or more) is ever hashed there, so the name gives nothing away; a
weak secret is checked, and refused, every time. The folder is the user's own (0700).

All live in the cache folder, `cache_root()`: `$XDG_CACHE_HOME/publisher`, else
`~/.cache/publisher` (the systemd unit's user has its home, /srv/publisher, writable).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import logging
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jinja2
import jinja2.bccache

log = logging.getLogger("publisher.caches")

# premailer's options; they are part of every entry's key (an entry made with others is never
# read).
_PREMAILER_OPTIONS: dict[str, object] = {
    "allow_network": False,  # never fetch a stylesheet or image while rendering
    "allow_loading_external_files": False,
    "disable_validation": True,
    "cssutils_logging_level": logging.CRITICAL,
    "strip_important": False,  # the dark-mode rules need !important to beat inlined colours
    # Keep the templates' width="558" on images (Outlook's size) instead of CSS's 100%.
    "disable_basic_attributes": ["width", "height"],
}
MAX_ENTRIES = 64
MAX_AGE_DAYS = 30
MAKER_WAIT = 60.0  # seconds a process waits for another making the entry it needs
_SUFFIX = ".html"


def inline_css(html: str) -> str:
    """`html` with its CSS inlined by premailer (the style element's media queries kept), from
    the cache when this very input was inlined before."""
    return cached("inline", _SUFFIX, _key(html), lambda: _premailer(html))


def cached(kind: str, suffix: str, key: str, make: Callable[[], str]) -> str:
    """`make()`, or what it gave before for `key`: the entries of the folder `kind` of the cache
    folder are files named by their key (a hash of everything the result depends on), each
    with its checksum line, written whole (a temporary file renamed) and pruned as above."""
    root = cache_root()
    folder = root / kind if root is not None else None
    if folder is None:
        return make()
    path = folder / (key + suffix)
    found = _read(path)
    if found is not None:
        return found
    with _one_maker(folder):
        # Senders started together on one machine all miss; the first makes the entry while
        # the others wait here, then read what it wrote.
        found = _read(path)
        if found is not None:
            return found
        result = make()
        _write(folder, key + suffix, result)
    return result


@contextlib.contextmanager
def _one_maker(folder: Path) -> Iterator[None]:
    """Hold the folder's lock (flock on its `.lock`, released by the kernel if the process
    dies) while an entry is made, so processes on this machine missing the same entry at once
    make it once: three or four senders started together each inlined the edition (0.2 to
    0.4 s of CPU each). Waits at most MAKER_WAIT seconds, then makes the entry anyway; a
    folder where the lock cannot be made (read-only) is not locked at all."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.debug("cache folder not locked (%s): %s", folder, exc)
        yield
        return
    try:
        deadline = time.monotonic() + MAKER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.debug("cache folder still locked after %ss: %s", MAKER_WAIT, folder)
                    break
                time.sleep(0.02)
            except OSError as exc:  # no locks here (some network file systems): go on
                log.debug("cache folder not locked (%s): %s", folder, exc)
                break
        yield
    finally:
        os.close(fd)  # releases the lock


def cache_root() -> Path | None:
    """publisher's cache folder, or None when there is no place for one (no home folder)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if base and os.path.isabs(base):
        return Path(base) / "publisher"
    try:
        return Path.home() / ".cache" / "publisher"
    except RuntimeError:  # no HOME and no passwd entry
        return None


class TemplateCache(jinja2.FileSystemBytecodeCache):
    """Jinja's bytecode cache in `jinja-<tag>/` of the cache folder, looked up at each use (so
    a process that changes XDG_CACHE_HOME, as the tests do, follows it), made when first
    written; without a cache folder, or when a write fails, the template is simply compiled
    (only the next process pays again)."""

    def __init__(self, tag: str) -> None:
        super().__init__("", "%s.jinja")
        self.tag = tag

    def _folder(self) -> Path | None:
        root = cache_root()
        return root / f"jinja-{self.tag}" if root is not None else None

    def _get_cache_filename(self, bucket: jinja2.bccache.Bucket) -> str:
        folder = self._folder()
        # No folder: a name that is never there, so nothing is loaded (and nothing dumped).
        return str(folder / (self.pattern % bucket.key)) if folder is not None else ""

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if self._folder() is not None:
            super().load_bytecode(bucket)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        folder = self._folder()
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            super().dump_bytecode(bucket)
        except OSError as exc:
            log.debug("compiled template not cached (%s): %s", folder, exc)


def template_cache(options: dict[str, object]) -> TemplateCache:
    """The bytecode cache for an environment made with `options` (their repr names its folder:
    code compiled under other options is never loaded)."""
    return TemplateCache(hashlib.sha256(repr(sorted(options.items())).encode()).hexdigest()[:12])


def known_strong(secret: str, bar: float) -> bool:
    """True if `secret` passed the strength check against `bar` before (`remember_strong`)."""
    path = _strong_marker(secret, bar)
    try:
        return path is not None and path.is_file()
    except OSError:  # a folder this user may not search (another user's cache): not known
        return False


def remember_strong(secret: str, bar: float) -> None:
    """Note that `secret` passed the strength check against `bar`; skipped if not writable."""
    path = _strong_marker(secret, bar)
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600)
    except OSError as exc:
        log.debug("strong secret not noted (%s): %s", path.parent, exc)


def _strong_marker(secret: str, bar: float) -> Path | None:
    root = cache_root()
    if root is None:
        return None
    digest = hashlib.blake2b(
        f"{bar!r}\n{versions('zxcvbn')}\n{secret}".encode(),
        person=b"publisher-strong",
        digest_size=32,
    )
    return root / "strong-secrets" / digest.hexdigest()


def _premailer(html: str) -> str:
    # Imported here: a send whose edition is in the cache never loads premailer (nor cssutils
    # and cssselect with it).
    import cssutils

    with _requests_on_first_use():
        import premailer

    # cssutils logs every CSS property it does not know (mso-hide, -webkit-...) as a warning;
    # those are expected in email CSS and are noise in the user's log.
    cssutils.log.setLevel(logging.CRITICAL)
    # align_floating_images gives a floated <img> an align= for Outlook. To find one it parses
    # every <img>'s style with cssutils's validation on (disable_validation does not reach that
    # call), which compiled cssutils's property grammar: 60 of an edition's 390 ms of inlining.
    # Without "float" anywhere in the HTML (the shipped templates) there is nothing to align;
    # a template of one's own that floats an image keeps its align=.
    floats = "float" in html
    return premailer.Premailer(html, **_PREMAILER_OPTIONS, align_floating_images=floats).transform()


@contextlib.contextmanager
def _requests_on_first_use() -> Iterator[None]:
    """premailer imports requests at its top, only to fetch external stylesheets, which
    `allow_network=False` never does; that import (requests, urllib3, http.client, chardet)
    took 80 ms of the day's first send. While premailer is imported, `requests` is a stand-in
    module that imports the real one on its first attribute use (PEP 562's module
    `__getattr__`) and hands that over: premailer keeps the stand-in, and a fetch through it
    would still work. A process that already has requests gets it as it is."""
    if "requests" in sys.modules:
        yield
        return
    stand_in = types.ModuleType("requests", "requests, imported on first use (caches.py)")

    def load(name: str) -> Any:
        if sys.modules.get("requests") is stand_in:
            del sys.modules["requests"]
        return getattr(importlib.import_module("requests"), name)

    stand_in.__getattr__ = load  # type: ignore[method-assign]
    sys.modules["requests"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("requests") is stand_in:
            del sys.modules["requests"]


def versions(*names: str) -> str:
    """The installed versions of these distributions, for a cache key ("name=?" if absent)."""
    found = []
    for name in names:
        try:
            found.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name}=?")
    return " ".join(found)


def _key(html: str) -> str:
    options = repr(sorted(_PREMAILER_OPTIONS.items()))
    libraries = versions("premailer", "cssutils", "cssselect", "lxml")
    digest = hashlib.sha256(f"{options}\n{libraries}\n".encode())
    digest.update(html.encode())
    return digest.hexdigest()


def _read(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    check, _, body = data.partition(b"\n")
    if check.decode("ascii", "replace") != hashlib.sha256(body).hexdigest():
        log.warning("ignoring a damaged cache entry: %s", path)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # used: pruned last
    return body.decode()


def _write(folder: Path, name: str, text: str) -> None:
    body = text.encode()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
            os.replace(tmp, folder / name)
        except BaseException:
            os.unlink(tmp)
            raise
        _prune(folder, Path(name).suffix)
    except OSError as exc:
        log.debug("cache entry not written (%s): %s", folder, exc)


def _prune(folder: Path, suffix: str) -> None:
    """Remove the entries unused for MAX_AGE_DAYS, then the oldest beyond MAX_ENTRIES."""
    entries = []
    for path in folder.glob("*" + suffix):
        try:
            entries.append((path.stat().st_mtime, path))
        except OSError:
            continue  # removed meanwhile by another process
    entries.sort(reverse=True)
    for path in folder.glob(".tmp-*"):  # left by a process killed while writing
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < time.time() - 3600:
                path.unlink()
    oldest = time.time() - MAX_AGE_DAYS * 86400
    for n, (mtime, path) in enumerate(entries):
        if n >= MAX_ENTRIES or mtime < oldest:
            path.unlink(missing_ok=True)
