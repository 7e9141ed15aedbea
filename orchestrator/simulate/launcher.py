"""The simulated launcher: the controller's ``Launcher`` seam over ``SimulatedAttempt``s.

``start`` begins an attempt from the job's last committed checkpoint after the restart (and, when
resuming, restore) time; what the attempt did is written to the state store the way a real
runner writes it (step metrics, progress, committed step, outcome), so the controller and the
ledger cannot tell the difference.
"""

from __future__ import annotations

from typing import Callable

from orchestrator.clock import ManualClock
from orchestrator.control.directives import CHECKPOINT_STOP
from orchestrator.simulate.attempt import SimulatedAttempt
from orchestrator.simulate.costs import RunCosts
from orchestrator.simulate.timeline import StepTimeline
from orchestrator.spec.schema import JobSpec
from orchestrator.state.store import StateStore


class SimulatedLauncher:
    def __init__(self, store: StateStore, clock: ManualClock, spec: JobSpec, timeline: StepTimeline,
                 costs: RunCosts, on_ready: Callable[[float], None], on_stop: Callable[[float], None]):
        self.store, self.clock, self.spec = store, clock, spec
        self.timeline, self.costs, self.on_ready, self.on_stop = timeline, costs, on_ready, on_stop
        self.attempts: dict[str, SimulatedAttempt] = {}
        self.checkpoint_costs: dict[str, dict | None] = {}  # per job: as its newest checkpoint recorded them
        self.saves = 0

    def start(self, job: dict, attempt: int) -> None:
        resume = job["last_checkpoint_step"] or 0
        ready = self.clock.now() + self.costs.restart_s + (self.costs.restore_s if resume else 0.0)
        self.attempts[job["id"]] = SimulatedAttempt(job["id"], attempt, tuple(job["assignment"]), resume, ready,
                                                    self.timeline, self.costs, self.spec,
                                                    self.checkpoint_costs.get(job["id"]))
        self.on_ready(ready)

    def status(self, job: dict) -> dict | None:
        run = self.attempts.get(job["id"])
        if run is None or run.attempt != job["attempt"]:
            return None
        return {"phase": "running" if self.clock.now() >= run.ready_at else "starting", "attempt": run.attempt}

    def request(self, job: dict, directive: str, deadline: float | None = None) -> bool:
        """Stop now, or checkpoint and stop (by ``deadline``); whether a checkpoint-and-stop was begun."""
        run = self.attempts.get(job["id"])
        if run is None or run.outcome is not None or run.pending_stop is not None:
            return False  # gone, ended, or already stopping (an earlier deadline stands)
        now = self.clock.now()
        run.advance(now)
        if run.outcome is not None:
            return False
        if directive == CHECKPOINT_STOP:
            ends = run.save_and_stop(now, deadline if deadline else float("inf"), "")
            if ends is not None:
                self.on_stop(ends)
                return True
            return False  # cannot commit in time: it trains on until the node goes
        run.stop(now)
        self.record(run)
        return False

    def release(self, job: dict) -> None:
        run = self.attempts.pop(job["id"], None)
        if run is not None:
            self.saves += run.saves
            self.checkpoint_costs[job["id"]] = run.committed_measure

    def running(self) -> list[SimulatedAttempt]:
        return list(self.attempts.values())

    def record(self, run: SimulatedAttempt) -> None:
        """Write what the attempt did, as a runner would when its attempt ends."""
        self.store.add_metrics(run.job_id, run.attempt, run.step_records())
        self.store.update_job(run.job_id, last_checkpoint_step=run.committed or None,
                              outcome=run.outcome.as_row(run.attempt))
