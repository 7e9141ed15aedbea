"""The read-only JSON API (the CLI's ``--json`` data) and the pages. Nothing here changes state.

When the dashboard listens beyond loopback the gate (``security.Guard``) demands a token for every
``/api/`` read before these routes run; the pages carry no data and stay open.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, Response

from orchestrator import __version__
from orchestrator.checkpoint.locate import open_job_checkpoints
from orchestrator.control.node_ops import node_rows
from orchestrator.control.rows import job_json
from orchestrator.dashboard import series
from orchestrator.dashboard.context import DashboardContext, context, provider
from orchestrator.ledger.report import cost_report
from orchestrator.lifecycle import JobState

STATIC = Path(__file__).parent / "static"
PAGES = {"app.js": "text/javascript", "app.css": "text/css", "money.js": "text/javascript"}

pages = APIRouter(include_in_schema=False)
router = APIRouter(prefix="/api")


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@pages.get("/")
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@pages.get("/static/{name}")
def static(name: str) -> FileResponse:
    if name == "plotly.min.js":
        return FileResponse(plotly_js(), media_type="text/javascript")
    if name not in PAGES:  # a fixed list: no path from the request ever reaches the file system
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC / name, media_type=PAGES[name])


@pages.get("/healthz")
def healthz() -> Response:
    return Response("ok", media_type="text/plain")


@router.get("/summary", summary="Cluster and ledger totals for the header")
def summary(ctx: DashboardContext = Depends(context)) -> dict:
    store = ctx.store
    states: dict[str, int] = {}
    for job in store.list_jobs():
        states[job["state"]] = states.get(job["state"], 0) + 1
    report = cost_report(store)
    nodes = node_rows(store, ctx.provider) if ctx.provider is not None else []
    return {
        "version": __version__,
        "time": time.time(),
        "jobs": states,
        "cluster_reachable": ctx.provider is not None,
        "nodes": len(nodes),
        "devices": sum(n["devices"] for n in nodes if n["health"] == "alive"),
        "devices_used": sum(n["used"] for n in nodes),
        "gpu_hours": report["gpu_hours"],
        "cost_usd": report["cost_usd"],
        "goodput": report["goodput"],
        "reference": report["reference"],
    }


@router.get("/jobs", summary="Every job (orch list --all --json)")
def jobs(ctx: DashboardContext = Depends(context)) -> list[dict]:
    return [job_json(j) for j in ctx.store.list_jobs()]


@router.get("/jobs/{job_id}", summary="One job with its transitions (orch status JOB --json)")
def job(job_id: str, ctx: DashboardContext = Depends(context)) -> dict:
    row = ctx.store.get_job(job_id)
    return {**job_json(row), "transitions": ctx.store.transitions(row["id"])}


@router.get("/jobs/{job_id}/metrics", summary="Step metrics as series (loss, tokens/s, step time, balance)")
def job_metrics(
    job_id: str, after_step: int = Query(-1, ge=-1, le=10**12), ctx: DashboardContext = Depends(context)
) -> dict:
    return series.job_metric_series(ctx.store, ctx.store.get_job(job_id)["id"], after_step)


@router.get("/jobs/{job_id}/checkpoints", summary="Committed checkpoints and the save in flight")
def job_checkpoints(job_id: str, ctx: DashboardContext = Depends(context)) -> dict:
    row = ctx.store.get_job(job_id)
    checkpoints = open_job_checkpoints(row["spec"]["checkpoint"], row["id"], ctx.home)
    manifests = [checkpoints.manifest(step) for step in checkpoints.committed()]
    started = [m["step"] for m in ctx.store.metrics(row["id"]) if (m.get("checkpoint_stall_s") or 0) > 0]
    newest = max((m.step for m in manifests), default=None)
    holding = not JobState(row["state"]).is_terminal
    in_flight = [s for s in started if newest is None or s > newest] if holding else []
    return {
        "uri": checkpoints.objects.uri,
        "in_flight": in_flight[-1:],
        "committed": [
            {
                "step": m.step,
                "tokens": m.tokens,
                "bytes": m.total_bytes,
                "files": len(m.files),
                "created_at": m.created_at,
            }
            for m in manifests
        ],
    }


@router.get("/tasks/{task_id}", summary="A background task's progress (checkpoint verification)")
def task(task_id: str, ctx: DashboardContext = Depends(context)) -> dict:
    found = ctx.tasks.get(task_id)
    if found is None:
        raise HTTPException(404, "no such task (finished tasks are kept for a while, not forever)")
    return found.view()


@router.get("/nodes", summary="Nodes with pool, devices, health, cordon and jobs (orch nodes list --json)")
def nodes(ctx: DashboardContext = Depends(context), nodes_from=Depends(provider)) -> list[dict]:
    return node_rows(ctx.store, nodes_from)


@router.get("/events", summary="The event log, oldest first (orch events --json)")
def events(
    job: str | None = Query(None, max_length=200),
    after: int = Query(0, ge=0, le=2**62),
    limit: int = 500,
    ctx: DashboardContext = Depends(context),
) -> list[dict]:
    job_id = ctx.store.get_job(job)["id"] if job else None
    return ctx.store.events(job_id, after_id=after, limit=min(max(limit, 1), 5000))


@router.get("/cost", summary="The ledger: GPU-hours by category, dollars, goodput, teams (orch cost --json)")
def cost(ctx: DashboardContext = Depends(context)) -> dict:
    report = cost_report(ctx.store)
    teams = ctx.store.teams()
    report["budgets"] = {name: {k: v for k, v in t.items() if k != "name"} for name, t in teams.items()}
    return report


@router.get("/cost/series", summary="Cumulative GPU-hours by category over time; the categories in order")
def cost_series(samples: int = 120, ctx: DashboardContext = Depends(context)) -> dict:
    return {
        **series.gpu_hours_over_time(ctx.store, time.time(), min(max(samples, 2), 1000)),
        "categories": series.category_legend(),
    }


@router.get("/cost/{job_id}", summary="One job's ledger (orch cost JOB --json)")
def job_cost(job_id: str, ctx: DashboardContext = Depends(context)) -> dict:
    return cost_report(ctx.store, job_id)
