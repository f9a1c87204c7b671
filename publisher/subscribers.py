"""The subscriber list a person edits (a CSV) -> the state database.

The sync rule (README "Subscribers"): the configured CSV (`[subscribers] file`) is imported before
every send, and it is the list of the addresses it *adds*:

- a new address becomes active;
- an address already known keeps its status: an unsubscribed, bounced or suppressed address stays
  so whatever the CSV says; only the CSV's own `removed` state (below) is undone by the row
  coming back; a non-empty name updates the stored name;
- a CSV subscriber whose row is gone from the file becomes `removed`: not mailed, history kept.
  Addresses that came from the web form or `subscribers add` are not touched by the CSV.

Rows are validated with email-validator; an invalid row is reported as `file:line: problem` and
skipped, the rest are imported. Duplicates after normalisation merge (the first non-empty name
wins). The file is streamed into a temporary table and compared with the stored subscribers in
SQL (`Store.sync_csv`): only the differences are written, and memory does not grow with the
list.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import PublisherError
from .state import (
    CADENCES,
    AddressNormalizer,
    ChoiceUpdate,
    InvalidAddress,
    join_topics,
    normalize_name,
)
from .state.protocols import SubscribersStore
from .topics import parse_topics


class SubscriberFileError(PublisherError):
    """The CSV cannot be read at all (missing, not UTF-8, no `email` column)."""


@dataclass(frozen=True, slots=True)
class ImportReport:
    path: str
    rows: int
    added: int
    reactivated: int
    duplicates: int
    removed: int
    invalid: tuple[str, ...]
    skipped_unchanged: bool = False

    def summary(self) -> str:
        if self.skipped_unchanged:
            return f"{self.path}: unchanged since the last import"
        return (
            f"{self.path}: {self.rows} rows, {self.added} added, {self.reactivated} reactivated, "
            f"{self.duplicates} duplicates merged, {self.removed} removed, "
            f"{len(self.invalid)} invalid"
        )


CHOICE_FIELDS = ("cadence", "topics", "max_papers")


def _choice(record: dict[str, str | None], topics: Sequence[str]) -> ChoiceUpdate | None:
    """The reader choice in a row's optional `cadence`, `topics` (names separated by `;`) and
    `max_papers` columns: a present column sets its value (an empty cell: daily, all topics,
    no cap), an absent one keeps what is stored. ValueError says what is wrong."""
    present = [f for f in CHOICE_FIELDS if f in record]
    if not present:
        return None
    cells = {f: (record.get(f) or "").strip() for f in present}
    cadence = max_papers = None
    chosen: frozenset[str] | None = None
    if "cadence" in cells:
        cadence = cells["cadence"].lower() or "daily"
        if cadence not in CADENCES:
            raise ValueError(f"cadence must be daily, weekly or paused, not {cells['cadence']!r}")
    if "topics" in cells:
        chosen = parse_topics(cells["topics"], topics, sep=";")
    if "max_papers" in cells:
        raw = cells["max_papers"] or "0"
        if not raw.isdigit():
            raise ValueError(f"max_papers must be a whole number (0: all), not {raw!r}")
        max_papers = int(raw)
    return ChoiceUpdate(cadence=cadence, topics=chosen, max_papers=max_papers)


def _rows(
    path: Path,
    check_deliverability: bool,
    invalid: list[str],
    topics: Sequence[str] | None = (),
) -> Iterator[tuple[str, str, ChoiceUpdate | None]]:
    """Valid (normalised email, name, reader choice or None) rows of a CSV; problems go to
    `invalid` as file:line. `topics`: the configured topic names a `topics` cell may use
    (None: the choice columns are not read)."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise SubscriberFileError(f"{path}: subscriber file not found") from None
    except OSError as exc:
        raise SubscriberFileError(f"{path}: cannot read: {exc.strerror}") from None
    with fh:
        # csv.reader and column positions (a DictReader's dict per row is a third of the time
        # of a million-row sync); the same rules: the last of two columns of one name counts,
        # a short row's missing cells are empty, blank lines are skipped.
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
        except UnicodeDecodeError:
            raise SubscriberFileError(f"{path}: not UTF-8") from None
        except csv.Error as exc:
            raise SubscriberFileError(f"{path}:1: {exc}") from None
        fields = [f.strip().lower() for f in (header or [])]
        if "email" not in fields:
            raise SubscriberFileError(
                f"{path}:1: the header row needs an 'email' column (and optionally 'name'), "
                f"found {header or 'nothing'}"
            )
        width = len(fields)
        column = {f: i for i, f in enumerate(fields)}
        at_email, at_name = column["email"], column.get("name", width)
        choices = None if topics is None else {f: column[f] for f in CHOICE_FIELDS if f in column}
        line = reader.line_num
        normalize = AddressNormalizer(check_deliverability=check_deliverability)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise SubscriberFileError(f"{path}:{line + 1}: not UTF-8") from None
            except csv.Error as exc:
                raise SubscriberFileError(f"{path}:{line + 1}: {exc}") from None
            # line_num is the physical line the record ended on; quoted fields may span
            # lines, so report where it started.
            start, line = line + 1, reader.line_num
            if not row:
                continue
            raw = _unneutralised((row[at_email] if at_email < len(row) else "").strip())
            if not raw:
                if any(v.strip() for v in row[:width]):
                    invalid.append(f"{path}:{start}: no email address")
                continue
            try:
                email = normalize(raw)
            except InvalidAddress as exc:
                invalid.append(f"{path}:{start}: {exc}")
                continue
            choice = None
            if choices:
                cells = {f: row[i] if i < len(row) else None for f, i in choices.items()}
                try:
                    choice = _choice(cells, topics or ())
                except ValueError as exc:
                    invalid.append(f"{path}:{start}: {exc}")
                    continue
            yield email, normalize_name(row[at_name] if at_name < len(row) else ""), choice


def read_rows(path: Path, *, invalid: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """The (normalised email, name) rows an import of `path` would take, streamed, with the same
    header and validation rules (no DNS lookups); invalid rows go to `invalid` as file:line.
    Raises SubscriberFileError when the file is unreadable."""
    for email, name, _ in _rows(path, False, [] if invalid is None else invalid, None):
        yield email, name


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def import_csv(
    cfg: Config,
    store: SubscribersStore,
    path: Path | None = None,
    *,
    sync: bool | None = None,
    force: bool = False,
) -> ImportReport:
    """Import a subscriber CSV (default: the configured list).

    `sync` (default: True for the configured list, False for any other file) also marks CSV
    subscribers missing from the file `removed`. A synced list whose bytes did not change since
    the last sync (and whose result is intact) is skipped unless `force`. Imports run one at a
    time (a database lock). Raises SubscriberFileError when the file is unreadable.
    """
    configured = cfg.subscribers.file.resolve()
    path = (path or configured).resolve()
    if sync is None:
        sync = path == configured
    if not path.is_file():
        raise SubscriberFileError(f"{path}: subscriber file not found")
    # One import at a time, on every backend and machine: an import marks `removed` the CSV
    # rows it did not stamp, so another import stamping rows meanwhile would lose them.
    with store.lock("subscribers-import"):
        return _import_locked(cfg, store, path, sync=sync, force=force)


def _import_locked(
    cfg: Config, store: SubscribersStore, path: Path, *, sync: bool, force: bool
) -> ImportReport:
    fingerprint = _digest(path)
    key = "csv_sha256:" + hashlib.sha256(str(path).encode()).hexdigest()[:32]
    if sync and not force:
        # "fingerprint run": the file's bytes and the import that read them. Skipped only if
        # both the file and what that import left behind are unchanged.
        last_hash, _, last_run = (store.get_meta(key) or "").partition(" ")
        if last_hash == fingerprint and last_run.isdigit() and store.csv_run_intact(int(last_run)):
            return ImportReport(str(path), 0, 0, 0, 0, 0, (), skipped_unchanged=True)

    run = store.new_csv_run()
    invalid: list[str] = []
    rows = _rows(path, cfg.subscribers.check_deliverability, invalid, cfg.topic_names)
    done = store.sync_csv(run, rows, source="csv" if sync else "cli", remove=sync)
    if sync:
        store.set_meta(key, f"{fingerprint} {run}")
    return ImportReport(
        str(path),
        done.rows + len(invalid),
        done.added,
        done.reactivated,
        done.duplicates,
        done.removed,
        tuple(invalid),
    )


EXPORT_FIELDS = (
    "email",
    "name",
    "status",
    "source",
    "created_at",
    "confirmed_at",
    "hard_bounces",
    *CHOICE_FIELDS,
)
# A spreadsheet takes a cell starting with one of these for a formula (OWASP "CSV injection"):
# `=HYPERLINK(...)` in a name would run when the operator opens the export.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """`value` as a spreadsheet shows it as text: a leading `'` before a formula character."""
    return "'" + value if value.startswith(FORMULA_START) else value


def _unneutralised(value: str) -> str:
    """An address from an export read back: the `'` that neutralise_cell added removed."""
    return value[1:] if value[:1] == "'" and value[1:].startswith(FORMULA_START) else value


def export_csv(store: SubscribersStore, out: io.TextIOBase, status: str | None = None) -> int:
    """Write subscribers as CSV (email, name, status, ...) to `out`; returns the row count.
    Text cells that a spreadsheet would run as a formula are neutralised (`neutralise_cell`)."""
    # CRLF rows (RFC 4180): the csv module quotes a field only for the line terminator's own
    # characters, so with "\n" alone a CR in a name from an older release split the row.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    n = 0
    for sub in store.iter_subscribers(status):
        writer.writerow(
            [
                neutralise_cell(sub.email),
                neutralise_cell(sub.name),
                sub.status,
                sub.source,
                sub.created_at.isoformat(timespec="seconds"),
                sub.confirmed_at.isoformat(timespec="seconds") if sub.confirmed_at else "",
                sub.hard_bounces,
                sub.cadence,
                join_topics(sub.topics),
                sub.max_papers,
            ]
        )
        n += 1
    return n
