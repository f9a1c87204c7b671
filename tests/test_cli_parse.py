"""`publisher parse` as a user runs it: a real subprocess, its stdout, stderr and exit status."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import ROOT
from .conftest import run_publisher as run

SAMPLE = ROOT / "digests" / "2024" / "05" / "15.md"


def test_parse_prints_one_line_per_digest() -> None:
    r = run("parse", str(SAMPLE))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == [
        "2024-05-15",
        "8",
        "papers",
        "0",
        "warnings",
        str(SAMPLE),
    ]


def test_parse_json(tmp_path: Path) -> None:
    r = run("parse", "--json", str(SAMPLE))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert len(data) == 1 and data[0]["date"] == "2024-05-15"
    first = data[0]["papers"][0]
    assert set(first) >= {"title", "url", "arxiv_id", "votes", "authors", "bullets"}
    assert first["arxiv_id"] == "2405.08054" and first["votes"] == 6


def test_not_a_digest_is_one_line_and_exit_1_after_reporting_every_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.md"
    bad.write_text("# Shopping list\n- milk\n", encoding="utf-8")
    r = run("parse", str(bad), str(SAMPLE))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: {bad}:1: not a digest: no '## Daily Papers (YYYY-MM-DD)' header"
    ]
    assert "Traceback" not in r.stderr
    assert "2024-05-15" in r.stdout  # the good file after the bad one is still reported
