"""`publisher status` shows per digest the bounce and complaint rates, and warns past 2%
bounces or 0.3% complaints; refusals about us (blocked) count as bounces there."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from publisher.state import Store

from .bounce_helpers import add, arf, cli, dsn, ingest, verp, write_config


def test_status_rates_and_warnings(tmp_path: Path, db_url: str) -> None:
    cfg = write_config(tmp_path, db_url)
    bad_day = dt.date.today() - dt.timedelta(days=1)
    good_day = dt.date.today() - dt.timedelta(days=2)
    readers = [f"r{i}@example.net" for i in range(5)]
    with Store.open(cfg) as store:
        ids = add(store, *readers)
        for day in (bad_day, good_day):
            store.record_publication(day, f"digests/{day}.md", "hash")
        store.update_publication(bad_day, email_status="sent", sent=98, failed=2)
        store.update_publication(good_day, email_status="sent", sent=100, failed=0)
    # bad_day: 2 hard and 1 blocked (a refusal about us) of 100 attempted: 3.0%, above 2%.
    refusals = [
        ("5.1.1", "smtp; 550 5.1.1 User unknown"),
        ("5.1.1", "smtp; 550 5.1.1 User unknown"),
        ("5.7.1", "smtp; 554 5.7.1 Client host blocked using zen.spamhaus.org"),
    ]
    for i, (status, diag) in enumerate(refusals):
        raw = dsn(verp(ids[readers[i]], bad_day), readers[i], status, diag, serial=str(i))
        assert f" {status}: " in ingest(cfg, raw)
    # good_day: 1 hard of 100 (1.0%, no warning) and 1 complaint of 100 sent (1.00% > 0.3%).
    ingest(cfg, dsn(verp(ids[readers[3]], good_day), readers[3], serial="g"))
    line = ingest(cfg, arf(readers[4], verp(ids[readers[4]], good_day)))
    assert "suppressed (complaint)" in line, line
    run = cli(cfg, "status")
    assert run.returncode == 1, run.stderr  # warnings (publisher/health.py): exit 1
    out = run.stdout
    expected = [
        f"  {bad_day}  bounces 3/100 (3.0%: hard 2, soft 0, blocked 1)  complaints 0 (0.00%)",
        f"  warning: {bad_day} bounce rate 3.0% is above 2%",
        f"  {good_day}  bounces 1/100 (1.0%: hard 1, soft 0, blocked 0)  complaints 1 (1.00%)",
        f"  warning: {good_day} complaint rate 1.00% is above 0.3% (Gmail's spam-rate limit)",
    ]
    lines = out.splitlines()
    assert "bounces and complaints:" in lines, out
    start = lines.index("bounces and complaints:") + 1
    assert lines[start : start + 4] == expected, out
