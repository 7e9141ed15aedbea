"""Job rows as the tests insert them into a state store: one definition each instead of a copy per
test module."""

from __future__ import annotations


def minimal_job_row(spec, total_steps: int = 32, job_id: str = "job-1") -> dict:
    """A job of the minimal spec (2 nodes x 2 devices), as the ledger, storage, exposure and forecast tests
    insert it."""
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


def bare_job_row(job_id: str) -> dict:
    """A job row with an empty spec (1 node x 2 devices, 10 steps): for store tests that never read it."""
    return {
        "id": job_id,
        "name": "j",
        "team": "research",
        "priority": 0,
        "spec": {},
        "source": {},
        "world_size": 2,
        "nodes": 1,
        "devices_per_node": 2,
        "total_steps": 10,
    }
