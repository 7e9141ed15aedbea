"""When to checkpoint: every N steps, every M minutes, or ``auto`` (Young/Daly).

``auto`` picks the interval that minimises expected lost time, ``tau = sqrt(2 C M) - C`` (Daly 2006;
Young 1974 without the ``- C``), where C is what one checkpoint costs the run (the measured step
stall of an asynchronous save) and M the mean time between interruptions of the job's gang, from
the pools' interruption rates in the spec or the rate observed so far. The interval is never
shorter than one save's full duration (only one save is in flight at a time) and is re-evaluated
after every save. Time comes from the clock it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.clock import Clock
from orchestrator.spec.schema import CheckpointInterval, JobSpec

SECONDS_PER_DAY = 86400.0
DEFAULT_AUTO_SECONDS = 1800.0  # before anything was measured, and with no interruption rate known


def young_daly_interval(cost_s: float, mtbf_s: float) -> float:
    """The checkpoint interval minimising expected waste for save cost C and MTBF M."""
    if cost_s <= 0:
        cost_s = 1e-3
    if mtbf_s <= 0 or math.isinf(mtbf_s):
        return math.inf
    if cost_s >= 2 * mtbf_s:
        return mtbf_s
    return math.sqrt(2 * cost_s * mtbf_s) - cost_s


def gang_mtbf_seconds(spec: JobSpec) -> float:
    """Mean time between interruptions of the job's nodes, from the spec's per-pool rates."""
    rate = sum(take * pool.interruptions_per_node_day for pool, take in spec.pools_used()) / SECONDS_PER_DAY
    return math.inf if rate == 0 else 1.0 / rate


@dataclass
class IntervalPolicy:
    spec: JobSpec
    clock: Clock
    last_step: int = 0
    last_time: float | None = None
    save_cost_s: float | None = None  # measured stall per save
    save_duration_s: float | None = None  # measured time until commit
    observed_mtbf_s: float | None = None

    def due(self, step: int) -> bool:
        now = self.clock.now()
        if self.last_time is None:
            self.last_time = now
        interval = self.spec.checkpoint.interval
        if isinstance(interval, CheckpointInterval) and interval.steps is not None:
            return step - self.last_step >= interval.steps
        return now - self.last_time >= self.interval_seconds()

    def interval_seconds(self) -> float:
        interval = self.spec.checkpoint.interval
        if isinstance(interval, CheckpointInterval):
            return (interval.minutes or 0.0) * 60.0
        mtbf = self.observed_mtbf_s or gang_mtbf_seconds(self.spec)
        if self.save_cost_s is None:
            return DEFAULT_AUTO_SECONDS if math.isinf(mtbf) else min(DEFAULT_AUTO_SECONDS, mtbf / 2)
        tau = young_daly_interval(self.save_cost_s, mtbf)
        if math.isinf(tau):
            tau = DEFAULT_AUTO_SECONDS
        return max(tau, self.save_duration_s or 0.0)

    def measured(self) -> dict:
        """What this attempt learned about saves, kept in the checkpoint so the next attempt starts
        from it rather than from the default (a run restarted every hour would otherwise spend its
        first half hour of every attempt on the default interval)."""
        return {"save_cost_s": self.save_cost_s, "save_duration_s": self.save_duration_s}

    def resume(self, step: int, measured: dict | None) -> None:
        """Continue after a restart from ``step``, with what the checkpoint recorded of save costs."""
        self.last_step, self.last_time = step, self.clock.now()
        if measured:
            if self.save_cost_s is None and measured.get("save_cost_s") is not None:
                self.save_cost_s = float(measured["save_cost_s"])
            if self.save_duration_s is None and measured.get("save_duration_s") is not None:
                self.save_duration_s = float(measured["save_duration_s"])

    def saved(self, step: int, stall_s: float, duration_s: float | None = None) -> None:
        self.last_step, self.last_time = step, self.clock.now()
        self.save_cost_s = stall_s if self.save_cost_s is None else 0.7 * self.save_cost_s + 0.3 * stall_s
        if duration_s is not None:
            self.save_duration_s = duration_s
