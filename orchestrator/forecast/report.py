"""`orch forecast`'s answer: P10/P50/P90 of the finish, GPU-hours and dollars, against the job's
budget and DeepSeek-V3's published 2.788M GPU-hours / $5.576M. The JSON contract is in
docs/forecast.md; a key added here is added there."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np

from orchestrator.forecast.evidence import Evidence, gather
from orchestrator.forecast.montecarlo import simulate_rest, storage_rest
from orchestrator.plan import reference
from orchestrator.plan.scenario import Scenario
from orchestrator.state.store import StateStore

TERMINAL = ("succeeded", "failed", "cancelled")
QUANTILES = {"p10": 10, "p50": 50, "p90": 90}


def bands(values: np.ndarray) -> dict:
    if values.size == 0:
        return {k: None for k in QUANTILES}
    return {k: float(np.percentile(values, q)) for k, q in QUANTILES.items()}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def forecast_from(ev: Evidence, runs: int = 100, seed: int = 0) -> dict:
    """The forecast for evidence ``ev``: ``runs`` Monte-Carlo runs of the rest of the job."""
    began = time.perf_counter()
    if ev.state in TERMINAL:
        zeros = {
            "held_s": np.zeros(runs),
            "wall_s": np.zeros(runs),
            "restarts": np.zeros(runs, dtype=int),
            "failed": np.zeros(runs, dtype=bool),
            "failed_on": np.full(runs, "", dtype=object),
            "computed_s": np.zeros(runs),
        }
        sim, storage = zeros, np.zeros(runs)
    else:
        sim = simulate_rest(ev, runs, seed)
        storage = storage_rest(ev, sim)
    hours = ev.spent["gpu_hours"] + sim["held_s"] * ev.world_size / 3600.0
    gpu_usd = ev.spent["cost_usd"] + sim["held_s"] * ev.world_size / 3600.0 * ev.price_per_device_hour
    storage_usd = ev.spent["storage_cost_usd"] + storage
    cost = gpu_usd + storage_usd
    ok = ~sim["failed"]
    finish = ev.now + sim["wall_s"][ok]
    finish_band = bands(finish) if ev.state not in TERMINAL else {k: ev.now for k in QUANTILES}
    ref = reference.reference_summary() or {}
    result = {
        "job": ev.job_id,
        "state": ev.state,
        "as_of": ev.now,
        "as_of_iso": _iso(ev.now),
        "runs": runs,
        "seed": seed,
        "progress": {
            "step": ev.step,
            "committed_step": ev.committed_step,
            "total_steps": ev.total_steps,
            "tokens": ev.tokens,
            "planned_tokens": ev.planned_tokens,
            "fraction": ev.step / ev.total_steps if ev.total_steps else 1.0,
        },
        "spent": ev.spent,
        "finish_at": finish_band,
        "finish_at_iso": {k: _iso(v) for k, v in finish_band.items()},
        "days_left": {k: (None if v is None else (v - ev.now) / 86400.0) for k, v in finish_band.items()},
        "gpu_hours": bands(hours),
        "gpu_cost_usd": bands(gpu_usd),
        "storage_cost_usd": bands(storage_usd),
        "cost_usd": bands(cost),
        "restarts_left": bands(sim["restarts"].astype(float)),
        "failure_probability": float(sim["failed"].mean()),
        "failure_probability_by_rule": {
            rule: float((sim["failed_on"] == rule).mean()) for rule in ("max_restarts", "restart_budget")
        },
        "budget": _budget(ev, hours, cost),
        "reference": {
            "name": ref.get("name", "DeepSeek-V3"),
            "gpu_hours": ref.get("gpu_hours"),
            "cost_usd": ref.get("cost_usd"),
            "gpu_hours_p50_ratio": _ratio(np.percentile(hours, 50), ref.get("gpu_hours")),
            "cost_p50_ratio": _ratio(np.percentile(cost, 50), ref.get("cost_usd")),
        },
        "model": _model(ev),
    }
    result["took_s"] = time.perf_counter() - began
    return result


def _ratio(value: float, ref: float | None) -> float | None:
    return float(value) / ref if ref else None


def _budget(ev: Evidence, hours: np.ndarray, cost: np.ndarray) -> dict:
    out: dict = {"usd": ev.budget_usd, "gpu_hours": ev.budget_gpu_hours}
    if ev.budget_usd:
        out["p_over_usd"] = float((cost > ev.budget_usd).mean())
    if ev.budget_gpu_hours:
        out["p_over_gpu_hours"] = float((hours > ev.budget_gpu_hours).mean())
    return out


def _model(ev: Evidence) -> dict:
    gang_rate = sum(p.nodes * p.posterior_mean for p in ev.pools)
    return {
        "interruptions": "Gamma-Poisson per pool: prior mean = the spec's interruptions_per_node_day worth "
        "prior_node_days of exposure; posterior Gamma(prior shape + observed restarts, "
        "prior node-days + held node-days); each run draws a rate, then Poisson interruptions",
        "pools": [p.as_dict() for p in ev.pools],
        "gang_mtbf_s": (86400.0 / gang_rate) if gang_rate > 0 else None,
        "interval_s": ev.interval_s,
        "save_stall_s": ev.save_stall_s,
        "save_commit_s": ev.save_commit_s,
        "recovery_s": ev.recovery_s,
        "replacement_wait_s": ev.replacement_wait_s,
        "remaining_compute_s": ev.remaining_compute_s,
        "step_time_rel_se": ev.scale_rel_se,
        "max_restarts": ev.max_restarts,
        "restarts_so_far": ev.restarts,
        "restart_budget": None
        if ev.window_s is None
        else {
            "restarts": ev.window_restarts,
            "window_hours": ev.window_s / 3600.0,
            "in_window_now": len(ev.recent_restarts),
        },
        "sources": ev.sources,
    }


def job_forecast(
    store: StateStore,
    job_ref: str,
    runs: int = 100,
    seed: int = 0,
    prior_days: float = 1.0,
    scenario: Scenario | None = None,
    now: float | None = None,
) -> dict:
    began = time.perf_counter()
    ev = gather(store, job_ref, now=now, prior_days=prior_days, scenario=scenario)
    result = forecast_from(ev, runs, seed)
    result["took_s"] = time.perf_counter() - began
    return result
