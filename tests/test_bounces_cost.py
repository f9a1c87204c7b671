"""What one hostile message costs (issue 22, "Cost"): anyone can mail the bounce address, and
a Postfix pipe or `bounces fetch` reads one message at a time, so one message must not stall
the rest. Each shape is 10 MB (the default `max_message_bytes`) and goes through
`publisher bounces import` as a subprocess; the timeout is a hang guard (before the fix the
qmail list and the deep nesting ran for many minutes), not a measure of speed. Also: a message
imported before is not parsed again, and a kept message is cut at `keep_raw_bytes`."""

from __future__ import annotations

from pathlib import Path

import pytest

from publisher.bounces import intake as intake_module
from publisher.bounces.intake import Intake, read_paths
from publisher.state import Store

from .bounce_helpers import ADVERSARIAL, SECRET, cli, dsn, events, qmail_list, write_config

GUARD_SECONDS = 90  # far above the few seconds it takes; only there so a regression fails


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state/publisher.sqlite3"


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_a_10_mb_hostile_message_is_dealt_with_quickly(tmp_path: Path, shape: str) -> None:
    cfg = write_config(tmp_path, _sqlite(tmp_path))
    raw = ADVERSARIAL[shape]()
    assert 9_000_000 <= len(raw) <= 10_000_000 + 500_000, len(raw)
    path = tmp_path / f"{shape}.eml"
    path.write_bytes(raw)
    cfg.path.write_text(
        cfg.path.read_text().replace("[bounces]\n", "[bounces]\nmax_message_bytes = 11000000\n")
    )
    import subprocess
    import sys

    from .bounce_helpers import _env

    run = subprocess.run(
        [sys.executable, "-m", "publisher.cli", "bounces", "import", "--config", str(cfg.path)]
        + [str(path)],
        capture_output=True,
        text=True,
        timeout=GUARD_SECONDS,
        env=_env(),
    )
    assert run.returncode == 0, run.stderr
    summary = run.stdout.splitlines()[-1]
    assert summary.startswith("1 messages: "), run.stdout
    listed = events(cfg)
    if shape in ("qmail_list", "dsn_many_recipients", "many_parts"):
        # the scan stops at the cap: 20 recipients, tied to nobody (no VERP token); a
        # multipart of small notices naming addresses reads as a bounce in text, capped too
        assert len(listed) == 20 and {e["kind"] for e in listed} == {"unverified"}, listed
    elif shape == "huge_diagnostic":
        (event,) = listed
        assert event["reported_kind"] == "hard" and len(event["reason"]) <= 500
    elif shape == "deep_nesting":
        assert "MIME boundaries" in run.stdout and "1 unusable" in summary, run.stdout
    else:
        assert "1 not bounces" in summary, run.stdout


def test_a_message_imported_before_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, _sqlite(tmp_path))
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.eml").write_bytes(
            dsn("bounces@x.example", f"r{n}@example.net", serial=str(n))
        )
    with Store.open(cfg) as store:
        intake = Intake(cfg, store, [SECRET.encode()])
        first = list(intake.run(read_paths([str(folder)], intake.max_bytes)))
        assert [o.status for o in first] == ["recorded"] * 3

        def no_parsing(*args: object) -> object:
            raise AssertionError("a known message was parsed")

        monkeypatch.setattr(intake_module, "message_from_bytes", no_parsing)
        again = list(intake.run(read_paths([str(folder)], intake.max_bytes)))
        assert [o.status for o in again] == ["duplicate"] * 3
        one = intake.process((folder / "1.eml").read_bytes(), "again")
        assert one.status == "duplicate", one.line


def test_a_kept_message_is_cut_at_keep_raw_bytes_with_a_note(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, _sqlite(tmp_path), keep_raw_bytes=4096)
    raw = qmail_list(200_000)
    run = cli(cfg, "bounces", "import", "-", stdin=raw)
    assert run.returncode == 0, run.stderr
    first = events(cfg)[0]
    shown = cli(cfg, "bounces", "show", str(first["id"]))
    assert shown.returncode == 0, shown.stderr
    kept, _, note = shown.stdout.rpartition("\n\n[publisher: truncated:")
    assert kept == raw[:4096].decode()
    assert note.startswith(f" the first 4096 of {len(raw)} bytes are kept"), note
    with Store.open(cfg) as store, store.engine.connect() as conn:
        import sqlalchemy as sa

        assert conn.execute(sa.text("SELECT size FROM bounce_messages")).scalar() == len(raw)
