"""The jobs-table row of a planned spec: one definition for `orch submit` and `orch simulate`."""

from __future__ import annotations

from orchestrator.plan.planner import Plan


def job_row(job_id: str, plan: Plan, source: dict) -> dict:
    """The jobs-table row of a planned spec (the simulator inserts the very same row)."""
    spec = plan.spec
    return {
        "id": job_id,
        "name": spec.name,
        "team": spec.team,
        "priority": spec.priority,
        "spec": spec.model_dump(mode="json"),
        "source": source,
        "world_size": plan.mesh.world_size,
        "nodes": plan.mesh.nodes,
        "devices_per_node": plan.mesh.devices_per_node,
        "total_steps": plan.total_steps,
    }


def job_json(job: dict) -> dict:
    """A job as `orch list --json` and the dashboard's /api/jobs show it: the row without the spec."""
    return {k: v for k, v in job.items() if k != "spec"}
