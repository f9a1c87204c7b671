"""Reader choice stored: `subscribers set`, the CSV's cadence/topics/max_papers columns (export
then import round-trips; a choice made on the web wins over the CSV), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from publisher.config import Config, load_config
from publisher.state import ChoiceUpdate, Store
from publisher.subscribers import export_csv, import_csv

from .conftest import one_error_line, run_publisher
from .pg import state_toml

TOPICS = """
[topics.efficiency]
label = "효율화·양자화"
match = ["quantiz", "양자화"]

[topics.agents]
label = "에이전트"
match = ["agent", "에이전트"]

[topics.rl]
label = "강화학습"
match = ["reinforcement"]
"""


def write_config(tmp: Path, db_url: str, extra: str = "") -> Config:
    (tmp / "config.toml").write_text(
        '[site]\nlanguage = "ko"\n[subscribers]\nfile = "subs.csv"\n'
        + extra
        + state_toml(db_url)
        + TOPICS,
        encoding="utf-8",
    )
    return load_config(tmp / "config.toml")


def test_subscribers_set_stores_a_choice_and_refuses_unknown_names(
    tmp_path: Path, db_url: str
) -> None:
    cfg = write_config(tmp_path, db_url)
    conf = str(cfg.path)
    with Store.open(cfg) as store:
        store.add_subscriber("ada@example.org", "Ada")
        assert store.get("ada@example.org").cadence == "daily"
    r = run_publisher(
        "subscribers", "set", "ada@example.org", "--cadence", "weekly",
        "--topics", "agents,efficiency", "--max", "10", "--config", conf,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ada@example.org: 주간 · 효율화·양자화, 에이전트 · 상위 10편"
    with Store.open(cfg) as store:
        sub = store.get("ada@example.org")
        assert (sub.cadence, sub.topics, sub.max_papers) == (
            "weekly",
            frozenset({"agents", "efficiency"}),
            10,
        )
        assert sub.choice_source == "cli"
    r = run_publisher("subscribers", "set", "ada@example.org", "--all-topics", "--config", conf)
    assert r.stdout.strip() == "ada@example.org: 주간 · 모든 주제 · 상위 10편"
    assert "unknown topic 'robots'" in one_error_line(
        run_publisher(
            "subscribers", "set", "ada@example.org", "--topics", "robots", "--config", conf
        )
    )
    assert "unknown cadence 'hourly'" in one_error_line(
        run_publisher(
            "subscribers", "set", "ada@example.org", "--cadence", "hourly", "--config", conf
        )
    )
    assert "no subscriber nobody@example.org" in one_error_line(
        run_publisher("subscribers", "set", "nobody@example.org", "--max", "3", "--config", conf)
    )
    with Store.open(cfg) as store:  # the refused commands changed nothing
        sub = store.get("ada@example.org")
        assert (sub.cadence, sub.topics, sub.max_papers) == ("weekly", frozenset(), 10)


CSV = (
    "email,name,cadence,topics,max_papers\r\n"
    "a@example.org,A,daily,,0\r\n"
    "b@example.org,B,weekly,agents;rl,10\r\n"
    "c@example.org,C,paused,efficiency,0\r\n"
    "d@example.org,D,,,\r\n"
    "e@example.org,E,hourly,,\r\n"
    "f@example.org,F,daily,robots,\r\n"
    "g@example.org,G,daily,,ten\r\n"
)


def _choices(store: Store) -> dict[str, tuple[str, str, str, int]]:
    return {
        s.email: (s.name, s.cadence, ";".join(sorted(s.topics)), s.max_papers)
        for s in store.iter_subscribers()
    }


def test_csv_choice_columns_import_report_bad_cells_and_round_trip(
    tmp_path: Path, db_url: str
) -> None:
    cfg = write_config(tmp_path, db_url)
    cfg.subscribers.file.write_text(CSV, encoding="utf-8")
    with Store.open(cfg) as store:
        report = import_csv(cfg, store)
        path = cfg.subscribers.file.resolve()
        assert [p.split(": ", 1)[0] for p in report.invalid] == [
            f"{path}:6",
            f"{path}:7",
            f"{path}:8",
        ]
        assert "cadence must be daily, weekly or paused, not 'hourly'" in report.invalid[0]
        assert "unknown topic 'robots'" in report.invalid[1]
        assert "max_papers must be a whole number" in report.invalid[2]
        first = _choices(store)
        assert first == {
            "a@example.org": ("A", "daily", "", 0),
            "b@example.org": ("B", "weekly", "agents;rl", 10),
            "c@example.org": ("C", "paused", "efficiency", 0),
            "d@example.org": ("D", "daily", "", 0),
        }
        out = io.StringIO()
        export_csv(store, out)
    exported = out.getvalue()
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert rows[1]["topics"] == "agents;rl" and rows[1]["max_papers"] == "10"
    assert rows[2]["cadence"] == "paused"

    # The export, imported into a fresh database, gives the same choices, and exports the same.
    other = tmp_path / "other"
    other.mkdir()
    cfg2 = write_config(other, f"sqlite:///{other}/state.sqlite3")
    cfg2.subscribers.file.write_text(exported, encoding="utf-8")
    with Store.open(cfg2) as store:
        assert import_csv(cfg2, store).invalid == ()
        assert _choices(store) == first
        again = io.StringIO()
        export_csv(store, again)

    def choice_columns(text: str) -> list[tuple[str, ...]]:
        keep = ("email", "name", "status", "cadence", "topics", "max_papers")
        return [tuple(r[k] for k in keep) for r in csv.DictReader(io.StringIO(text))]

    assert choice_columns(again.getvalue()) == choice_columns(exported)


def test_a_csv_sync_never_overwrites_a_choice_made_on_the_web(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    cfg.subscribers.file.write_text(
        "email,name,cadence,topics,max_papers\n"
        "web@example.org,W,daily,,0\n"
        "ops@example.org,O,daily,,0\n",
        encoding="utf-8",
    )
    with Store.open(cfg) as store:
        import_csv(cfg, store)
        store.set_choice(
            "web@example.org",
            ChoiceUpdate(cadence="weekly", topics=frozenset({"agents"}), max_papers=5),
            source="web",
        )
        # The operator edits both rows in the CSV: only the reader without a web choice follows.
        cfg.subscribers.file.write_text(
            "email,name,cadence,topics,max_papers\n"
            "web@example.org,W,paused,rl,3\n"
            "ops@example.org,O,weekly,rl,3\n",
            encoding="utf-8",
        )
        import_csv(cfg, store)
        web, ops = store.get("web@example.org"), store.get("ops@example.org")
        assert (web.cadence, web.topics, web.max_papers) == ("weekly", {"agents"}, 5)
        assert web.choice_source == "web"
        assert (ops.cadence, ops.topics, ops.max_papers) == ("weekly", {"rl"}, 3)
        assert ops.choice_source == "csv"
        # A CSV without the choice columns leaves every choice as it is.
        cfg.subscribers.file.write_text(
            "email,name\nweb@example.org,W\nops@example.org,O\n", encoding="utf-8"
        )
        import_csv(cfg, store)
        ops = store.get("ops@example.org")
        assert (ops.cadence, ops.topics, ops.max_papers) == ("weekly", {"rl"}, 3)
