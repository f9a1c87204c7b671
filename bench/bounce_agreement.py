"""How the bounce reader agrees with the expected reading of the samples in
tests/fixtures/bounces (tests/fixtures/bounces_expected.tsv: recipient, kind and Sisimai's
cause for each), as the issue's figures: hard bounces found, soft or policy refusals taken for
hard, complaints found, auto-replies counted, cause agreement.

    python bench/bounce_agreement.py [--samples DIR] [--table FILE]

These are our own samples, written from each system's documented format, and the test suite
asserts them one by one: the figures say what the samples cover, not how a held-out set of
real bounces would fare. Run it on an older checkout (PYTHONPATH) to compare.
"""

from __future__ import annotations

import argparse
from email import message_from_bytes
from pathlib import Path

from publisher.bounces.parse import analyse

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=Path, default=ROOT / "bounces")
    ap.add_argument("--table", type=Path, default=ROOT / "bounces_expected.tsv")
    args = ap.parse_args()
    rows = [
        line.split("\t")
        for line in args.table.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    read: dict[str, dict[str, tuple[str, str]]] = {}
    report_kind: dict[str, str] = {}
    for name in {r[0] for r in rows}:
        raw = (args.samples / name).read_bytes()
        report = analyse(message_from_bytes(raw), raw)
        report_kind[name] = report.kind
        read[name] = {f.email: (f.kind, getattr(f, "cause", "")) for f in report.failures}
    hard = soft = complaints = vacations = 0
    hard_found = soft_as_hard = complaints_found = vacations_counted = 0
    causes = cause_agree = 0
    for name, _fmt, _report, rcpt, kind, cause, _status in rows:
        got_kind, got_cause = read[name].get(rcpt, ("", ""))
        if cause == "vacation":
            vacations += 1
            vacations_counted += report_kind[name] != "ignored"
        if rcpt == "-":
            continue
        causes += 1
        cause_agree += got_cause == cause
        if kind == "hard":
            hard += 1
            hard_found += got_kind == "hard"
        elif kind in ("soft", "blocked"):
            soft += 1
            soft_as_hard += got_kind == "hard"
        elif kind == "complaint":
            complaints += 1
            complaints_found += got_kind == "complaint"

    def pct(n: int, d: int) -> str:
        return f"{100 * n / d:.0f}% ({n}/{d})" if d else "n/a"

    print(f"samples:                      {len(read)} messages, {causes} failed recipients")
    print(f"hard bounces found as hard:   {pct(hard_found, hard)}")
    print(f"soft/policy taken for hard:   {pct(soft_as_hard, soft)}")
    print(f"complaints found:             {pct(complaints_found, complaints)}")
    print(f"auto-replies counted:         {pct(vacations_counted, vacations)}")
    print(f"cause agreeing:               {pct(cause_agree, causes)}")
    print("(our own samples, not a held-out set of real bounces)")


if __name__ == "__main__":
    main()
