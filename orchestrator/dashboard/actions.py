"""Operator actions: cordon, uncordon, drain, the preemption drill, cancel, and checkpoint verification.

The gate (``security.Guard``) has refused every request here that lacks an operator token, a JSON
content type or a same-origin request before its body was read; ``operator`` names who acted, and
each action is recorded as an event under that name.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.checkpoint.locate import open_job_checkpoints
from orchestrator.control.job_ops import cancel_job
from orchestrator.control.node_ops import NODE_ACTIONS, preempt_drill, set_node
from orchestrator.control.rows import job_json
from orchestrator.dashboard.context import DashboardContext, context, require_provider
from orchestrator.dashboard.security import operator
from orchestrator.dashboard.verify_tasks import Busy

router = APIRouter(prefix="/api")


class NodeActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored

    reason: str = Field(default="operator request (dashboard)", max_length=200)


class PreemptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    notice: float = Field(default=0.0, ge=0, le=600, allow_inf_nan=False)
    replace: bool = True


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


@router.get("/whoami", summary="Which operator a token belongs to")
def whoami(actor: str = Depends(operator)) -> dict:
    return {"actor": actor}


@router.post("/nodes/{node}/preempt", summary="Preemption drill: take the node away like a spot reclaim")
def node_preempt(
    node: str, body: PreemptBody, actor: str = Depends(operator), ctx: DashboardContext = Depends(context)
) -> dict:
    if ctx.cluster is None or ctx.ask_runner is None:
        raise HTTPException(501, "the preemption drill needs the embedded cluster")
    nodes_from = require_provider(ctx)
    return {
        "done": preempt_drill(
            ctx.store, nodes_from, ctx.cluster, node, body.notice, body.replace, actor, ctx.ask_runner
        ),
        "actor": actor,
    }


@router.post("/nodes/{node}/{action}", summary="Cordon, uncordon or drain a node")
def node_action(
    node: str,
    action: str,
    body: NodeActionBody,
    actor: str = Depends(operator),
    ctx: DashboardContext = Depends(context),
) -> dict:
    if action not in NODE_ACTIONS:
        raise HTTPException(404, f"no node action '{action[:40]}'; use one of {', '.join(NODE_ACTIONS)}")
    return {"done": set_node(ctx.store, require_provider(ctx), node, action, body.reason, actor), "actor": actor}


@router.post("/jobs/{job_id}/cancel", summary="Cancel a job")
def cancel(job_id: str, _body: Empty, actor: str = Depends(operator), ctx: DashboardContext = Depends(context)) -> dict:
    return {"job": job_json(cancel_job(ctx.store, job_id, actor)), "actor": actor}


@router.post(
    "/jobs/{job_id}/checkpoints/{step}/verify",
    status_code=202,
    summary="Start checking a checkpoint's shards against its manifest (a background task)",
)
def verify_checkpoint(
    job_id: str, step: int, _body: Empty, actor: str = Depends(operator), ctx: DashboardContext = Depends(context)
):
    row = ctx.store.get_job(job_id)
    checkpoints = open_job_checkpoints(row["spec"]["checkpoint"], row["id"], ctx.home)
    if step not in checkpoints.committed():
        raise HTTPException(404, f"no committed checkpoint at step {step} of {row['id']}")
    try:
        task, new = ctx.tasks.start(checkpoints, checkpoints.manifest(step), row["id"], actor)
    except Busy:
        raise HTTPException(
            429,
            f"{ctx.tasks.slots} verification(s) already running; try again when done",
            headers={"Retry-After": "10"},
        ) from None
    if new:
        ctx.store.add_event("checkpoint.verify", f"verification of step {step} started", job_id=row["id"], actor=actor)
    return JSONResponse({**task.view(), "progress": f"/api/tasks/{task.id}"}, status_code=202 if new else 200)
