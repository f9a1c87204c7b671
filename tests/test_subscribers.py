"""CSV import (sync rule, validation with file:line) and the `subscribers` commands."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from publisher.cli import cli
from publisher.config import load_config
from publisher.state import Store
from publisher.subscribers import SubscriberFileError, import_csv

from .conftest import one_error_line, run_publisher
from .pg import state_toml


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Path:
    """A config.toml with the CSV file and the state database (each backend in turn)."""
    (tmp_path / "config.toml").write_text('[subscribers]\nfile = "subs.csv"\n' + state_toml(db_url))
    return tmp_path


def write_csv(project: Path, text: str) -> Path:
    path = project / "subs.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_invalid_rows_are_reported_with_file_and_line_and_skipped(project: Path) -> None:
    path = write_csv(
        project,
        "email,name,team\n"
        "ada@example.com,Ada,x\n"
        "not-an-address,Nobody,y\n"
        "ADA@EXAMPLE.COM,,z\n"
        '"grace@example.com","Grace\nHopper",w\n'
        "alan@exa mple.com,Alan,v\n",
    )
    cfg = load_config(project / "config.toml")
    with Store.open(cfg) as store:
        report = import_csv(cfg, store)
        assert report.added == 2 and report.duplicates == 1
        assert len(report.invalid) == 2
        assert report.invalid[0].startswith(f"{path}:3: 'not-an-address'")
        # Line numbers count physical lines: the quoted name spans lines 5-6.
        assert report.invalid[1].startswith(f"{path}:7: 'alan@exa mple.com'")
        assert store.get("ada@example.com").name == "Ada"
        assert store.get("grace@example.com").name == "Grace Hopper"  # line break: a space


def test_missing_email_column_is_an_error_naming_the_file(project: Path) -> None:
    path = write_csv(project, "mail,name\nada@example.com,Ada\n")
    cfg = load_config(project / "config.toml")
    with Store.open(cfg) as store, pytest.raises(SubscriberFileError, match=f"{path}:1: .*email"):
        import_csv(cfg, store)


def test_sync_rule_keeps_unsubscribed_and_marks_deleted_rows_removed(project: Path) -> None:
    write_csv(project, "email,name\na@example.com,A\nb@example.com,B\nc@example.com,C\n")
    cfg = load_config(project / "config.toml")
    with Store.open(cfg) as store:
        import_csv(cfg, store)
        store.add_subscriber("web@example.com", "W", source="web")
        store.unsubscribe("b@example.com")
        # c's row deleted; b still listed; web-form subscribers are not the CSV's business.
        write_csv(project, "email,name\na@example.com,A2\nb@example.com,B\n")
        report = import_csv(cfg, store)
        assert report.removed == 1
        statuses = {e: store.get(f"{e}@example.com").status for e in ("a", "b", "c", "web")}
        assert statuses == {
            "a": "active",
            "b": "unsubscribed",
            "c": "removed",
            "web": "active",
        }
        assert store.get("a@example.com").name == "A2"
        # The row comes back: the CSV's own removal is undone; the unsubscribe never is.
        write_csv(project, "email,name\na@example.com,A\nb@example.com,B\nc@example.com,C\n")
        report = import_csv(cfg, store)
        assert report.reactivated == 1
        assert store.get("c@example.com").status == "active"
        assert store.get("b@example.com").status == "unsubscribed"
        # Unchanged file: skipped.
        assert import_csv(cfg, store).skipped_unchanged


def test_cli_commands(project: Path) -> None:
    write_csv(project, "email,name\nada@example.com,Ada\nbad,Bad\n")
    runner = CliRunner()
    cfg = ["--config", str(project / "config.toml")]
    res = runner.invoke(cli, ["subscribers", "import", *cfg])
    assert res.exit_code == 1
    assert "subs.csv:3:" in res.output and "1 added" in res.output
    res = runner.invoke(cli, ["subscribers", "add", "Grace@Example.com", "--name", "Grace", *cfg])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["subscribers", "remove", "ada@example.com", *cfg])
    assert res.exit_code == 0 and "unsubscribed" in res.output
    # The error path through the entry point (`main`): one line naming the way out, exit 1.
    r = run_publisher("subscribers", "add", "ada@example.com", *cfg)
    assert "--resubscribe" in one_error_line(r)
    res = runner.invoke(cli, ["subscribers", "list", *cfg])
    assert "grace@example.com\tactive\tcli\tGrace" in res.output
    assert "active: 1, pending: 0, unsubscribed: 1" in res.output
    res = runner.invoke(cli, ["subscribers", "export", *cfg])
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert {r["email"]: r["status"] for r in rows} == {
        "ada@example.com": "unsubscribed",
        "grace@example.com": "active",
    }
