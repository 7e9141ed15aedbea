"""The runner's step metrics and checkpoint commits (orchestrator/control/step_log.py) on a real state
store: a step the store calls committed always has its metric row, written before the commit was
recorded, so a head loss (the runner and its buffer gone) can drop only rows of steps after it."""

from __future__ import annotations

from orchestrator.clock import ManualClock
from orchestrator.control.step_log import StepLog
from orchestrator.state.store import StateStore
from tests.helpers.job_rows import bare_job_row


class TickingClock(ManualClock):
    """Each reading is one second after the last: the order of the store's writes shows in their times."""

    def now(self) -> float:
        return self.advance(1.0)


def store_with_job(tmp_path, clock) -> StateStore:
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    store.insert_job(bare_job_row("j"))
    return store


def test_rows_wait_for_the_flush_interval(tmp_path):
    clock = ManualClock(1_800_000_000.0)
    store = store_with_job(tmp_path, clock)
    steps = StepLog(store, "j", 1, clock=clock, flush_s=1.0)
    for step in (1, 2, 3):
        steps.add({"step": step, "loss": 3.0 - step / 10})
        clock.advance(0.2)
        steps.flush()
    assert store.metrics("j") == []  # buffered: one transaction per interval, not per step
    clock.advance(0.5)
    steps.flush()
    assert [m["step"] for m in store.metrics("j")] == [1, 2, 3]


def test_a_commit_is_recorded_after_the_rows_of_every_step_up_to_it(tmp_path):
    clock = TickingClock(1_800_000_000.0)
    store = store_with_job(tmp_path, clock)
    steps = StepLog(store, "j", 1, clock=clock, flush_s=3600.0)  # nothing is due by time alone
    for step in range(1, 6):
        steps.add({"step": step, "loss": 3.0 - step / 10, "checkpoint_step": 4 if step == 5 else None})
    assert store.metrics("j") == []
    assert steps.commit(4) and not steps.commit(4)  # recorded once
    steps.add({"step": 6, "loss": 2.3})
    del steps  # the head is lost: the runner, and the row of step 6 it still held, are gone

    job = store.get_job("j")
    assert job["last_checkpoint_step"] == 4
    rows = store.metrics("j")
    assert [m["step"] for m in rows] == [1, 2, 3, 4, 5]  # every committed step has its row; 6 was never committed
    (committed,) = [e for e in store.events("j") if e["kind"] == "checkpoint.committed"]
    assert max(m["at"] for m in rows) < committed["at"]  # the rows were written before the commit was recorded


def test_an_emergency_commit_flushes_too_and_is_not_announced(tmp_path):
    clock = TickingClock(1_800_000_000.0)
    store = store_with_job(tmp_path, clock)
    steps = StepLog(store, "j", 2, clock=clock, flush_s=3600.0)
    steps.add({"step": 7, "loss": 2.0})
    steps.commit(7, announce=False)
    assert [m["step"] for m in store.metrics_of_attempt("j", 2)] == [7]
    assert store.get_job("j")["last_checkpoint_step"] == 7
    assert not [e for e in store.events("j") if e["kind"] == "checkpoint.committed"]
