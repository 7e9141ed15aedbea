"""One decision per save, taken collectively: every rank saves exactly the same steps.

Why: with ``minutes`` or ``auto``, a rank deciding from its own clock and its own measured stall
saves at its own steps; rank 0's commit then waits for receipts that never come. Here only rank 0's
interval policy proposes a save; one all-reduce (MAX) per step carries its proposal to every rank,
together with the gang's slowest stall and save duration of the previous save, which every rank then
feeds to its policy (so the cost the ``auto`` interval uses is the gang's, not rank 0's). Emergency
saves on notice come through the directive every rank already receives from rank 0 (a broadcast);
both paths end in the same ``SaveDecision``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from orchestrator.checkpoint.policy import IntervalPolicy

ReduceMax = Callable[[list[float]], list[float]]  # element-wise MAX over every rank, same on all


@dataclass(frozen=True)
class SaveDecision:
    step: int
    kind: str  # "interval" | "emergency" | "final"
    deadline: float | None = None  # epoch seconds: commit before it or abandon


class CollectiveSchedule:
    """Rank 0 proposes, the all-reduce decides; the same on every rank."""

    def __init__(self, policy: IntervalPolicy, rank: int, reduce_max: ReduceMax):
        self.policy, self.rank, self.reduce_max = policy, rank, reduce_max
        self._stall: float | None = None  # of this rank's previous save, not yet shared
        self._duration: float | None = None

    def measured(self, stall_s: float | None, duration_s: float | None) -> None:
        """This rank's figures for its latest save, shared at the next decision."""
        if stall_s is not None:
            self._stall = stall_s
        if duration_s is not None:
            self._duration = duration_s

    def decide(self, step: int) -> SaveDecision | None:
        """Called by every rank after every step, in the same order (it is a collective)."""
        proposal = 1.0 if self.rank == 0 and self.policy.due(step) else 0.0
        due, stall, duration = self.reduce_max([proposal, _or_minus(self._stall), _or_minus(self._duration)])
        if not due:
            return None
        self._stall = self._duration = None
        self.policy.saved(step, stall if stall >= 0 else None, duration if duration >= 0 else None)
        return SaveDecision(step, "interval")


def _or_minus(value: float | None) -> float:
    return -1.0 if value is None else float(value)
