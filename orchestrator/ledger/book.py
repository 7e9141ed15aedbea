"""The ledger's bookkeeping: rebuild a job attempt from what the state store recorded, and the
figures ``orch cost``, the dashboard and the Prometheus exporter all read.

An attempt's intervals are written in the same transaction as the transition that releases its
devices; a running attempt is priced on the fly up to now, so a controller crash loses no hour:
everything the intervals are computed from (placement time, nodes and prices, step metrics,
committed checkpoints) is already persisted.
"""

from __future__ import annotations

from orchestrator.ledger.intervals import Attempt, Interval, NodeHold, StepRecord, summarize
from orchestrator.lifecycle import Ending, JobState, LedgerCategory
from orchestrator.plan import reference
from orchestrator.spec.schema import JobSpec
from orchestrator.state.records import JobRecord


def holds_for(assignment: list[str], devices_per_node: int, nodes_by_name: dict, spec: JobSpec) -> list[dict]:
    """What each placed node costs: recorded at placement, so later price changes do not rewrite history."""
    prices = {p.name: spec.pool_price(p) for p in spec.resources.pools}
    default_price = spec.cost.price_per_gpu_hour
    holds = []
    for name in assignment:
        node = nodes_by_name.get(name)
        pool = node.pool if node else "unknown"
        holds.append(
            {
                "node": name,
                "pool": pool,
                "pool_kind": node.pool_kind if node else "unknown",
                "devices": devices_per_node,
                "price_per_device_hour": prices.get(pool, default_price),
            }
        )
    return holds


def build_attempt(
    job: JobRecord, placed_at: float | None, metrics: list[dict], held_until: float, ending: Ending
) -> Attempt:
    """The job's current attempt, from its placement (``placed_at``, the latest transition to
    placing) to ``held_until``."""
    held_from = placed_at if placed_at is not None else held_until
    steps = tuple(
        StepRecord(
            m["step"],
            m.get("wall_time", m["at"]),
            m.get("step_time_s", 0.0),
            m.get("checkpoint_stall_s", 0.0) or 0.0,
            m.get("phase", ""),
            int(m.get("steps_folded", 1) or 1),
        )
        for m in metrics
        if m.get("attempt") == job.attempt
    )
    nodes = tuple(NodeHold(**h) for h in (job.holds or []))
    redo = [m["redo_until"] for m in metrics if m.get("attempt") == job.attempt and m.get("redo_until") is not None]
    return Attempt(
        job.id,
        job.attempt,
        held_from,
        held_until,
        ending,
        steps,
        job.last_checkpoint_step,
        job.spec.resources.accelerator.type,
        nodes,
        job.spec.phases[0].name,
        max(redo) if redo else None,
    )


def job_figures(job: JobRecord, intervals: list[Interval], plan_tokens: float, now: float) -> dict:
    """The JSON contract of `orch cost`: hours by category, dollars, goodput, tokens, projection, reference."""
    summary = summarize(intervals)
    hours = summary["gpu_hours"]["total"]
    tokens = job.tokens or 0.0
    per_trillion = hours / (tokens / 1e12) if tokens else None
    remaining_tokens = max(0.0, plan_tokens - tokens)
    projection = None
    if tokens > 0 and hours > 0:
        hours_per_token = hours / tokens  # measured, overheads included
        extra_hours = remaining_tokens * hours_per_token
        world = max(1, job.world_size)
        price = summary["cost_usd"] / hours if hours else 0.0
        projection = {
            "remaining_tokens": remaining_tokens,
            "gpu_hours": hours + extra_hours,
            "cost_usd": summary["cost_usd"] + extra_hours * price,
            "finish_at": now + extra_hours * 3600 / world
            if job.state in (JobState.RUNNING, JobState.PLACING)
            else None,
        }
    return {
        "job": job.id,
        "team": job.team,
        "state": job.state.value,
        "gpu_hours": summary["gpu_hours"],
        "by_phase": summary["by_phase"],
        "by_pool": summary["by_pool"],
        "cost_usd": summary["cost_usd"],
        "goodput": summary["goodput"],
        "wall_goodput": wall_goodput(job, summary["gpu_hours"]["productive"], now),
        "tokens": tokens,
        "gpu_hours_per_trillion_tokens": per_trillion,
        "projection": projection,
        "reference": reference.reference_summary(),
    }


def wall_goodput(job: JobRecord, productive_hours: float, now: float) -> float:
    """Productive device-hours over the gang's devices x wall time since submission: unlike the
    ledger's goodput it counts the time the job held nothing (queued, waiting for replacement nodes)."""
    end = job.ended_at or now
    wall_h = max(0.0, end - job.submitted_at) / 3600.0
    devices = max(1, job.world_size)
    return productive_hours / (devices * wall_h) if wall_h > 0 else 0.0


def total_figures(per_job: list[dict]) -> dict:
    categories = ("total", *(c.value for c in LedgerCategory))
    hours = {c: sum(j["gpu_hours"][c] for j in per_job) for c in categories}
    tokens = sum(j["tokens"] for j in per_job)
    by_team: dict[str, dict] = {}
    for j in per_job:
        team = by_team.setdefault(j["team"], {"gpu_hours": 0.0, "cost_usd": 0.0})
        team["gpu_hours"] += j["gpu_hours"]["total"]
        team["cost_usd"] += j["cost_usd"]
    storage = sum(j.get("storage", {}).get("cost_usd", 0.0) for j in per_job)
    return {
        "gpu_hours": hours,
        "cost_usd": sum(j["cost_usd"] for j in per_job),
        "storage_cost_usd": storage,
        "total_cost_usd": sum(j["cost_usd"] for j in per_job) + storage,
        "goodput": hours["productive"] / hours["total"] if hours["total"] else 0.0,
        "tokens": tokens,
        "gpu_hours_per_trillion_tokens": hours["total"] / (tokens / 1e12) if tokens else None,
        "by_team": by_team,
        "jobs": len(per_job),
        "reference": reference.reference_summary(),
    }
