"""The ledger's bookkeeping: rebuild a job attempt from what the state store recorded, and the
figures ``orch cost``, the dashboard and the Prometheus exporter all read.

An attempt's intervals are written in the same transaction as the transition that releases its
devices; a running attempt is priced on the fly up to now, so a controller crash loses no hour:
everything the intervals are computed from (placement time, nodes and prices, step metrics,
committed checkpoints) is already persisted.
"""

from __future__ import annotations


from orchestrator.ledger.intervals import Attempt, Interval, NodeHold, StepRecord, summarize
from orchestrator.plan import reference

ENDINGS = {"succeeded": "succeeded", "preempted": "checkpointed", "checkpointing": "checkpointed",
           "recovering": "lost", "failed": "failed", "cancelled": "cancelled"}


def holds_for(job: dict, nodes_by_name: dict, spec_pools: list[dict], default_price: float) -> list[dict]:
    """What each placed node costs: recorded at placement, so later price changes do not rewrite history."""
    prices = {p["name"]: (p.get("price_per_gpu_hour") if p.get("price_per_gpu_hour") is not None else default_price)
              for p in spec_pools}
    holds = []
    for name in job["assignment"]:
        node = nodes_by_name.get(name)
        pool = node.pool if node else "unknown"
        holds.append({"node": name, "pool": pool, "pool_kind": node.pool_kind if node else "unknown",
                      "devices": job["devices_per_node"], "price_per_device_hour": prices.get(pool, default_price)})
    return holds


def build_attempt(job: dict, placed_at: float | None, metrics: list[dict], held_until: float, ending: str) -> Attempt:
    """The job's current attempt, from its placement (``placed_at``, the latest transition to
    placing) to ``held_until``."""
    held_from = placed_at if placed_at is not None else held_until
    steps = tuple(StepRecord(m["step"], m.get("wall_time", m["at"]), m.get("step_time_s", 0.0),
                             m.get("checkpoint_stall_s", 0.0) or 0.0, m.get("phase", ""))
                  for m in metrics if m.get("attempt") == job["attempt"])
    committed = job["last_checkpoint_step"]
    nodes = tuple(NodeHold(**h) for h in (job.get("holds") or []))
    phases = job["spec"].get("phases") or [{"name": ""}]
    device_type = job["spec"]["resources"]["accelerator"]["type"]
    return Attempt(job["id"], job["attempt"], held_from, held_until, ending, steps, committed, device_type, nodes,
                   phases[0]["name"])


def job_figures(job: dict, intervals: list[Interval], plan_tokens: float, now: float) -> dict:
    """The JSON contract of `orch cost`: hours by category, dollars, goodput, tokens, projection, reference."""
    summary = summarize(intervals)
    hours = summary["gpu_hours"]["total"]
    tokens = job["tokens"] or 0.0
    per_trillion = hours / (tokens / 1e12) if tokens else None
    remaining_tokens = max(0.0, plan_tokens - tokens)
    projection = None
    if tokens > 0 and hours > 0:
        hours_per_token = hours / tokens  # measured, overheads included
        extra_hours = remaining_tokens * hours_per_token
        world = max(1, job["world_size"])
        price = summary["cost_usd"] / hours if hours else 0.0
        projection = {"remaining_tokens": remaining_tokens, "gpu_hours": hours + extra_hours,
                      "cost_usd": summary["cost_usd"] + extra_hours * price,
                      "finish_at": now + extra_hours * 3600 / world if job["state"] in ("running", "placing") else None}
    return {
        "job": job["id"], "team": job["team"], "state": job["state"],
        "gpu_hours": summary["gpu_hours"], "by_phase": summary["by_phase"], "by_pool": summary["by_pool"],
        "cost_usd": summary["cost_usd"], "goodput": summary["goodput"], "tokens": tokens,
        "gpu_hours_per_trillion_tokens": per_trillion, "projection": projection,
        "reference": reference.reference_summary(),
    }


def total_figures(per_job: list[dict]) -> dict:
    categories = ("total", "productive", "checkpoint", "recovery", "lost", "queued")
    hours = {c: sum(j["gpu_hours"][c] for j in per_job) for c in categories}
    tokens = sum(j["tokens"] for j in per_job)
    by_team: dict[str, dict] = {}
    for j in per_job:
        team = by_team.setdefault(j["team"], {"gpu_hours": 0.0, "cost_usd": 0.0})
        team["gpu_hours"] += j["gpu_hours"]["total"]
        team["cost_usd"] += j["cost_usd"]
    return {"gpu_hours": hours, "cost_usd": sum(j["cost_usd"] for j in per_job),
            "goodput": hours["productive"] / hours["total"] if hours["total"] else 0.0, "tokens": tokens,
            "gpu_hours_per_trillion_tokens": hours["total"] / (tokens / 1e12) if tokens else None,
            "by_team": by_team, "jobs": len(per_job),
            "reference": reference.reference_summary()}
