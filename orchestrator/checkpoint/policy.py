"""When to checkpoint: every N steps, every M minutes, or ``auto`` (Young/Daly).

``auto`` picks the interval that minimises expected lost time plus storage dollars,
``tau = sqrt(2 C M) - C`` (Daly 2006; Young 1974 without the ``- C``), where C is what one checkpoint
costs the run (the measured step stall of an asynchronous save, plus the save's PUT requests in
seconds of the gang's price) and M the mean time between interruptions of the job's gang, from the
pools' interruption rates in the spec combined with the interruptions observed so far
(``observe_interruptions``: each attempt's runner passes the job's infrastructure interruptions
and the seconds its gang held nodes, from the ledger, ``ledger/exposure.py``; the simulator passes
its own). It never saves more often than ``cost.storage.write_gbps`` sustains. The interval is never
shorter than one save's full duration (only one save is in flight at a time) and is re-evaluated
after every save. Time comes from the clock it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.clock import Clock, ManualClock
from orchestrator.plan.params import model_params
from orchestrator.plan.storage import Checkpointing, checkpoint_bytes, put_requests, steady_storage_usd
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


def request_cost_seconds(spec: JobSpec) -> float:
    """One save's requests (PUT per part, receipts, manifest at ``cost.storage`` prices) in seconds of
    the gang's time: ``auto`` adds it to the stall, so it minimises GPU waste plus storage dollars
    (the GiB-months of the ``keep_last`` checkpoints do not depend on the interval)."""
    params = model_params(spec.model)
    world = spec.resources.nodes * spec.resources.gpus_per_node
    ck = Checkpointing(checkpoint_bytes(params.total + params.mtp), world, spec.checkpoint.retention)
    save_usd = put_requests(ck, spec.cost.storage) / 1000 * spec.cost.storage.put_per_1000_usd
    gang_usd_per_s = (
        sum(take * spec.resources.gpus_per_node * spec.pool_price(pool) for pool, take in spec.pools_used()) / 3600.0
    )
    return save_usd / gang_usd_per_s if gang_usd_per_s > 0 else 0.0


def bandwidth_floor_seconds(spec: JobSpec) -> float:
    """The shortest interval that keeps sustained checkpoint writes within ``cost.storage.write_gbps``."""
    gbps = spec.cost.storage.write_gbps
    if not gbps:
        return 0.0
    params = model_params(spec.model)
    return checkpoint_bytes(params.total + params.mtp) / (gbps * 1e9)


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
    observed_mtbf_s: float | None = None  # set by observe_interruptions
    _floors: tuple[float, float] | None = None

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
        mtbf = self.mtbf_s()
        if self._floors is None:  # (request cost in seconds, bandwidth floor): fixed for the spec
            self._floors = (request_cost_seconds(self.spec), bandwidth_floor_seconds(self.spec))
        requests_s, floor_s = self._floors
        if self.save_cost_s is None:
            tau = DEFAULT_AUTO_SECONDS if math.isinf(mtbf) else min(DEFAULT_AUTO_SECONDS, mtbf / 2)
            return max(tau, floor_s)
        tau = young_daly_interval(self.save_cost_s + requests_s, mtbf)
        if math.isinf(tau):
            tau = DEFAULT_AUTO_SECONDS
        return max(tau, self.save_duration_s or 0.0, floor_s)

    def mtbf_s(self) -> float:
        """The gang's mean time between interruptions ``auto`` uses: observed (with the prior) once
        ``observe_interruptions`` was told, else the spec's rates alone (inf: none expected)."""
        return self.observed_mtbf_s or gang_mtbf_seconds(self.spec)

    def observe_interruptions(self, interruptions: int, exposure_s: float, prior_s: float = 86400.0) -> None:
        """The gang's MTBF from the interruptions the run has seen over ``exposure_s`` of holding its
        nodes, combined with the spec's rate (Gamma-Poisson: the spec's rate worth ``prior_s`` of
        exposure): ``auto`` then follows the failures the run actually sees."""
        prior_rate = 1.0 / gang_mtbf_seconds(self.spec)
        events = prior_rate * prior_s + interruptions
        self.observed_mtbf_s = (prior_s + exposure_s) / events if events > 0 else None

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

    def saved(self, step: int, stall_s: float | None, duration_s: float | None = None) -> None:
        """A save started at ``step``; ``stall_s``/``duration_s``: the latest measured save's cost
        (None when nothing new was measured, e.g. the first save of an attempt)."""
        self.last_step, self.last_time = step, self.clock.now()
        if stall_s is not None:
            self.save_cost_s = stall_s if self.save_cost_s is None else 0.7 * self.save_cost_s + 0.3 * stall_s
        if duration_s is not None:
            self.save_duration_s = duration_s


SNAPSHOT_GBPS = 10.0  # device to host, per device: the stall of an asynchronous save (as orch simulate assumes)


def planned_checkpoints(spec: JobSpec, days: float, total_steps: int, interval_s: float | None = None) -> dict:
    """What checkpointing costs over ``days`` at ``interval_s`` (default: the interval the policy would
    choose for the spec's interruption rates before anything is measured, with the stall of a
    snapshot at ``SNAPSHOT_GBPS``): saves, requests, storage, and what is kept after the run."""
    params = model_params(spec.model)
    world = spec.resources.nodes * spec.resources.gpus_per_node
    ck = Checkpointing(checkpoint_bytes(params.total + params.mtp), world, spec.checkpoint.retention)
    if interval_s is None:
        policy = IntervalPolicy(spec, ManualClock(0.0), save_cost_s=ck.shard_bytes / (SNAPSHOT_GBPS * 1e9))
        interval_s = policy.interval_seconds()
    lines = steady_storage_usd(ck, spec.cost.storage, interval_s, days * SECONDS_PER_DAY, total_steps)
    return {
        "interval_s": interval_s,
        "days": days,
        "saves": lines["checkpoints"],
        "checkpoint_bytes": ck.checkpoint_bytes,
        "requests_usd": lines["checkpoint_puts"]["cost_usd"],
        "storage_usd": lines["checkpoint_storage"]["cost_usd"],
        "cost_usd": lines["cost_usd"],
        "kept_after_usd_per_month": lines["retained"]["usd_per_month"],
        "write_gbps": ck.checkpoint_bytes / interval_s / 1e9 if interval_s > 0 else None,
    }
