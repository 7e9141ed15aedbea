"""A job attempt's step metrics on their way to the state store, and the checkpoint commits among them.

Rank 0 reports every step; writing each as it comes would be one transaction per step, so the rows are
buffered and written at most every ``FLUSH_SECONDS``. The buffer lives in the job's runner, on the Ray
head: a head loss drops what it holds. Recording a checkpoint commit therefore writes the buffer first,
in that order, so a step the store calls committed always has its metrics: what a head loss can still
drop are only rows of steps after the newest recorded commit, which the next attempt trains again and
records itself.
"""

from __future__ import annotations

import threading

from orchestrator.clock import Clock, SystemClock
from orchestrator.state.store import StateStore

FLUSH_SECONDS = 1.0


class StepLog:
    """Buffers one attempt's step metrics; the only writer of its metric rows and checkpoint records."""

    def __init__(
        self, store: StateStore, job_id: str, attempt: int, clock: Clock | None = None, flush_s: float = FLUSH_SECONDS
    ):
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self.clock = clock or SystemClock()
        self.flush_s = flush_s
        self.pending: list[dict] = []
        self.lock = threading.Lock()
        self.last_flush = self.clock.now()
        self.committed: int | None = None  # the newest checkpoint step recorded in the store

    def add(self, metrics: dict) -> None:
        """One step's metrics, written within ``flush_s`` (or with the next commit, whichever is first)."""
        with self.lock:
            self.pending.append(metrics)

    def commit(self, step: int, announce: bool = True) -> bool:
        """Record checkpoint ``step`` as committed, after writing every buffered row; False if already known."""
        if step == self.committed:
            return False
        self.flush(force=True)
        self.committed = step
        self.store.record_checkpoint(self.job_id, step, announce=announce)
        return True

    def flush(self, force: bool = False) -> None:
        with self.lock:
            if not self.pending or (not force and self.clock.now() - self.last_flush < self.flush_s):
                return
            rows, self.pending = self.pending, []
            self.last_flush = self.clock.now()
        self.store.add_metrics(self.job_id, self.attempt, rows)
