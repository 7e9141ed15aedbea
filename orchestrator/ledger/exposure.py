"""What a job's gang has been through so far: the infrastructure interruptions it suffered and the
seconds it held its nodes. ``auto`` checkpointing (``checkpoint/policy.py``) and the forecast turn
these into the interruption rate the run has actually seen, combined with the spec's prior.

Why from the ledger and the restart events: both are written by the controller in the transaction
that ends an attempt, so the figures are the same whoever reads them (a new attempt's runner, the
forecast, a restarted controller). Only closed attempts count: an attempt starting now has held
nothing yet, and what an open attempt holds changes by the second.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.lifecycle import RestartKind
from orchestrator.state.store import StateStore


@dataclass(frozen=True)
class Exposure:
    interruptions: int  # restarts of the infrastructure's making (node loss, notice, storage); not crashes
    held_s: float  # seconds the whole gang held its nodes, over the attempts that have ended

    def as_tuple(self) -> tuple[int, float]:
        """``IntervalPolicy.observe_interruptions``'s arguments (and the launch config's form)."""
        return self.interruptions, self.held_s


def infrastructure_restarts(store: StateStore, job_id: str) -> int:
    """The job's restarts after losing nodes, a notice or checkpoint storage (``job.recovering`` events)."""
    return sum(1 for _, kind in store.restarts_since(job_id, 0.0) if kind == RestartKind.INFRASTRUCTURE)


def gang_exposure(store: StateStore, job_id: str, world_size: int) -> Exposure:
    """Interruptions over exposure: the ledger's closed device-seconds divided by the gang's devices."""
    device_s = sum(i.device_hours for i in store.intervals(job_id)) * 3600.0
    return Exposure(infrastructure_restarts(store, job_id), device_s / max(1, world_size))
