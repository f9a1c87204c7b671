"""The ledger writer: group commit of the `sent` rows, done by the workers themselves."""

from __future__ import annotations

import datetime as dt
import threading

from ..state import SentRecorder
from ..state.protocols import LedgerStore


class LedgerWriter:
    """Group commit of `sent` rows on one long-lived connection, done by the workers themselves.

    A worker submits its accepted message and goes on; before letting the server accept its
    next message it calls `wait(ticket)`. If that row is not committed yet, the first worker
    to need it commits everything submitted so far in one transaction while the others wait
    for that commit. No separate writer thread: handing each batch to one and waking the
    workers back cost two thread switches per message, which on a busy machine took longer
    than the commit itself.
    """

    def __init__(self, store: LedgerStore, digest_date: dt.date | None = None) -> None:
        # `digest_date`: the edition every submitted row is of (the recorder's marks may then
        # look in its partition alone).
        self.recorder: SentRecorder = store.sent_recorder(digest_date)
        self.lock = threading.Lock()
        self.committed = threading.Condition(self.lock)  # `done` moved, or an error
        self.pending: list[tuple[int, str, int]] = []
        self.submitted = 0  # tickets handed out: row n of this run has ticket n
        self.done = 0  # every ticket <= done is committed
        self.busy = False  # a worker is committing
        self.error: BaseException | None = None

    def submit(self, entry_id: int, reply: str, attempts: int) -> int:
        with self.lock:
            if self.error is not None:
                raise self.error
            self.pending.append((entry_id, reply, attempts))
            self.submitted += 1
            return self.submitted

    def wait(self, ticket: int) -> None:
        """Return once the row with `ticket` (0: none) is committed, committing it (and every
        other submitted row) if no other worker is; raise if committing failed."""
        with self.committed:
            while self.error is None and self.done < ticket:
                if self.busy:
                    self.committed.wait()
                else:
                    self._commit_locked()
            if self.error is not None:
                raise self.error

    def _commit_locked(self) -> None:
        """Commit what is pending; called and returns with the lock held (released meanwhile)."""
        batch, self.pending = self.pending, []
        upto = self.submitted
        self.busy = True
        self.lock.release()
        error: BaseException | None = None
        try:
            self.recorder.record(batch)
        except BaseException as exc:  # noqa: BLE001 - raised in every waiter
            error = exc
        finally:
            self.lock.acquire()
            self.busy = False
        if error is not None:
            self.error = self.error or error
        else:
            self.done = max(self.done, upto)
        self.committed.notify_all()

    def close(self) -> None:
        """Commit what is submitted (after any commit in progress); `error` says if it failed.
        Called once the workers are done."""
        with self.committed:
            while self.busy:
                self.committed.wait()
            if self.pending and self.error is None:
                self._commit_locked()
        self.recorder.close()
