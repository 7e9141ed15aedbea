"""The figures `orch cost`, the dashboard's /api/cost and the Prometheus exporter share."""

from __future__ import annotations

import json
from functools import lru_cache

from orchestrator.errors import OrchError
from orchestrator.ledger.book import build_attempt, job_figures, total_figures
from orchestrator.ledger.intervals import attempt_intervals
from orchestrator.lifecycle import HOLDING, Ending, JobState, Owner
from orchestrator.plan.params import model_params
from orchestrator.plan.planner import make_plan
from orchestrator.plan.schedule import phase_tokens
from orchestrator.plan.storage import Checkpointing, checkpoint_bytes, storage_lines
from orchestrator.spec.loader import validate_mapping
from orchestrator.state.records import Interval, JobRecord
from orchestrator.state.store import GANG_EVENT, StateStore


def attempt_started_at(store: StateStore, job: JobRecord) -> float | None:
    """When the job's current attempt began holding devices.

    A Ray controller's attempt starts at its placement (the latest transition to ``placing``). A
    RayJob's first attempt starts when its RayCluster began initialising (``follow`` moved the row to
    ``placing``), or at its gang record if nobody followed it then; a later attempt (KubeRay ran the
    driver again) starts when its driver recorded its gang, the moment the attempt before it was closed."""
    placed = store.last_transition_at(job.id, JobState.PLACING)
    if job.owner != Owner.KUBERNETES:
        return placed
    gang = store.last_event_at(job.id, GANG_EVENT)
    if job.attempt <= 1 and placed is not None:
        return placed
    return gang if gang is not None else placed


def closing_intervals(
    store: StateStore, job: JobRecord, ending: Ending, now: float, by_pool: bool = False
) -> list[Interval]:
    """The ledger rows of the job's current attempt, ended now as ``ending``: written in the same
    transaction as whatever releases its devices."""
    attempt = build_attempt(
        job, attempt_started_at(store, job), store.metrics_of_attempt(job.id, job.attempt), now, ending
    )
    return attempt_intervals(attempt, by_pool=by_pool)


def job_intervals(store: StateStore, job: JobRecord, now: float) -> list[Interval]:
    """Closed attempts from the ledger, plus the attempt still holding devices priced up to now."""
    intervals = store.intervals(job.id)
    if job.state in HOLDING and job.assignment:
        intervals += closing_intervals(store, job, Ending.RUNNING, now)
    return intervals


def planned_tokens(job: JobRecord) -> float:
    return sum(phase_tokens(p) for p in job.spec.phases)


def job_checkpointing(spec) -> Checkpointing:
    params = model_params(spec.model)
    world = spec.resources.nodes * spec.resources.gpus_per_node
    return Checkpointing(checkpoint_bytes(params.total + params.mtp), world, spec.checkpoint.retention)


def job_storage(store: StateStore, job: JobRecord, now: float) -> dict:
    """Checkpoint storage, requests and data reads so far, from the commits the runner recorded
    (``checkpoint.committed`` events) and the restarts that restored one."""
    spec = job.spec
    commits = [
        (e["data"]["step"], e["at"])
        for e in store.events(job.id, limit=10_000_000)
        if e["kind"] == "checkpoint.committed" and (e.get("data") or {}).get("step") is not None
    ]
    data_bytes = 0.0
    if spec.data.source == "shards":
        data_bytes = (job.tokens or 0.0) * (2 if spec.data.dtype == "uint16" else 4)
    return storage_lines(
        commits, job_checkpointing(spec), spec.cost.storage, now, restores=job.restarts or 0, data_bytes_read=data_bytes
    )


def job_cost(store: StateStore, job: JobRecord, now: float | None = None) -> dict:
    now = store.clock.now() if now is None else now
    figures = job_figures(job, job_intervals(store, job, now), planned_tokens(job), now)
    storage = job_storage(store, job, now)
    return {
        **figures,
        "storage": storage,
        "total_cost_usd": figures["cost_usd"] + storage["cost_usd"],
        "queued_s": queued_seconds(store.transitions(job.id), now),
        "plan": planned_compute(job.id, job.spec_data),
        "unpriced_pools": unpriced_pools(job.spec_data, figures),
    }


def queued_seconds(transitions: list[dict], now: float) -> float:
    """Wall seconds the job waited for devices (in ``queued``): no device-hours, so not in the ledger."""
    total, since = 0.0, None
    for t in transitions:
        if t["to_state"] == JobState.QUEUED.value and since is None:
            since = t["at"]
        elif t["to_state"] != JobState.QUEUED.value and since is not None:
            total, since = total + t["at"] - since, None
    return total + (now - since if since is not None else 0.0)


@lru_cache(maxsize=256)
def _plan_figures(job_id: str, spec_json: str) -> dict | None:
    try:
        plan = make_plan(validate_mapping(json.loads(spec_json), job_id))
    except OrchError:
        return None
    return {
        "gpu_hours": plan.total_gpu_hours,
        "cost_usd": plan.total_cost_usd,
        "days": plan.total_days,
        "basis": "training compute at the expected MFU; excludes start-up, checkpoints, restarts",
    }


def planned_compute(job_id: str, spec: dict) -> dict | None:
    """What `orch plan` / `orch validate` said this job's training compute would take (the static plan)."""
    return _plan_figures(job_id, json.dumps(spec, sort_keys=True))


def unpriced_pools(spec_data: dict, figures: dict) -> list[str]:
    """Pools the job held that name no price: the ledger prices them at ``cost.price_per_gpu_hour``."""
    pools = {p["name"]: p for p in spec_data["resources"].get("pools") or []}
    return sorted(
        name for name in figures["by_pool"] if name in pools and pools[name].get("price_per_gpu_hour") is None
    )


def cost_report(store: StateStore, job_ref: str | None = None, now: float | None = None) -> dict:
    """Every figure read from one snapshot of the store, so no attempt is counted both open and closed."""
    now = store.clock.now() if now is None else now
    with store.snapshot() as view:
        jobs = [view.job(job_ref)] if job_ref else view.jobs()
        per_job = [job_cost(view, job, now) for job in jobs]
    if job_ref:
        return per_job[0]
    return {**total_figures(per_job), "per_job": per_job}


def team_spend(store: StateStore, now: float | None = None) -> dict[str, dict]:
    return cost_report(store, now=now)["by_team"]
