"""The burn-down page: a job's dollars and GPU-hours spent so far, the forecast band to the finish,
its budget and DeepSeek-V3's published totals, and the cluster's utilisation per pool.

A router of its own (page, script and one read); like every ``/api/`` read it changes nothing and
passes the dashboard's gate first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from orchestrator.control.node_ops import node_rows
from orchestrator.dashboard.context import DashboardContext, context, provider
from orchestrator.forecast.report import job_forecast
from orchestrator.ledger.report import cost_report, job_intervals
from orchestrator.ledger.utilisation import cluster_utilisation

STATIC = Path(__file__).parent / "static"

pages = APIRouter(include_in_schema=False)
router = APIRouter(prefix="/api")


@pages.get("/burndown")
def burndown_page() -> FileResponse:
    return FileResponse(STATIC / "burndown.html", media_type="text/html")


@pages.get("/static/burndown.js")
def burndown_script() -> FileResponse:
    return FileResponse(STATIC / "burndown.js", media_type="text/javascript")


def spent_series(intervals: list, now: float, samples: int = 100) -> dict:
    """Cumulative device-hours and dollars at ``samples`` times from the first placement to now."""
    if not intervals:
        return {"t": [], "gpu_hours": [], "cost_usd": []}
    start = min(i.start for i in intervals)
    times = np.linspace(start, max(now, start + 1.0), samples)
    begins = np.array([i.start for i in intervals])[None, :]
    ends = np.array([i.end for i in intervals])[None, :]
    devices = np.array([i.devices for i in intervals])[None, :]
    prices = np.array([i.price_per_device_hour for i in intervals])[None, :]
    held = np.clip(np.minimum(ends, times[:, None]) - begins, 0.0, None) * devices / 3600.0
    return {
        "t": times.tolist(),
        "gpu_hours": held.sum(axis=1).tolist(),
        "cost_usd": (held * prices).sum(axis=1).tolist(),
    }


def utilisation(store, nodes_from, now: float) -> list[dict]:
    """Per pool: device-hours allocated to jobs and their dollars (the ledger), the nodes now: up,
    holding a job, idle, down or cordoned (the provider), and over the cluster's recorded history
    (``ledger/utilisation.py``) the node-hours and dollars allocated, idle or spare, and down."""
    report = cost_report(store, now=now)
    history = cluster_utilisation(store, now, report)
    pools: dict[str, dict] = {}
    for job in report["per_job"]:
        for name, p in job["by_pool"].items():
            row = pools.setdefault(name, _empty_pool_row(name, p["kind"]))
            row["gpu_hours"] += p["gpu_hours"]
            row["cost_usd"] += p["cost_usd"]
    for node in node_rows(store, nodes_from):
        row = pools.setdefault(node["pool"], _empty_pool_row(node["pool"], node["kind"]))
        row["nodes"] += 1
        if node["health"] != "alive":
            row["down"] += 1
        elif node["jobs"]:
            row["busy"] += 1
        else:
            row["idle"] += 1
        row["cordoned"] += bool(node["cordoned"])
    for name, u in history.items():
        row = pools.setdefault(name, _empty_pool_row(name, u["kind"]))
        row["node_hours"] = {k: u[k] for k in ("up", "allocated", "idle", "spare", "down", "cordoned")}
        row["usd"] = {k: u[f"{k}_usd"] for k in ("allocated", "idle", "spare", "down")}
    return sorted(pools.values(), key=lambda r: r["pool"])


@router.get(
    "/jobs/{job_id}/burndown",
    summary="Spent so far over time, the forecast band (orch forecast JOB --json), budget, reference, pools",
)
def burndown(
    job_id: str,
    runs: int = Query(100, ge=1, le=10_000),
    ctx: DashboardContext = Depends(context),
    nodes_from=Depends(provider),
) -> dict:
    job = ctx.store.get_job(job_id)
    now = ctx.store.clock.now()
    forecast = job_forecast(ctx.store, job["id"], runs=runs, now=now)
    spent = spent_series(job_intervals(ctx.store, ctx.store.job(job["id"]), now), now)
    return {
        "job": job["id"],
        "now": now,
        "spent": spent,
        "forecast": forecast,
        "utilisation": utilisation(ctx.store, nodes_from, now),
    }


def _empty_pool_row(pool: str, kind: str) -> dict:
    """A pool's row before its jobs' hours and its nodes are added in."""
    return {
        "pool": pool,
        "kind": kind,
        "gpu_hours": 0.0,
        "cost_usd": 0.0,
        "nodes": 0,
        "busy": 0,
        "idle": 0,
        "down": 0,
        "cordoned": 0,
    }
