"""`python -m tests.fakeclock CLOCK_FILE ARGS...`: `publisher ARGS...` as a real process whose
wall clock is read from CLOCK_FILE (an ISO 8601 moment), through time-machine.

The clock starts at the file's moment and runs at real speed; when the file changes, the clock
jumps to its new moment (read every 10 ms). Only the wall clock moves (time.time, datetime.now,
what APScheduler and the state database see); the monotonic clock, which timeouts and waits
use, stays real. The soak test (tests/test_soak.py) drives `publisher run` through a month this
way. libfaketime was tried first: with the monotonic clock left real, Python's time.sleep fails
under it with EINVAL (its clock_nanosleep wrapper), and with it faked, every timed wait hangs.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from pathlib import Path

import time_machine


def main() -> None:
    clock = Path(sys.argv[1])

    def read() -> dt.datetime:
        return dt.datetime.fromisoformat(clock.read_text().strip())

    current = read()
    coordinates = time_machine.travel(current, tick=True).start()

    def follow() -> None:
        nonlocal current
        while True:
            time.sleep(0.01)
            try:
                moment = read()
            except (OSError, ValueError):  # being rewritten: read it again
                continue
            if moment != current:
                current = moment
                coordinates.move_to(moment)

    threading.Thread(target=follow, name="fakeclock", daemon=True).start()
    sys.argv = ["publisher", *sys.argv[2:]]
    from publisher.cli import main as publisher_main

    publisher_main()


if __name__ == "__main__":
    main()
