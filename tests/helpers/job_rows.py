"""The row of a job of the minimal spec (2 nodes x 2 devices) as the ledger, forecast and exposure
tests insert it: one definition instead of a copy per test module."""

from __future__ import annotations


def minimal_job_row(spec, total_steps: int = 32, job_id: str = "job-1") -> dict:
    return {
        "id": job_id,
        "name": "minimal",
        "team": "research",
        "priority": 0,
        "spec": spec.model_dump(mode="json"),
        "source": {},
        "world_size": 4,
        "nodes": 2,
        "devices_per_node": 2,
        "total_steps": total_steps,
    }
