"""Digest archive -> public/: feed.xml (RSS 2.0), atom.xml, index.html and one page a day.

Readers (digest.py) turn files into Digests; this package decides what to build and writes it,
in Pelican's two phases: collect.py (the inbox, the manifest, the fingerprint), then build.py
renders through pages.py and feeds.py and writes through writer.py (files and their .gz/.br
copies); search.py runs Pagefind over the result.

Three promises, and how they are kept:

- Deterministic bytes. No wall clock anywhere: an entry's `published` is its date at
  `feed.publish_hour` in `site.timezone`, its `updated` comes from the manifest below, and the
  feeds' own updated/lastBuildDate is the newest entry's updated.
- Stable entries. Each day's id is a tag: URI (see `urls.entry_id`). The manifest
  (`.build-manifest.json` in the output folder, replaced atomically) remembers per date the
  sha256 of the parsed digest and its `updated` time. First seen: updated = published. Content
  changed: updated = max(source file's mtime, previous updated + 1 s), so an edit moves the entry
  forward in place (same id) and a rebuild of unchanged input changes nothing.
- Cheap rebuilds. The manifest also caches, per file, (mtime_ns, size) -> what the index needs,
  and per page what it was rendered from; a file whose stat is unchanged is not read, a page whose
  inputs (digest hash, neighbours, templates+config fingerprint) are unchanged is not rendered,
  and any file is written only when its bytes differ. The feeds' HTML for the newest days is
  cached too, so adding one digest parses one file.
"""

from __future__ import annotations

from ..urls import paper_anchors
from .build import BuildReport, build_site
from .collect import MANIFEST, BuildProblem, BuiltDay
from .pages import INDEX_DAYS
from .search import SEARCH_FOLDER, index_search
from .writer import write_if_changed

__all__ = [
    "INDEX_DAYS",
    "MANIFEST",
    "SEARCH_FOLDER",
    "BuildProblem",
    "BuildReport",
    "BuiltDay",
    "build_site",
    "index_search",
    "paper_anchors",
    "write_if_changed",
]
