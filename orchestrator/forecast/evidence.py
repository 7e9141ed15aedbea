"""What a live job has shown so far, read from the state store: the forecast's inputs.

Everything here is measured where the run has measured it and taken from the spec and plan where
it has not, and each figure says which (``source``):

- step times: per phase, the ratio of measured to planned seconds for the same steps (step metrics,
  folded simulator records included), median over records; a phase not reached yet takes the
  ratio of the latest measured phase;
- interruptions: per pool, a Gamma-Poisson posterior. The spec's ``interruptions_per_node_day`` is
  the prior mean, worth ``prior_days`` days of the gang's exposure (shape ``r0 x n x prior_days``,
  rate ``n x prior_days`` node-days); the job's infrastructure restarts are the observed count over
  the gang's held node-days. Restarts are apportioned to pools by prior weight (the events of every
  provider do not name the pool), or by nodes when no pool has a prior rate;
- recovery: the ledger's recovery device-hours per restart (restart, restore and the tail before
  the release, as held); the wait for replacement nodes from the job's transitions (recovering ->
  placing); before any restart, the simulator's defaults;
- saves: the mean measured checkpoint stall; the interval from the real ``IntervalPolicy`` given
  the observed gang MTBF.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from orchestrator.checkpoint.policy import IntervalPolicy
from orchestrator.clock import ManualClock
from orchestrator.ledger.exposure import infrastructure_restarts
from orchestrator.ledger.report import job_cost
from orchestrator.lifecycle import JobState, RestartKind
from orchestrator.plan.costs import scenario_costs
from orchestrator.plan.planner import make_plan
from orchestrator.plan.scenario import Scenario
from orchestrator.plan.storage import Checkpointing, put_requests
from orchestrator.plan.timeline import StepTimeline, build_timeline
from orchestrator.spec.loader import validate_mapping
from orchestrator.spec.schema import CheckpointInterval
from orchestrator.state.store import StateStore

DAY = 86400.0


@dataclass(frozen=True)
class PoolEvidence:
    name: str
    kind: str
    nodes: int  # of the job's gang
    price_per_device_hour: float
    prior_rate: float  # per node-day, from the spec
    observed: float  # interruptions apportioned to this pool
    exposure_node_days: float
    prior_node_days: float

    @property
    def shape(self) -> float:
        return self.prior_rate * self.prior_node_days + self.observed

    @property
    def rate(self) -> float:
        return self.prior_node_days + self.exposure_node_days

    @property
    def posterior_mean(self) -> float:
        return self.shape / self.rate if self.rate > 0 else self.prior_rate

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "nodes": self.nodes,
            "price_per_gpu_hour": self.price_per_device_hour,
            "prior_per_node_day": self.prior_rate,
            "prior_node_days": self.prior_node_days,
            "observed_interruptions": self.observed,
            "exposure_node_days": self.exposure_node_days,
            "posterior": {"shape": self.shape, "rate_node_days": self.rate, "mean_per_node_day": self.posterior_mean},
        }


@dataclass(frozen=True)
class Evidence:
    job_id: str
    state: str
    now: float
    world_size: int
    devices_per_node: int
    step: int
    committed_step: int
    total_steps: int
    tokens: float
    planned_tokens: float
    remaining_compute_s: float  # compute left from ``step``, at the measured step times
    at_risk_s: float  # compute done since the last committed checkpoint
    scale_rel_se: float  # relative standard error of the measured step-time ratio
    save_stall_s: float
    save_commit_s: float  # from a save's start until a restart can resume from it
    final_save_s: float
    interval_s: float
    recovery_s: float  # devices held per restart
    replacement_wait_s: float  # devices not held: waiting for nodes
    max_restarts: int
    restarts: int
    # ``fault_tolerance.restart_budget``: infrastructure restarts allowed per sliding window (None: no
    # window), and when the job's infrastructure restarts inside the window happened, seconds before ``now``
    window_s: float | None
    window_restarts: int | None
    recent_restarts: tuple[float, ...]
    pools: tuple[PoolEvidence, ...]
    spent: dict
    budget_usd: float | None
    budget_gpu_hours: float | None
    checkpoint: dict  # bytes, retention, storage prices: for the storage forecast
    sources: dict = field(default_factory=dict)

    @property
    def price_per_device_hour(self) -> float:
        nodes = sum(p.nodes for p in self.pools)
        return sum(p.nodes * p.price_per_device_hour for p in self.pools) / nodes if nodes else 0.0


def phase_scales(timeline: StepTimeline, metrics: list[dict]) -> tuple[list[float | None], list[float]]:
    """Per phase: the median measured/planned step-time ratio (None if not measured) and the ratios."""
    ratios: list[list[float]] = [[] for _ in timeline.phase_names]
    for m in metrics:
        step, folded, took = int(m.get("step", 0)), int(m.get("steps_folded", 1) or 1), m.get("step_time_s")
        if not took or step < 1 or step > timeline.total_steps:
            continue
        planned = timeline.seconds(max(0, step - folded), step)
        if planned > 0:
            ratios[timeline.phase_of(step)].append(float(took) / planned)
    medians = [statistics.median(r) if r else None for r in ratios]
    return medians, [x for r in ratios for x in r]


def remaining_compute(timeline: StepTimeline, scales: list[float | None], from_step: int) -> tuple[float, str]:
    """Compute seconds from ``from_step`` to the end, each phase at its scale (unmeasured phases
    at the latest measured one's, or the plan's)."""
    latest, source = 1.0, "plan"
    filled = []
    for s in scales:
        if s is not None:
            latest, source = s, "measured"
        filled.append(latest)
    if all(s is None for s in scales):
        filled = [1.0] * len(scales)
    total, start = 0.0, 0
    for i, end in enumerate(timeline.phase_end):
        lo, hi = max(start, from_step), int(end)
        if hi > lo:
            total += filled[i] * timeline.seconds(lo, hi)
        start = int(end)
    return total, source


def _recovery(
    store: StateStore, job: dict, cost: dict, scenario: Scenario, restore_s: float, spares: int
) -> tuple[float, float, str]:
    restarts = job["restarts"] or 0
    if restarts:
        held = cost["gpu_hours"]["recovery"] * 3600.0 / max(1, job["world_size"]) / restarts
        waits, entered = [], None
        for t in store.transitions(job["id"]):
            if t["to_state"] == JobState.RECOVERING.value:
                entered = t["at"]
            elif t["to_state"] == JobState.PLACING.value and entered is not None:
                waits.append(t["at"] - entered)
                entered = None
        return held, (statistics.fmean(waits) if waits else 0.0), "measured"
    wait = 0.0 if spares > 0 else scenario.provision_delay_s
    return scenario.restart_s + restore_s, wait, "simulator defaults"


def gather(
    store: StateStore, job_ref: str, now: float | None = None, prior_days: float = 1.0, scenario: Scenario | None = None
) -> Evidence:
    """The job's evidence as of ``now``. ``scenario`` gives the infrastructure figures the run has not
    measured yet (storage bandwidth, restart time, provisioning delay)."""
    scenario = scenario or Scenario()
    job = store.get_job(job_ref)
    now = store.clock.now() if now is None else now
    spec = validate_mapping(job["spec"], job["id"])
    plan = make_plan(spec)
    timeline = build_timeline(plan)
    costs = scenario_costs(plan, scenario)  # the simulator's recovery sequence and defaults
    metrics = store.metrics(job["id"])
    scales, ratios = phase_scales(timeline, metrics)
    step = min(int(job["step"] or 0), timeline.total_steps)
    committed = min(int(job["last_checkpoint_step"] or 0), step)
    remaining, scale_source = remaining_compute(timeline, scales, step)
    at_risk, _ = remaining_compute(timeline, scales, committed)
    rel_se = (statistics.stdev(ratios) / statistics.fmean(ratios) / len(ratios) ** 0.5) if len(ratios) > 1 else 0.1
    cost = job_cost(store, store.job(job["id"]), now)
    # a real step record with a stall is one save; a simulator's folded record sums several
    stalls = [
        float(m["checkpoint_stall_s"]) for m in metrics if m.get("checkpoint_stall_s") and not m.get("steps_folded")
    ]
    stall = statistics.fmean(stalls) if stalls else costs.stall_s
    spares = spec.fault_tolerance.spare_nodes + sum(p.nodes for p in spec.resources.pools if p.kind == "spare")
    recovery, wait, recovery_source = _recovery(store, job, cost, scenario, costs.restore_s, spares)
    pools = _pools(spec, job, cost, prior_days, infrastructure_restarts(store, job["id"]))
    gang_rate = sum(p.nodes * p.posterior_mean for p in pools) / DAY
    interval = _interval(spec, stall, costs.save_s, gang_rate, timeline, remaining)
    return Evidence(
        job_id=job["id"],
        state=job["state"],
        now=now,
        world_size=job["world_size"],
        devices_per_node=job["devices_per_node"],
        step=step,
        committed_step=committed,
        total_steps=timeline.total_steps,
        tokens=job["tokens"] or 0.0,
        planned_tokens=float(timeline.tokens[-1]),
        remaining_compute_s=remaining,
        at_risk_s=max(0.0, at_risk - remaining),
        scale_rel_se=rel_se,
        save_stall_s=stall,
        # restorable once committed in memory (the tier comes with warm restart), else once uploaded
        save_commit_s=costs.restorable_after_s() if spec.fault_tolerance.warm_restart else costs.save_s,
        final_save_s=costs.save_s,
        interval_s=interval,
        recovery_s=recovery,
        replacement_wait_s=wait,
        max_restarts=_lifetime_cap(spec),
        restarts=job["restarts"] or 0,
        pools=pools,
        **_window(store, spec, job["id"], now),
        spent={
            "gpu_hours": cost["gpu_hours"]["total"],
            "cost_usd": cost["cost_usd"],
            "storage_cost_usd": cost["storage"]["cost_usd"],
            "goodput": cost["goodput"],
        },
        budget_usd=spec.cost.budget_usd,
        budget_gpu_hours=spec.cost.budget_gpu_hours,
        checkpoint={
            "bytes": costs.checkpoint_bytes,
            "keep_last": spec.checkpoint.retention.keep_last,
            "keep_every": spec.checkpoint.retention.keep_every,
            "gb_month_usd": spec.cost.storage.gb_month_usd,
            "put_usd": cost["storage"]["checkpoint_puts"]["cost_usd"] / max(1, cost["storage"]["checkpoints"])
            if cost["storage"]["checkpoints"]
            else _put_usd(spec, costs.checkpoint_bytes),
        },
        sources={
            "step_times": scale_source,
            "recovery": recovery_source,
            "save_stall": "measured" if stalls else "plan and storage bandwidth",
            "phase_step_time_ratio": dict(zip(timeline.phase_names, scales)),
        },
    )


def _put_usd(spec, checkpoint_bytes: float) -> float:
    ck = Checkpointing(checkpoint_bytes, spec.resources.nodes * spec.resources.gpus_per_node, spec.checkpoint.retention)
    return put_requests(ck, spec.cost.storage) / 1000 * spec.cost.storage.put_per_1000_usd


def _pools(spec, job: dict, cost: dict, prior_days: float, observed: int) -> tuple[PoolEvidence, ...]:
    """The gang's pools (by the nodes it takes from each), with the ``observed`` infrastructure restarts
    apportioned (a crash of the job's own code says nothing about the pools)."""
    used = [(pool, take) for pool, take in spec.pools_used() if take > 0]
    held_days = cost["gpu_hours"]["total"] / max(1, job["world_size"]) / 24.0
    weights = [pool.interruptions_per_node_day * take for pool, take in used]
    if sum(weights) <= 0:
        weights = [float(take) for _, take in used]
    total_weight = sum(weights) or 1.0
    restarts = float(observed)
    return tuple(
        PoolEvidence(
            pool.name,
            pool.kind,
            take,
            spec.pool_price(pool),
            pool.interruptions_per_node_day,
            restarts * w / total_weight,
            held_days * take,
            prior_days * take,
        )
        for (pool, take), w in zip(used, weights)
    )


def _interval(spec, stall: float, commit_s: float, gang_rate: float, timeline: StepTimeline, remaining: float) -> float:
    """Seconds of compute between saves, as the real policy would choose them now."""
    interval = spec.checkpoint.interval
    if isinstance(interval, CheckpointInterval) and interval.steps is not None:
        per_step = timeline.seconds(0, timeline.total_steps) / max(1, timeline.total_steps)
        return interval.steps * per_step
    policy = IntervalPolicy(
        spec,
        ManualClock(0.0),
        save_cost_s=stall,
        save_duration_s=commit_s,
        observed_mtbf_s=(1.0 / gang_rate) if gang_rate > 0 else None,
    )
    return max(1e-3, policy.interval_seconds())


NO_CAP = 1_000_000  # a job with only a windowed restart budget and no max_restarts: no lifetime cap


def _lifetime_cap(spec) -> int:
    """The job's lifetime restart cap (``fault_tolerance.lifetime_restarts``; the windowed budget is
    ``_window``'s)."""
    cap = spec.fault_tolerance.lifetime_restarts
    return NO_CAP if cap is None else cap


def _window(store: StateStore, spec, job_id: str, now: float) -> dict:
    """The windowed restart budget as the controller applies it (``control/restart_budget.py``): the
    infrastructure restarts allowed per window, and the job's own inside the window before ``now``
    (its ``job.recovering`` events), which count against the first restarts of every simulated run.
    ``crash_restarts`` does not enter: the forecast draws interruptions of the infrastructure only."""
    budget = spec.fault_tolerance.restart_budget
    if budget is None:
        return {"window_s": None, "window_restarts": None, "recent_restarts": ()}
    window = budget.window_hours * 3600.0
    recent = tuple(
        at - now for at, kind in store.restarts_since(job_id, now - window) if kind == RestartKind.INFRASTRUCTURE
    )
    return {"window_s": window, "window_restarts": budget.restarts, "recent_restarts": recent}
