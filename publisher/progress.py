"""How a send's progress is shown: a rich bar on a terminal, log lines otherwise.

`delivery.deliver` reports to any `Progress`; the commands choose the display."""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def grow(self, more: int) -> None: ...  # readers who joined during the send
    def update(self, sent: int, failed: int) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def grow(self, more: int) -> None:
        pass

    def update(self, sent: int, failed: int) -> None:
        pass

    def finish(self) -> None:
        pass


class LogProgress:
    """Plain lines (for logs and pipes), at most one every `every` seconds."""

    def __init__(self, out=None, every: float = 5.0) -> None:  # noqa: ANN001
        self.out = out or sys.stderr
        self.every = every
        self.total = 0
        self.t0 = self.last = 0.0
        self.lock = threading.Lock()

    def start(self, total: int) -> None:
        self.total = total
        self.t0 = self.last = time.monotonic()
        print(f"sending to {total} subscribers", file=self.out, flush=True)

    def grow(self, more: int) -> None:
        self.total += more
        print(f"and to {more} who subscribed during the send", file=self.out, flush=True)

    def update(self, sent: int, failed: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        with self.lock:
            if now - self.last < self.every:
                return
            self.last = now
        done = sent + failed
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate else 0
        print(
            f"{done}/{self.total}: {sent} sent, {failed} failed, {rate:.0f}/s, ETA {eta:.0f}s",
            file=self.out,
            flush=True,
        )

    def finish(self) -> None:
        pass


class RichProgress:
    """A rich progress bar on a terminal: sent, failed, rate, ETA."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as _Progress

        self.bar = _Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sent {task.fields[sent]} failed {task.fields[failed]}"),
            TextColumn("{task.fields[rate]}/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = None
        self.t0 = 0.0

    def start(self, total: int) -> None:
        self.t0 = time.monotonic()
        self.bar.start()
        self.task = self.bar.add_task("send", total=total, sent=0, failed=0, rate="0")

    def grow(self, more: int) -> None:
        total = self.bar.tasks[0].total or 0
        self.bar.update(self.task, total=total + more)

    def update(self, sent: int, failed: int) -> None:
        done = sent + failed
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        self.bar.update(self.task, completed=done, sent=sent, failed=failed, rate=f"{rate:.0f}")

    def finish(self) -> None:
        self.bar.stop()


def default_progress() -> Progress:
    return RichProgress() if sys.stderr.isatty() else LogProgress()
