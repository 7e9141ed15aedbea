"""The dashboard's web application: pages, the JSON API under /api/, and the operator actions.

Reading needs nothing; every action needs an operator token (``Authorization: Bearer``), a JSON
body, and a same-origin request: a cross-site page cannot forge one (no CORS headers are ever sent,
so a browser will not send a cross-origin JSON POST, and ``Origin``/``Sec-Fetch-Site`` are checked
besides). Each action is recorded as an event naming the operator and the client address. The
pages load only files this server serves (the charting library from the installed ``plotly``
package); the Content-Security-Policy forbids anything else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from orchestrator import __version__
from orchestrator.cluster.provider import NodeProvider
from orchestrator.control.job_ops import cancel_job
from orchestrator.control.node_ops import NODE_ACTIONS, UnknownNode, node_rows, preempt_drill, set_node
from orchestrator.control.rows import job_json
from orchestrator.control.states import JobState
from orchestrator.dashboard import series
from orchestrator.dashboard.tokens import load_tokens, who
from orchestrator.errors import OrchError
from orchestrator.ledger.report import cost_report
from orchestrator.state.store import JobNotFound, StateStore

STATIC = Path(__file__).parent / "static"
PAGES = {"app.js": "text/javascript", "app.css": "text/css"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


@dataclass
class DashboardContext:
    store: StateStore
    provider: NodeProvider | None  # None: the cluster is not reachable (node pages say so)
    tokens_file: Path
    home: Path
    cluster: object | None = None  # the embedded cluster, for the preemption drill
    ask_runner: Callable[[dict, str, float], None] | None = None


class NodeActionBody(BaseModel):
    reason: str = Field(default="operator request (dashboard)", max_length=200)


class PreemptBody(BaseModel):
    notice: float = Field(default=0.0, ge=0, le=600)
    replace: bool = True


class Empty(BaseModel):
    pass


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(ctx: DashboardContext) -> FastAPI:
    app = FastAPI(title="orch dashboard", version=__version__, docs_url=None, redoc_url=None,
                  description="The cluster, jobs, GPU-hours and cost of an orch control plane. Reads are open; "
                              "actions need an operator token (Authorization: Bearer).")
    store = ctx.store

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(JobNotFound)
    async def _missing_job(_request: Request, exc: JobNotFound):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(UnknownNode)
    async def _missing_node(_request: Request, exc: UnknownNode):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(OrchError)
    async def _refused(_request: Request, exc: OrchError):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    def operator(request: Request) -> str:
        """The acting operator, or a refusal: 401 without a token, 403 with a wrong one or from another site."""
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise HTTPException(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            raise HTTPException(403, f"cross-site request refused (Origin: {origin})")
        if request.method == "POST" and not request.headers.get("content-type", "").startswith("application/json"):
            raise HTTPException(415, "actions take a JSON body (Content-Type: application/json)")
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise HTTPException(401, "this action needs an operator token: Authorization: Bearer TOKEN "
                                     f"(tokens are in {ctx.tokens_file})", headers={"WWW-Authenticate": "Bearer"})
        name = who(load_tokens(ctx.tokens_file), header[7:].strip())
        if name is None:
            raise HTTPException(403, "unknown operator token")
        client = request.client.host if request.client else "unknown"
        return f"dashboard:{name}@{client}"

    def provider() -> NodeProvider:
        if ctx.provider is None:
            raise HTTPException(503, "the cluster is not reachable from the dashboard; start it with 'orch up'")
        return ctx.provider

    # ------------------------------------------------------------------ pages

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name == "plotly.min.js":
            return FileResponse(plotly_js(), media_type="text/javascript")
        if name not in PAGES:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name, media_type=PAGES[name])

    # ------------------------------------------------------------------ reads (the CLI's --json data)

    @app.get("/api/summary", summary="Cluster and ledger totals for the header")
    def summary() -> dict:
        jobs = store.list_jobs()
        states: dict[str, int] = {}
        for job in jobs:
            states[job["state"]] = states.get(job["state"], 0) + 1
        report = cost_report(store)
        nodes = node_rows(store, ctx.provider) if ctx.provider is not None else []
        return {"version": __version__, "time": time.time(), "jobs": states, "cluster_reachable": ctx.provider is not None,
                "nodes": len(nodes), "devices": sum(n["devices"] for n in nodes if n["health"] == "alive"),
                "devices_used": sum(n["used"] for n in nodes), "gpu_hours": report["gpu_hours"],
                "cost_usd": report["cost_usd"], "goodput": report["goodput"], "reference": report["reference"]}

    @app.get("/api/jobs", summary="Every job (orch list --all --json)")
    def jobs() -> list[dict]:
        return [job_json(j) for j in store.list_jobs()]

    @app.get("/api/jobs/{job_id}", summary="One job with its transitions (orch status JOB --json)")
    def job(job_id: str) -> dict:
        row = store.get_job(job_id)
        return {**job_json(row), "transitions": store.transitions(row["id"])}

    @app.get("/api/jobs/{job_id}/metrics", summary="Step metrics as series (loss, tokens/s, step time, balance)")
    def job_metrics(job_id: str, after_step: int = -1) -> dict:
        return series.job_metric_series(store, store.get_job(job_id)["id"], after_step)

    @app.get("/api/jobs/{job_id}/checkpoints", summary="Committed checkpoints and the save in flight")
    def job_checkpoints(job_id: str) -> dict:
        from orchestrator.checkpoint.locate import open_job_checkpoints

        row = store.get_job(job_id)
        checkpoints = open_job_checkpoints(row["spec"]["checkpoint"], row["id"], ctx.home)
        manifests = [checkpoints.manifest(step) for step in checkpoints.committed()]
        started = [m["step"] for m in store.metrics(row["id"]) if (m.get("checkpoint_stall_s") or 0) > 0]
        newest = max((m.step for m in manifests), default=None)
        holding = not JobState(row["state"]).is_terminal
        in_flight = [s for s in started if newest is None or s > newest] if holding else []
        return {"uri": checkpoints.objects.uri, "in_flight": in_flight[-1:],
                "committed": [{"step": m.step, "tokens": m.tokens, "bytes": m.total_bytes, "files": len(m.files),
                               "created_at": m.created_at} for m in manifests]}

    @app.get("/api/jobs/{job_id}/checkpoints/{step}/verify", summary="Check a checkpoint's shards against its manifest")
    def verify_checkpoint(job_id: str, step: int) -> dict:
        from orchestrator.checkpoint.locate import open_job_checkpoints

        row = store.get_job(job_id)
        checkpoints = open_job_checkpoints(row["spec"]["checkpoint"], row["id"], ctx.home)
        if step not in checkpoints.committed():
            raise HTTPException(404, f"no committed checkpoint at step {step} of {row['id']}")
        problems = checkpoints.verify(step)
        return {"step": step, "verified": not problems, "problems": problems}

    @app.get("/api/nodes", summary="Nodes with pool, devices, health, cordon and jobs (orch nodes list --json)")
    def nodes() -> list[dict]:
        return node_rows(store, provider())

    @app.get("/api/events", summary="The event log, oldest first (orch events --json)")
    def events(job: str | None = None, after: int = 0, limit: int = 500) -> list[dict]:
        job_id = store.get_job(job)["id"] if job else None
        return store.events(job_id, after_id=after, limit=min(max(limit, 1), 5000))

    @app.get("/api/cost", summary="The ledger: GPU-hours by category, dollars, goodput, teams (orch cost --json)")
    def cost() -> dict:
        report = cost_report(store)
        teams = store.teams()
        report["budgets"] = {name: {k: v for k, v in t.items() if k != "name"} for name, t in teams.items()}
        return report

    @app.get("/api/cost/series", summary="Cumulative GPU-hours by category over time")
    def cost_series(samples: int = 120) -> dict:
        return series.gpu_hours_over_time(store, time.time(), min(max(samples, 2), 1000))

    @app.get("/api/cost/{job_id}", summary="One job's ledger (orch cost JOB --json)")
    def job_cost(job_id: str) -> dict:
        return cost_report(store, job_id)

    # ------------------------------------------------------------------ actions (operator token)

    @app.get("/api/whoami", summary="Which operator a token belongs to")
    def whoami(actor: str = Depends(operator)) -> dict:
        return {"actor": actor}

    @app.post("/api/nodes/{node}/preempt", summary="Preemption drill: take the node away like a spot reclaim")
    def node_preempt(node: str, body: PreemptBody, actor: str = Depends(operator)) -> dict:
        if ctx.cluster is None or ctx.ask_runner is None:
            raise HTTPException(501, "the preemption drill needs the embedded cluster")
        return {"done": preempt_drill(store, provider(), ctx.cluster, node, body.notice, body.replace, actor,
                                      ctx.ask_runner), "actor": actor}

    @app.post("/api/nodes/{node}/{action}", summary="Cordon, uncordon or drain a node")
    def node_action(node: str, action: str, body: NodeActionBody, actor: str = Depends(operator)) -> dict:
        if action not in NODE_ACTIONS:
            raise HTTPException(404, f"no node action '{action}'; use one of {', '.join(NODE_ACTIONS)}")
        return {"done": set_node(store, provider(), node, action, body.reason, actor), "actor": actor}

    @app.post("/api/jobs/{job_id}/cancel", summary="Cancel a job")
    def cancel(job_id: str, _body: Empty, actor: str = Depends(operator)) -> dict:
        return {"job": job_json(cancel_job(store, job_id, actor)), "actor": actor}

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    return app
